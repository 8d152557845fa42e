//! `phase attest verify` against `phase serve` quoting with a real TPM:
//! swtpm on a UNIX socket, into which each test extends a firmware event
//! log (records into PCRs 4, 7, 9 and 12, the log served as the node's
//! `binary_bios_measurements`) and the Phase event log of a boot of a
//! release published here. One passing node, the node against its stick's
//! manifest and another stick's, then one test per bad answer, each
//! asserting the named error and that no verdict line is printed. swtpm is required (scripts/deps-apt.list): without it the
//! tests fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use handover::{ArtifactRecord, BootJson, TufVersions, BOOT_JSON_VERSION};
use measure::{
    boot_events, load_options_digest, replay, Event, FirmwareLogWriter, Root, Tpm, EV_IPL,
    INITRD_TAG, LOAD_OPTIONS_TAG, PHASE_PCR,
};
use sha2::{Digest, Sha256};

const PHASE: &str = env!("CARGO_BIN_EXE_phase");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(PHASE).args(args).output().expect("run phase");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A swtpm serving the TPM command stream on a UNIX socket, killed on drop.
struct Swtpm {
    child: Child,
    dir: tempfile::TempDir,
}

impl Swtpm {
    /// A TPM the firmware of [`firmware`] booted with.
    fn start() -> Swtpm {
        let tpm = Swtpm::bare();
        tpm.extend_digests(&firmware().1);
        tpm
    }

