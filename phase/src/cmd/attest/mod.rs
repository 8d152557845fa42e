//! `phase attest verify`: ask a node for a quote over a fresh nonce and
//! decide what it booted (docs/attestation.md, "The verifier's rules").
//!
//! In order, the first failure is the verdict: the answer's size and form;
//! the quote's signature with the AK it sent; the nonce; the quoted PCR
//! digest against the PCR values sent; the AK against the one first seen
//! for this node (trust on first use, a JSON file per user); the Phase
//! event log's replay to the quoted PCR 23; the firmware event log's
//! replay to the quoted PCRs 4, 7 and 9; with `--stick`, the EFI stub's
//! PCR 9 records against the stick manifest ([`stick`]); then the TUF
//! metadata, refreshed here from the trusted root, must list every
//! artifact event's target with the same digest, and name the node's root.
//! One verdict line (or `--json`) on success; the error chain on failure.
//!
//! The node's side (`GET /attest` on `phase serve`) is [`node`].

pub mod node;
pub mod stick;
pub mod wire;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use measure::{AkPublic, Event, Kind, PHASE_PCR, QUOTE_PCRS};
use serde::{Deserialize, Serialize};
use verifier::{DirStorage, Updater};

use super::common::{join_url, time_arg, HttpTransport, RepoLocation};
use stick::{StickManifest, StickMatch};
use wire::{AttestResponse, ATTEST_VERSION};

/// The largest attestation answer read (a firmware log is tens of KiB).
pub const MAX_ANSWER: u64 = 4 << 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Check a node's quote over a fresh nonce: signature, AK seen before,
    /// event log replay, every artifact in the TUF metadata.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Trusted root metadata (e.g. the 1.root.json from `phase keygen`).
    #[arg(long)]
    pub root: PathBuf,
    /// The node: http://host:port of its `phase serve`.
    #[arg(long, required_unless_present = "quote", conflicts_with = "quote")]
    pub peer: Option<String>,
    /// A saved answer of GET /attest instead of asking a node (with the
    /// --nonce it was asked with, and --repo).
    #[arg(long, value_name = "FILE", requires_all = ["nonce", "repo"])]
    pub quote: Option<PathBuf>,
    /// The nonce (hex) the --quote answer was asked with.
    #[arg(long, requires = "quote")]
    pub nonce: Option<String>,
    /// Where to refresh the TUF metadata: a repository directory or URL
    /// (default: the node's own /tuf/).
    #[arg(long)]
    pub repo: Option<String>,
    /// The node's name in the AK store (default: the name it answers with).
    #[arg(long)]
    pub node: Option<String>,
    /// The AK store (default: $XDG_DATA_HOME/phase/attest-aks.json, else
    /// ~/.local/share/phase/attest-aks.json).
    #[arg(long, value_name = "FILE")]
    pub ak_store: Option<PathBuf>,
    /// Reference time for the TUF expiry checks, RFC 3339 (default: now).
    #[arg(long, value_parser = time_arg)]
    pub time: Option<DateTime<Utc>>,
    /// The manifest `phase image` wrote beside the stick the node should
    /// have booted (IMG.manifest.json): PCR 9 must show its initramfs and
    /// one of its loader entries' command lines.
    #[arg(long, value_name = "FILE")]
    pub stick: Option<PathBuf>,
    /// Print the verdict (or the error) as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What the node booted, when every check passed.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub ok: bool,
    pub node: String,
    pub channel: String,
    pub arch: String,
    pub targets_version: u64,
    pub kernel: String,
    pub rootfs: String,
    pub root_fingerprint: String,
    pub mode: String,
    /// SHA-256 of the AK's public area, hex.
    pub ak: String,
    /// The AK was not in the store and is recorded now.
    pub ak_first_use: bool,
    /// The quoted PCRs (SHA-256 bank), hex.
    pub pcrs: BTreeMap<u32, String>,
    pub events: usize,
    /// Bytes of the firmware event log the node sent.
    pub firmware_log_bytes: usize,
    /// The firmware log's records that extend a PCR (all PCRs; those for
    /// 4, 7 and 9 replayed to the quoted values).
    pub firmware_events: usize,
    /// The stick image and loader entry PCR 9 shows (`--stick`); null when
    /// the stick was not checked.
    pub stick: Option<StickMatch>,
}