    fn bare() -> Swtpm {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("state")).expect("state dir");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .args([
                "--server",
                &format!("type=unixio,path={}", s(&dir.path().join("tpm.sock"))),
            ])
            .args([
                "--ctrl",
                &format!("type=unixio,path={}", s(&dir.path().join("ctrl.sock"))),
            ])
            .args(["--flags", "startup-clear,not-need-init"])
            .args([
                "--tpmstate",
                &format!("dir={}", s(&dir.path().join("state"))),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm runs (Debian package swtpm, scripts/deps-apt.list)");
        Swtpm { child, dir }
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("tpm.sock")
    }

    /// Extends `events` into the TPM.
    fn extend(&self, events: &[Event]) {
        let digests: Vec<_> = events.iter().map(|e| (e.pcr, e.digest())).collect();
        self.extend_digests(&digests);
    }

    /// Extends each `(pcr, digest)` into the TPM (retrying the connect
    /// while swtpm starts).
    fn extend_digests(&self, digests: &[(u32, [u8; 32])]) {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(self.sock()) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "swtpm does not listen on {}: {e}",
                        s(&self.sock())
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut tpm = Tpm::new(stream);
        for (pcr, digest) in digests {
            tpm.pcr_extend(*pcr, digest).expect("extend");
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A release published with `phase publish`, and `phase verify`'s report
/// of it (names, digests, versions, root fingerprint).
struct Release {
    dir: tempfile::TempDir,
    report: serde_json::Value,
}

impl Release {
    fn publish() -> Release {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        let (good, _, err) = run(&["keygen", "--out", &s(&t.join("keys"))]);
        assert!(good, "keygen: {err}");
        for (i, kind) in ["kernel", "initramfs", "rootfs"].iter().enumerate() {
            let bytes: Vec<u8> = (0..65_536u32).map(|n| (n * 7 + i as u32) as u8).collect();
            std::fs::write(t.join(kind), bytes).expect("write");
        }
        let (good, _, err) = run(&[
            "publish",
            "--repo",
            &s(&t.join("repo")),
            "--keys",
            &s(&t.join("keys")),
            "--kernel",
            &s(&t.join("kernel")),
            "--initramfs",
            &s(&t.join("initramfs")),
            "--rootfs",
            &s(&t.join("rootfs")),
            "--cmdline",
            "console=ttyS0",
        ]);
        assert!(good, "publish: {err}");
        let (good, out, err) = run(&[
            "verify",
            "--repo",
            &s(&t.join("repo")),
            "--root",
            &s(&t.join("keys/1.root.json")),
            "--json",
        ]);
        assert!(good, "verify: {err}");
        let report = serde_json::from_str(&out).expect("verify report");
        Release { dir, report }
    }

    fn root(&self) -> String {
        s(&self.dir.path().join("keys/1.root.json"))
    }

    fn repo(&self) -> String {
        s(&self.dir.path().join("repo"))
    }

    fn sha256(&self, kind: &str) -> String {
        self.target(kind)["sha256"]
            .as_str()
            .expect("sha256")
            .to_string()
    }

    fn target(&self, kind: &str) -> &serde_json::Value {
        self.report["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .find(|t| t["name"] == format!("stable/x86_64/{kind}"))
            .expect("target of the release")
    }

    /// The boot stage 1 records for this release (local mode).
    fn boot(&self) -> BootJson {
        let r = &self.report;
        let v = |k: &str| r[k].as_u64();
        let art = |kind: &str| ArtifactRecord {
            kind: kind.into(),
            target: format!("stable/x86_64/{kind}"),
            sha256: self.sha256(kind),
            length: self.target(kind)["length"].as_u64().expect("length"),
            hashed: true,
        };
        BootJson {
            version: BOOT_JSON_VERSION,
            mode: "local".into(),
            channel: "stable".into(),
            cmdline: "console=ttyS0 phase.mode=local phase.stage=target".into(),
            artifacts: vec![art("kernel"), art("initramfs"), art("rootfs")],
            tuf: TufVersions {
                root: v("root_version"),
                timestamp: v("timestamp_version"),
                snapshot: v("snapshot_version"),
                targets: v("targets_version"),
            },
            peers: vec![],
            steps: vec![],
            identity: None,
            platform: None,
            handover: None,
            measurements: vec![],
        }
    }

    fn events(&self, boot: &BootJson) -> Vec<Event> {
        let fp = self.report["root_fingerprint"].as_str().expect("fp");
        let root = Root {
            fingerprint: fp,
            version: self.report["root_version"].as_u64().expect("root version"),
        };
        boot_events(Some(root), boot)
    }
}

/// `phase serve` on the release's repository, quoting with `swtpm`, its
/// `boot.json` holding `log`; killed on drop.
struct Node {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A firmware's part of a boot, as OVMF logs it: the Secure Boot
/// variables and a separator into PCR 7, a separator and two EFI
/// applications (shim, the loader) into PCR 4, systemd-boot's command line
/// into PCR 12, the kernel's load options and initrd into PCR 9. The log's
/// bytes and the digests a TPM saw.
fn firmware() -> (Vec<u8>, Vec<(u32, [u8; 32])>) {
    const EV_SEPARATOR: u32 = 0x4;
    const EV_EVENT_TAG: u32 = 0x6;
    const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
    const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
    let mut w = FirmwareLogWriter::new();
    let mut digests = Vec::new();
    for var in ["SecureBoot", "PK", "KEK", "db", "dbx"] {
        digests.push((7, w.event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, var.as_bytes())));
    }
    for pcr in [7, 4] {
        digests.push((pcr, w.event(pcr, EV_SEPARATOR, &[0; 4])));
    }
    for image in [[0x5a; 32], [0xb0; 32]] {
        w.record(4, EV_EFI_BOOT_SERVICES_APPLICATION, &image, &[0; 32]);
        digests.push((4, image));
    }
    // systemd-boot's record of the command line, then the EFI stub's of
    // the load options and the initrd.
    let options: Vec<u8> = STICK_CMDLINE
        .encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect();
    digests.push((12, w.event(12, EV_IPL, &options)));
    let load_options = load_options_digest(STICK_CMDLINE);
    w.record(
        9,
        EV_EVENT_TAG,
        &load_options,
        &tagged(LOAD_OPTIONS_TAG, "LOADED_IMAGE::LoadOptions"),
    );
    digests.push((9, load_options));
    let initrd: [u8; 32] = Sha256::digest(STICK_INITRAMFS).into();
    w.record(
        9,
        EV_EVENT_TAG,
        &initrd,
        &tagged(INITRD_TAG, "Linux initrd"),
    );
    digests.push((9, initrd));
    (w.finish(), digests)
}

/// The command line the node's loader passed (its stick's `phase-local`
/// entry).
const STICK_CMDLINE: &str =
    "initrd=\\phase\\initramfs.img console=tty0 console=ttyS0,115200 phase.mode=local";
/// The stage-1 initramfs the node's loader passed.
const STICK_INITRAMFS: &[u8] = b"the stick's stage-1 initramfs";

/// A `TCG_PCClientTaggedEvent` as Linux's EFI stub writes it.
fn tagged(tag: u32, name: &str) -> Vec<u8> {
    let mut d = tag.to_le_bytes().to_vec();
    d.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    d.extend_from_slice(name.as_bytes());
    d.push(0);
    d
}

/// A stick manifest as docs/attestation.md describes it: `initramfs`'s
/// digest and one entry per `(name, command line)`.
fn stick_manifest(initramfs: &[u8], entries: &[(&str, &str)]) -> serde_json::Value {
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    let (initramfs, kernel) = (sha(initramfs), sha(b"the stick's kernel"));
    let mut text = format!("phase-stick/v1\ninitramfs {initramfs}\nkernel {kernel}\n");
    let mut list = Vec::new();
    for (name, cmdline) in entries {
        let digest = hex::encode(load_options_digest(cmdline));
        text.push_str(&format!("entry {name} {digest}\n"));
        list.push(serde_json::json!({
            "name": name, "cmdline": cmdline, "load_options_sha256": digest
        }));
    }
    serde_json::json!({
        "version": 1,
        "id": &sha(text.as_bytes())[..16],
        "initramfs_sha256": initramfs,
        "kernel_sha256": kernel,
        "entries": list,
    })
}

fn serve(rel: &Release, tpm: &Path, log: &[Event], name: &str) -> Node {
    serve_with(rel, tpm, log, name, Some(&firmware().0))
}

/// [`serve`] with `firmware` as the node's firmware log (`None`: the node
/// has none).
fn serve_with(
    rel: &Release,
    tpm: &Path,
    log: &[Event],
    name: &str,
    firmware: Option<&[u8]>,
) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut boot = rel.boot();
    boot.measurements = log.iter().map(Event::record).collect();
    std::fs::write(dir.path().join("boot.json"), boot.to_json()).expect("boot.json");
    if let Some(f) = firmware {
        std::fs::write(dir.path().join("bios.bin"), f).expect("firmware log");
    }
    let mut child = Command::new(PHASE)
        .args(["serve", "--listen", "127.0.0.1:0", "--cache"])
        .arg(dir.path().join("cache"))
        .args(["--repo", &rel.repo(), "--tpm", &s(tpm)])
        .args(["--boot-json", &s(&dir.path().join("boot.json"))])
        .args(["--firmware-log", &s(&dir.path().join("bios.bin"))])
        .args(["--node-name", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn phase serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("serve banner");
    let url = line.trim().rsplit(' ').next().unwrap_or("").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "banner: {line:?}");
    Node {
        child,
        url,
        _dir: dir,
    }
}

/// A node that booted the release: the whole log in the TPM and in
/// `boot.json`.
fn good_node(rel: &Release, name: &str) -> (Swtpm, Node) {
    let swtpm = Swtpm::start();
    let events = rel.events(&rel.boot());
    swtpm.extend(&events);
    let node = serve(rel, &swtpm.sock(), &events, name);
    (swtpm, node)
}

fn verify(rel: &Release, store: &Path, source: &[&str]) -> (bool, String, String) {
    let root = rel.root();
    let store = s(store);
    let mut args = vec!["attest", "verify", "--root", &root, "--ak-store", &store];
    args.extend_from_slice(source);
    run(&args)
}

/// The failure names `what`, and nothing passed.
fn refused(result: (bool, String, String), what: &[&str]) -> String {
    let (good, out, err) = result;
    assert!(!good, "verify passed: {out}");
    assert!(!out.contains("booted"), "a verdict was printed: {out}");
    for w in what {
        assert!(err.contains(w), "the error names {w:?}: {err}");
    }
    assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");
    err
}

fn get(url: &str) -> (u16, Vec<u8>) {
    let resp = reqwest::blocking::get(url).expect("GET");
    let status = resp.status().as_u16();
    (status, resp.bytes().expect("body").to_vec())
}

/// An HTTP server on 127.0.0.1 that answers every request with `raw` (a
/// whole response, or a broken one) and closes the connection.
fn canned(raw: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 65_536 {
                match conn.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            let _ = conn.write_all(&raw);
            let _ = conn.flush();
        }
    });
    url
}

fn ok_response(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn a_node_that_booted_the_release_is_verified() {
    let rel = Release::publish();
    let (_swtpm, node) = good_node(&rel, "node-a");
    let store = rel.dir.path().join("aks.json");

    let (good, out, err) = verify(&rel, &store, &["--peer", &node.url]);
    assert!(good, "verify failed: {err}");
    assert_eq!(out.lines().count(), 1, "one verdict line: {out}");
    let kernel = rel.sha256("kernel");
    let rootfs = rel.sha256("rootfs");
    let fp = rel.report["root_fingerprint"].as_str().expect("fp");
    let tv = rel.report["targets_version"]
        .as_u64()
        .expect("targets version");
    assert!(
        out.starts_with(&format!(
            "node node-a booted stable/x86_64 targets v{tv} (kernel {}…, rootfs {}…) from root fp {}…, mode local; firmware log replays PCRs 4, 7, 9; stick not checked; AK ",
            &kernel[..16],
            &rootfs[..16],
            &fp[..16]
        )),
        "{out}"
    );
    assert!(out.trim_end().ends_with("first seen, recorded"), "{out}");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&store).expect("the AK store")).expect("json");
    let ak = stored["nodes"]["node-a"]["ak"]
        .as_str()
        .expect("node-a's AK");
    assert_eq!(ak.len(), 64);

    // Again, as JSON: the same AK now, the PCR 23 of the replay.
    let (good, out, err) = verify(&rel, &store, &["--peer", &node.url, "--json"]);
    assert!(good, "verify failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("verdict JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["node"], "node-a");
    assert_eq!(v["ak"], ak);
    assert_eq!(v["ak_first_use"], false);
    assert_eq!(v["kernel"], kernel.as_str());
    assert_eq!(v["rootfs"], rootfs.as_str());
    assert_eq!(v["mode"], "local");
    assert_eq!(v["channel"], "stable");
    assert_eq!(v["arch"], "x86_64");
    let events = rel.events(&rel.boot());
    assert_eq!(v["events"], events.len());
    assert_eq!(
        v["pcrs"]["23"],
        hex::encode(replay(&events, PHASE_PCR)).as_str()
    );
    assert_eq!(v["firmware_log_bytes"], firmware().0.len());
    assert_eq!(v["firmware_events"], firmware().1.len());
    assert_eq!(v["stick"], serde_json::Value::Null, "not checked: {v}");
}

#[test]
fn a_node_is_checked_against_its_sticks_manifest() {
    let rel = Release::publish();
    let (_swtpm, node) = good_node(&rel, "node-a");
    let store = rel.dir.path().join("aks.json");
    let path = rel.dir.path().join("disk.img.manifest.json");
    let write = |m: &serde_json::Value| std::fs::write(&path, m.to_string()).expect("manifest");
    let internet =
        "initrd=\\phase\\initramfs.img console=tty0 console=ttyS0,115200 phase.mode=internet";
    let stick = stick_manifest(
        STICK_INITRAMFS,
        &[("phase-internet", internet), ("phase-local", STICK_CMDLINE)],
    );
    let id = stick["id"].as_str().expect("id").to_owned();
    write(&stick);
    let with_stick = ["--peer", &node.url, "--stick", &s(&path)];

    let (good, out, err) = verify(&rel, &store, &with_stick);
    assert!(good, "verify failed: {err}");
    assert!(
        out.contains(&format!(
            "; firmware log replays PCRs 4, 7, 9; stick image {id} entry phase-local; AK "
        )),
        "{out}"
    );
    let mut json = with_stick.to_vec();
    json.push("--json");
    let (good, out, err) = verify(&rel, &store, &json);
    assert!(good, "verify failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("verdict JSON");
    assert_eq!(
        v["stick"],
        serde_json::json!({ "image": id, "entry": "phase-local" })
    );

    // Another stick: its initramfs, and its entries without the node's.
    let other = stick_manifest(b"another initramfs", &[("phase-internet", internet)]);
    write(&other);
    let err = refused(
        verify(&rel, &store, &with_stick),
        &[
            "node node-a: PCR 9 is not a boot of stick image ",
            &format!(
                "the initramfs is sha256 {} on the node, {} on the stick; ",
                hex::encode(Sha256::digest(STICK_INITRAMFS)),
                other["initramfs_sha256"].as_str().expect("sha")
            ),
            &format!(
                "the command line is \"{STICK_CMDLINE}\" on the node, the stick's entry phase-internet has \"{internet}\""
            ),
        ],
    );
    assert!(err.contains(other["id"].as_str().expect("id")), "{err}");

    // A manifest that is not one: named before the node is asked.
    std::fs::write(&path, b"[1, 2]").expect("manifest");
    refused(
        verify(&rel, &store, &with_stick),
        &[&format!(
            "the stick manifest {} is not a stick manifest",
            s(&path)
        )],
    );
}

#[test]
fn the_attest_endpoint_refuses_bad_nonces_and_answers_no_tpm_without_one() {
    let rel = Release::publish();
    let (_swtpm, node) = good_node(&rel, "node-a");
    let (status, body) = get(&format!("{}/attest", node.url));
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).starts_with("no nonce"),
        "{body:?}"
    );
    let (status, body) = get(&format!("{}/attest?nonce=0011", node.url));
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).starts_with("the nonce has 4 hex digits"),
        "{body:?}"
    );
    let (status, body) = get(&format!("{}/attest?nonce={}", node.url, "zz".repeat(8)));
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).starts_with("the nonce is not hex"));
    let (status, body) = get(&format!("{}/attest?nonce={}", node.url, "ab".repeat(8)));
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(answer["nonce"], "ab".repeat(8));
    assert_eq!(answer["node"], "node-a");

    let missing = rel.dir.path().join("no-tpm");
    let bare = serve(&rel, &missing, &[], "node-b");
    let (status, body) = get(&format!("{}/attest?nonce={}", bare.url, "ab".repeat(8)));
    assert_eq!(status, 404);
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("no TPM: "), "{text}");
    let (good, out, err) = verify(
        &rel,
        &rel.dir.path().join("aks.json"),
        &["--peer", &bare.url],
    );
    assert!(!good && !out.contains("booted"), "{out}");
    assert!(err.contains("HTTP 404") && err.contains("no TPM"), "{err}");
}

#[test]
fn a_replayed_quote_is_refused_naming_the_nonce() {
    let rel = Release::publish();
    let (_swtpm, node) = good_node(&rel, "node-a");
    let old = "0f".repeat(32);
    let (status, body) = get(&format!("{}/attest?nonce={old}", node.url));
    assert_eq!(status, 200);
    let store = rel.dir.path().join("aks.json");

    // A node (or a man in the middle) that answers with an old quote.
    let replayer = canned(ok_response(&body));
    let err = refused(
        verify(&rel, &store, &["--peer", &replayer, "--repo", &rel.repo()]),
        &["node node-a", "nonce", "replayed"],
    );
    assert!(err.contains(&old), "names the quoted nonce: {err}");
    assert!(!store.exists(), "nothing recorded from a refused quote");

    // The saved answer verifies with the nonce it was asked with, and with
    // no other.
    let saved = s(&rel.dir.path().join("answer.json"));
    std::fs::write(&saved, &body).expect("save");
    let repo = rel.repo();
    let (good, out, err) = verify(
        &rel,
        &store,
        &["--quote", &saved, "--repo", &repo, "--nonce", &old],
    );
    assert!(good, "{err}");
    assert!(out.starts_with("node node-a booted stable/x86_64"), "{out}");
    let other = "1e".repeat(32);
    let result = verify(
        &rel,
        &store,
        &[
            "--quote", &saved, "--repo", &repo, "--nonce", &other, "--json",
        ],
    );
    let json: serde_json::Value =
        serde_json::from_str(result.1.trim()).expect("a JSON error object");
    assert_eq!(json["ok"], false);
    assert!(
        json["error"].as_str().is_some_and(|e| e.contains("nonce")),
        "{json}"
    );
    refused(result, &["nonce", "replayed"]);
}