impl Verdict {
    /// The one verdict line.
    pub fn line(&self) -> String {
        let short = |s: &str| s.chars().take(16).collect::<String>();
        format!(
            "node {} booted {}/{} targets v{} (kernel {}…, rootfs {}…) from root fp {}…, mode {}; firmware log replays PCRs 4, 7, 9; {}; AK {}… {}",
            self.node,
            self.channel,
            self.arch,
            self.targets_version,
            short(&self.kernel),
            short(&self.rootfs),
            short(&self.root_fingerprint),
            self.mode,
            match &self.stick {
                Some(s) => format!("stick image {} entry {}", s.image, s.entry),
                None => "stick not checked".to_owned(),
            },
            short(&self.ak),
            if self.ak_first_use {
                "first seen, recorded"
            } else {
                "as first seen"
            }
        )
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Sub::Verify(a) => verify(a),
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let now = args.time.unwrap_or_else(Utc::now);
    let result = (|| -> anyhow::Result<Verdict> {
        let nonce = match &args.nonce {
            Some(h) => nonce_arg(h)?,
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let stick = args.stick.as_deref().map(StickManifest::load).transpose()?;
        let (source, body) = match (&args.peer, &args.quote) {
            (Some(p), _) => (p.clone(), fetch(p, &nonce)?),
            (None, Some(f)) => (f.display().to_string(), read_answer(f)?),
            (None, None) => bail!("give --peer URL or --quote FILE"),
        };
        let path = store_path(args.ak_store.as_deref())?;
        let mut store = AkStore::load(&path)?;
        let answer = Answer {
            nonce: &nonce,
            body: &body,
            source: &source,
        };
        check(&args, &answer, stick.as_ref(), &mut store, &path, now)
    })();
    match result {
        Ok(v) if args.json => super::common::print_json(&v),
        Ok(v) => {
            println!("{}", v.line());
            Ok(())
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": format!("{e:#}") })
                );
            }
            Err(e)
        }
    }
}

fn nonce_arg(h: &str) -> anyhow::Result<Vec<u8>> {
    let n = hex::decode(h).map_err(|_| anyhow!("--nonce {h:?} is not hex"))?;
    anyhow::ensure!(
        (measure::NONCE_MIN..=measure::NONCE_MAX).contains(&n.len()),
        "--nonce has {} bytes, not {} to {}",
        n.len(),
        measure::NONCE_MIN,
        measure::NONCE_MAX
    );
    Ok(n)
}

/// `GET <peer>/attest?nonce=<hex>`, at most [`MAX_ANSWER`] bytes; a body
/// cut short of its `Content-Length` is named truncated.
fn fetch(peer: &str, nonce: &[u8]) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        peer.starts_with("http://") || peer.starts_with("https://"),
        "--peer {peer:?} is not an http:// URL"
    );
    let url = join_url(peer, &format!("attest?nonce={}", hex::encode(nonce)));
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("creating the HTTP client failed")?;
    let resp = client
        .get(&url)
        .send()
        .with_context(|| format!("GET {url} failed"))?;
    let status = resp.status();
    if !status.is_success() {
        let mut text = String::new();
        let _ = resp.take(512).read_to_string(&mut text);
        let line = text.lines().next().unwrap_or("").trim().to_string();
        bail!("GET {url}: HTTP {status}: {line}");
    }
    let declared = resp.content_length();
    if let Some(n) = declared.filter(|&n| n > MAX_ANSWER) {
        bail!("the attestation answer of {peer} is oversized: {n} bytes declared, at most {MAX_ANSWER} accepted");
    }
    let mut body = Vec::new();
    let of = declared.map(|n| format!(" of {n}")).unwrap_or_default();
    if let Err(e) = resp.take(MAX_ANSWER + 1).read_to_end(&mut body) {
        bail!(
            "the attestation answer of {peer} is truncated: the connection failed after {}{of} bytes: {e}",
            body.len()
        );
    }
    if body.len() as u64 > MAX_ANSWER {
        bail!("the attestation answer of {peer} is oversized: more than {MAX_ANSWER} bytes");
    }
    if let Some(n) = declared.filter(|&n| (body.len() as u64) < n) {
        bail!(
            "the attestation answer of {peer} is truncated: {} of {n} bytes",
            body.len()
        );
    }
    Ok(body)
}

fn read_answer(path: &Path) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut body = Vec::new();
    f.take(MAX_ANSWER + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        body.len() as u64 <= MAX_ANSWER,
        "the attestation answer {} is oversized: more than {MAX_ANSWER} bytes",
        path.display()
    );
    Ok(body)
}

/// The AK first seen for each node.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AkStore {
    nodes: BTreeMap<String, StoredAk>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredAk {
    /// SHA-256 of the AK's public area, hex.
    ak: String,
    first_seen: String,
}

impl AkStore {
    fn load(path: &Path) -> anyhow::Result<AkStore> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("the AK store {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AkStore::default()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read the AK store {}", path.display()))
            }
        }
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).context("encoding the AK store failed")?;
        verifier::publish::write_atomic(path, &bytes, 0o600)
            .with_context(|| format!("cannot write the AK store {}", path.display()))
    }
}

fn store_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context(
            "no data directory for the AK store: pass --ak-store, or set XDG_DATA_HOME or HOME",
        )?;
    Ok(base.join("phase").join("attest-aks.json"))
}