#[test]
fn a_quote_from_another_ak_is_refused_by_the_ak_store() {
    let rel = Release::publish();
    let store = rel.dir.path().join("aks.json");
    {
        let (_swtpm, node) = good_node(&rel, "node-a");
        let (good, out, err) = verify(&rel, &store, &["--peer", &node.url]);
        assert!(good && out.contains("first seen, recorded"), "{out}{err}");
    }
    // Another TPM (another endorsement seed, so another AK) presents the
    // same name and the same, genuine-looking boot.
    let (_swtpm, impostor) = good_node(&rel, "node-a");
    refused(
        verify(&rel, &store, &["--peer", &impostor.url]),
        &[
            "node node-a",
            "AK",
            "not the AK first seen for it",
            &s(&store),
        ],
    );
    // Under another name it is a first use.
    let (good, out, err) = verify(&rel, &store, &["--peer", &impostor.url, "--node", "node-b"]);
    assert!(good && out.starts_with("node node-b booted"), "{out}{err}");
}

#[test]
fn an_event_log_that_does_not_replay_is_refused() {
    let rel = Release::publish();
    let swtpm = Swtpm::start();
    let events = rel.events(&rel.boot());
    swtpm.extend(&events);
    // The log leaves out the last event the TPM saw.
    let node = serve(&rel, &swtpm.sock(), &events[..events.len() - 1], "node-a");
    let err = refused(
        verify(
            &rel,
            &rel.dir.path().join("aks.json"),
            &["--peer", &node.url],
        ),
        &["node node-a", "does not replay to the quoted PCR 23"],
    );
    assert!(
        err.contains(&hex::encode(replay(&events, PHASE_PCR))),
        "names the value the TPM holds: {err}"
    );
}

#[test]
fn a_firmware_log_that_does_not_replay_is_refused_naming_the_pcr() {
    let rel = Release::publish();
    let swtpm = Swtpm::start();
    let events = rel.events(&rel.boot());
    swtpm.extend(&events);
    // Something the log does not show was measured into PCR 7 (a Secure
    // Boot variable changed behind the log's back).
    swtpm.extend_digests(&[(7, [0x77; 32])]);
    let node = serve(&rel, &swtpm.sock(), &events, "node-a");
    refused(
        verify(
            &rel,
            &rel.dir.path().join("aks.json"),
            &["--peer", &node.url],
        ),
        &[
            "node node-a",
            "the firmware event log does not replay to the quoted PCR 7",
            "its 6 events give",
        ],
    );
}

#[test]
fn a_missing_or_malformed_firmware_log_is_refused() {
    let rel = Release::publish();
    let swtpm = Swtpm::start();
    let events = rel.events(&rel.boot());
    swtpm.extend(&events);
    let store = rel.dir.path().join("aks.json");
    let node = serve_with(&rel, &swtpm.sock(), &events, "node-a", None);
    refused(
        verify(&rel, &store, &["--peer", &node.url]),
        &["node node-a", "no firmware event log", "PCRs 4, 7 and 9"],
    );
    drop(node);
    let (mut log, _) = firmware();
    log.truncate(log.len() - 10);
    let node = serve_with(&rel, &swtpm.sock(), &events, "node-a", Some(&log));
    refused(
        verify(&rel, &store, &["--peer", &node.url]),
        &[
            "node node-a",
            "the firmware log ends inside record 12 (event)",
        ],
    );
    drop(node);
    let node = serve_with(&rel, &swtpm.sock(), &events, "node-a", Some(b"not a log"));
    refused(
        verify(&rel, &store, &["--peer", &node.url]),
        &["node node-a", "not a crypto-agile TCG log"],
    );
    assert!(!store.exists(), "nothing recorded from a refused answer");
}