/// An answer to check: the nonce it was asked with, its bytes and where
/// they came from.
struct Answer<'a> {
    nonce: &'a [u8],
    body: &'a [u8],
    source: &'a str,
}

/// The rules, in order, on one answer (see the module docs).
fn check(
    args: &VerifyArgs,
    answer: &Answer<'_>,
    stick: Option<&StickManifest>,
    store: &mut AkStore,
    store_path: &Path,
    now: DateTime<Utc>,
) -> anyhow::Result<Verdict> {
    let Answer {
        nonce,
        body,
        source,
    } = *answer;
    let resp: AttestResponse = serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            anyhow!(
                "the attestation answer of {source} is truncated: its JSON ends after {} bytes",
                body.len()
            )
        } else {
            anyhow!("the attestation answer of {source} is not an attestation: {e}")
        }
    })?;
    anyhow::ensure!(
        resp.version == ATTEST_VERSION,
        "the attestation answer of {source} has format version {}, this verifier reads {ATTEST_VERSION}",
        resp.version
    );
    let node = args.node.clone().unwrap_or_else(|| resp.node.clone());
    anyhow::ensure!(
        !node.is_empty()
            && node.len() <= 253
            && node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')),
        "the attestation answer of {source} names the node {node:?}: not a host name"
    );
    let b64 = |field: &str, s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| anyhow!("node {node}: {field} is not base64"))
    };
    let ak = AkPublic::parse(&b64("ak_public", &resp.ak_public)?)
        .with_context(|| format!("node {node}"))?;
    let attest = b64("attest", &resp.attest)?;
    let signature = b64("signature", &resp.signature)?;
    let mut pcrs = Vec::with_capacity(resp.pcrs.len());
    for p in &resp.pcrs {
        let v: [u8; 32] = hex::decode(&p.sha256)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| anyhow!("node {node}: PCR {} is not 32 bytes of hex", p.pcr))?;
        if pcrs.last().is_some_and(|(last, _)| *last >= p.pcr) {
            bail!("node {node}: the PCR values are not in ascending order");
        }
        pcrs.push((p.pcr, v));
    }
    measure::verify_quote(&ak, &attest, &signature, nonce, &pcrs)
        .with_context(|| format!("node {node}"))?;
    for p in QUOTE_PCRS {
        anyhow::ensure!(
            pcrs.iter().any(|(q, _)| *q == p),
            "node {node}: the quote does not cover PCR {p}"
        );
    }

    // Trust on first use: the AK must be the one first seen for the node.
    let fingerprint = ak.fingerprint();
    let first_use = match store.nodes.get(&node) {
        None => true,
        Some(s) if s.ak == fingerprint => false,
        Some(s) => bail!(
            "node {node}: its AK {fingerprint} is not the AK first seen for it ({} on {}, AK store {}): another TPM or a forged node",
            s.ak,
            s.first_seen,
            store_path.display()
        ),
    };

    // The Phase event log replays to the quoted PCR 23.
    let mut events = Vec::with_capacity(resp.measurements.len());
    for (i, m) in resp.measurements.iter().enumerate() {
        let e = Event::from_record(i, m).with_context(|| format!("node {node}: the event log"))?;
        anyhow::ensure!(
            e.pcr == PHASE_PCR,
            "node {node}: event {i} ({}) is for PCR {}, not {PHASE_PCR}",
            e.kind,
            e.pcr
        );
        events.push(e);
    }
    let quoted = pcrs
        .iter()
        .find(|(p, _)| *p == PHASE_PCR)
        .map(|(_, v)| *v)
        .unwrap_or_default();
    let replayed = measure::replay(&events, PHASE_PCR);
    anyhow::ensure!(
        replayed == quoted,
        "node {node}: the event log does not replay to the quoted PCR {PHASE_PCR}: its {} events give {}, the TPM holds {}",
        events.len(),
        hex::encode(replayed),
        hex::encode(quoted)
    );

    // The firmware event log replays to the quoted PCRs 4, 7 and 9.
    let firmware_bytes = match resp.firmware_log.as_deref() {
        Some(b) => b64("firmware_log", b)?,
        None => bail!(
            "node {node}: the answer has no firmware event log: PCRs 4, 7 and 9 cannot be checked"
        ),
    };
    let firmware = measure::FirmwareLog::parse(&firmware_bytes)
        .and_then(|log| log.check(&pcrs).map(|()| log))
        .with_context(|| format!("node {node}"))?;
    // The EFI stub's PCR 9 records are the stick's initramfs and entry.
    let stick = stick
        .map(|m| m.check(&firmware))
        .transpose()
        .with_context(|| format!("node {node}"))?;

    // Every artifact event names a target of the TUF metadata, refreshed
    // here from the trusted root.
    let root_bytes = std::fs::read(&args.root)
        .with_context(|| format!("cannot read the trusted root {}", args.root.display()))?;
    let given_fp = verifier::root_fingerprint(
        verifier::TrustedSet::new(&root_bytes, now)
            .with_context(|| format!("{} is not a valid trusted root", args.root.display()))?
            .root(),
    );
    let state = tempfile::tempdir().context("cannot create a temporary TUF state directory")?;
    let storage = DirStorage::new(state.path()).context("cannot open the TUF state directory")?;
    verifier::install_root(&storage, &root_bytes, now)
        .with_context(|| format!("{} is not a valid trusted root", args.root.display()))?;
    let (tuf_source, transport): (String, Box<dyn verifier::Transport>) =
        match (&args.repo, &args.peer) {
            (Some(r), _) => (r.clone(), RepoLocation::parse(r).transport()?),
            (None, Some(p)) => (
                join_url(p, "tuf/"),
                Box::new(HttpTransport::new(
                    &join_url(p, "tuf/metadata"),
                    Some(&join_url(p, "tuf/targets")),
                )?),
            ),
            (None, None) => bail!("--quote needs --repo: where to refresh the TUF metadata"),
        };
    let mut up = Updater::new(storage, transport, now);
    up.refresh()
        .with_context(|| format!("TUF refresh from {tuf_source} failed"))?;
    let refreshed_fp = up.root_fingerprint()?;
    let targets_now = up
        .trusted()?
        .targets("targets")
        .map(|t| t.version)
        .unwrap_or(0);
    for (i, e) in events.iter().enumerate() {
        match e.kind {
            Kind::Kernel | Kind::Initramfs | Kind::Rootfs | Kind::Job => {
                let (sha, name) = e.payload.split_once(' ').ok_or_else(|| {
                    anyhow!(
                        "node {node}: event {i} ({}): {:?} is not `<sha256> <target>`",
                        e.kind,
                        e.payload
                    )
                })?;
                match up.target(name) {
                    Ok(t) if t.sha256().is_some_and(|s| s.eq_ignore_ascii_case(sha)) => {}
                    Ok(t) => bail!(
                        "node {node}: event {i} ({}): {name} is {sha} in the log, the TUF metadata (targets v{targets_now}) says {}",
                        e.kind,
                        t.sha256().unwrap_or("no sha256")
                    ),
                    Err(err) => {
                        return Err(anyhow::Error::new(err).context(format!(
                            "node {node}: event {i} ({}): {name} ({sha}) is not a target in the TUF metadata (targets v{targets_now})",
                            e.kind
                        )))
                    }
                }
            }
            Kind::RootFingerprint => anyhow::ensure!(
                e.payload == given_fp || e.payload == refreshed_fp,
                "node {node}: event {i} (root-fingerprint): the node trusts root {}, not this one ({given_fp})",
                e.payload
            ),
            Kind::TargetsVersion => {
                let v: u64 = e.payload.parse().map_err(|_| {
                    anyhow!("node {node}: event {i} (targets-version): {:?} is not a number", e.payload)
                })?;
                anyhow::ensure!(
                    v <= targets_now,
                    "node {node}: event {i} (targets-version): v{v} is newer than the TUF metadata's v{targets_now}"
                );
            }
            _ => {}
        }
    }

    let first = |kind: Kind| {
        events
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.payload.clone())
            .ok_or_else(|| anyhow!("node {node}: the event log has no {kind} event"))
    };
    let kernel = first(Kind::Kernel)?;
    let rootfs = first(Kind::Rootfs)?;
    let digest = |p: &str| p.split(' ').next().unwrap_or("").to_string();
    let arch = kernel
        .split(' ')
        .nth(1)
        .and_then(|name| name.split('/').nth(1))
        .unwrap_or("-")
        .to_string();
    let verdict = Verdict {
        ok: true,
        node: node.clone(),
        channel: first(Kind::Channel)?,
        arch,
        targets_version: first(Kind::TargetsVersion)?.parse().unwrap_or(0),
        kernel: digest(&kernel),
        rootfs: digest(&rootfs),
        root_fingerprint: first(Kind::RootFingerprint)?,
        mode: first(Kind::Mode)?,
        ak: fingerprint.clone(),
        ak_first_use: first_use,
        pcrs: pcrs.iter().map(|(p, v)| (*p, hex::encode(v))).collect(),
        events: events.len(),
        firmware_log_bytes: firmware_bytes.len(),
        firmware_events: firmware.events.len(),
        stick,
    };
    if first_use {
        store.nodes.insert(
            node,
            StoredAk {
                ak: fingerprint,
                first_seen: now.to_rfc3339(),
            },
        );
        store.save(store_path)?;
    }
    Ok(verdict)
}