#[test]
fn an_artifact_not_in_the_tuf_metadata_is_refused() {
    let rel = Release::publish();
    let swtpm = Swtpm::start();
    // A kernel the metadata does not list, measured and logged alike (the
    // replay agrees: only the TUF check can tell).
    let mut boot = rel.boot();
    boot.artifacts[0].sha256 = "00".repeat(32);
    let events = rel.events(&boot);
    swtpm.extend(&events);
    let node = serve(&rel, &swtpm.sock(), &events, "node-a");
    refused(
        verify(
            &rel,
            &rel.dir.path().join("aks.json"),
            &["--peer", &node.url],
        ),
        &[
            "node node-a",
            "event 5 (kernel)",
            &"00".repeat(32),
            "TUF metadata",
        ],
    );
}

#[test]
fn a_truncated_answer_is_refused() {
    let rel = Release::publish();
    let (_swtpm, node) = good_node(&rel, "node-a");
    let (_, body) = get(&format!("{}/attest?nonce={}", node.url, "ab".repeat(16)));
    // The headers promise the whole answer, the connection ends half-way.
    let mut raw = ok_response(&body);
    raw.truncate(raw.len() - body.len() / 2);
    let cut = canned(raw);
    refused(
        verify(
            &rel,
            &rel.dir.path().join("aks.json"),
            &["--peer", &cut, "--repo", &rel.repo()],
        ),
        &["attestation answer", "truncated"],
    );
}

#[test]
fn an_oversized_answer_is_refused() {
    let rel = Release::publish();
    // 5 MiB without a length: the reader stops at the cap.
    let mut raw =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b' ', 5 << 20));
    let big = canned(raw);
    refused(
        verify(
            &rel,
            &rel.dir.path().join("aks.json"),
            &["--peer", &big, "--repo", &rel.repo()],
        ),
        &["attestation answer", "oversized"],
    );
    // A declared length over the cap is refused before reading.
    let declared = canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5242880\r\nConnection: close\r\n\r\n{".to_vec(),
    );
    refused(
        verify(
            &rel,
            &rel.dir.path().join("aks.json"),
            &["--peer", &declared, "--repo", &rel.repo()],
        ),
        &["attestation answer", "oversized", "5242880 bytes declared"],
    );
}
