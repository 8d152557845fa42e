//! `plasmd daemon`: runs the jobs the config names at start-up, then serves
//! a local Unix socket on which `plasmd submit`, `plasmd status` and
//! `plasmd logs` talk to it.
//!
//! Protocol: one JSON object per line. A client connects, sends one
//! [`Request`] line and reads one [`Response`] line; the daemon then closes
//! the connection.
//!
//! ```text
//! -> {"op":"submit","job":"hello","wait":false}
//! <- {"ok":true,"run":{"id":"hello-2","job":"hello","state":"queued",...}}
//! -> {"op":"status"}
//! <- {"ok":true,"runs":[{...},{...}]}
//! -> {"op":"logs","run":"hello"}            (a run id, or a job name: its latest run)
//! <- {"ok":true,"run":{...},"log":"Hello from Phase WASM on node-7\n..."}
//! <- {"ok":false,"error":"no run or job named \"nope\""}
//! ```
//!
//! Access control is the file system: the socket's directory is created
//! 0700 and the socket is 0600, so only its owner (root on a node) can
//! connect.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::job::{job_name, target_name};
use crate::outcome::JobOutcome;
use crate::resolve::{Resolver, Sources};
use crate::sandbox::{Plasm, PlasmConfig};

/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/plasmd/plasmd.sock";
/// Default provenance file.
pub const DEFAULT_BOOT_JSON: &str = "/phase/boot.json";
/// Default state directory.
pub const DEFAULT_STATE: &str = "/var/lib/plasmd";
/// Longest request line.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Runs kept in memory for `status` (the oldest finished ones go first).
pub const MAX_RUNS_KEPT: usize = 1000;

/// `plasmd daemon --config FILE` (TOML). Every field is optional.
///
/// ```toml
/// state = "/var/lib/plasmd"            # runs/<id>/{log,outcome.json,scratch}
/// socket = "/run/plasmd/plasmd.sock"
/// cache = "/phase"                     # read-only CAS looked at first: <cache>/cas/sha256, <cache>/tuf
/// root = "/phase/tuf/root.json"        # trust anchor when <state>/tuf has none (default <cache>/tuf/root.json)
/// peers = ["http://198.18.0.1:7070"]
/// peers_from_boot = true               # add the http peers named in boot.json (default true)
/// boot_json = "/phase/boot.json"       # read-only /phase/boot.json for jobs (this is the default)
/// hostname = "node-7"                  # default: the kernel's
/// jobs = ["hello"]                     # run at start-up, in order
/// max_parallel = 2                     # runs at once; more wait queued
/// fetch_deadline_s = 300               # per job fetched from peers
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub state: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub peers: Vec<String>,
    pub peers_from_boot: Option<bool>,
    pub boot_json: Option<PathBuf>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub jobs: Vec<String>,
    pub max_parallel: Option<usize>,
    pub fetch_deadline_s: Option<u64>,
}

impl DaemonConfig {
    /// Read and check a config file; the error is one line naming the file
    /// and what is wrong.
    pub fn load(path: &Path) -> Result<DaemonConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// Parse and check config text.
    pub fn parse(text: &str) -> Result<DaemonConfig, String> {
        let c: DaemonConfig = toml::from_str(text).map_err(|e: toml::de::Error| {
            let msg = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })?;
        c.check()?;
        Ok(c)
    }

    /// The checks `parse` makes (also for configs built from flags).
    pub fn check(&self) -> Result<(), String> {
        for j in &self.jobs {
            if job_name(&target_name(j)).is_none() {
                return Err(format!(
                    "jobs: {j:?} is not a job name (letters, digits, '.', '_', '-')"
                ));
            }
        }
        if self.max_parallel == Some(0) {
            return Err("max_parallel must be at least 1".into());
        }
        if let Some(h) = &self.hostname {
            if h.is_empty() || h.contains(['\0', '\n']) {
                return Err(format!("hostname {h:?} is not a host name"));
            }
        }
        Ok(())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.clone().unwrap_or_else(|| DEFAULT_STATE.into())
    }

    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.into())
    }

    /// The provenance file: `boot_json`, default `/phase/boot.json`.
    pub fn boot_json_path(&self) -> PathBuf {
        self.boot_json
            .clone()
            .unwrap_or_else(|| DEFAULT_BOOT_JSON.into())
    }

    /// What the boot asks of every service (phase-init's `PHASE_MODE` and
    /// `PHASE_NOWRITE`, docs/threat-model.md): in private mode no peer at
    /// all (a job comes from the verified boot payload, never over a direct
    /// connection); with nowrite the state directory must not be on a
    /// writable disk (`mounts`: `/proc/self/mounts` text). Returns what was
    /// changed, for the log; an error names the offending mount.
    pub fn apply_boot_policy(
        &mut self,
        mode: Option<&str>,
        nowrite: bool,
        mounts: &str,
    ) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        if mode == Some("private") {
            notes.push(
                "private mode: no peers (jobs come from the verified boot payload only)".to_owned(),
            );
            self.peers.clear();
            self.peers_from_boot = Some(false);
        }
        if nowrite {
            let state = self.state_dir();
            if let Some(m) = disk_mount_of(&state, mounts) {
                return Err(format!(
                    "PHASE_NOWRITE=1 but the state directory {} is on the writable disk {m}; use a tmpfs path",
                    state.display()
                ));
            }
            notes.push(format!(
                "nowrite: state {} is not on a disk",
                state.display()
            ));
        }
        Ok(notes)
    }

    /// `peers`, then the http peers boot.json names (when asked to).
    pub fn all_peers(&self) -> Vec<String> {
        let mut v = self.peers.clone();
        if self.peers_from_boot.unwrap_or(true) {
            for p in boot_peers(&self.boot_json_path()) {
                if !v.contains(&p) {
                    v.push(p);
                }
            }
        }
        v
    }
}

/// The `peers[].peer` values of a boot.json that are http URLs.
fn boot_peers(path: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        tracing::warn!(path = %path.display(), "boot.json is not JSON; no peers taken from it");
        return Vec::new();
    };
    v.get("peers")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("peer").and_then(|u| u.as_str()))
        .filter(|u| u.starts_with("http://"))
        .map(str::to_string)
        .collect()
}

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Resolve and run a job. With `wait`, answer when it has ended.
    Submit {
        job: String,
        #[serde(default)]
        wait: bool,
    },
    /// Every run this daemon knows.
    Status,
    /// The log of a run (by id), or of a job's latest run (by job name).
    Logs { run: String },
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Refreshing TUF, fetching and verifying the bytes.
    Resolving,
    /// Verified, waiting for a free slot.
    Queued,
    /// Running.
    Running,
    /// Ended; `outcome` says how.
    Done,
    /// Refused before running (not signed, altered, not fetchable); `error`
    /// says why.
    Refused,
    /// The host could not set the run up; `error` says why.
    Failed,
}

/// One run as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub job: String,
    pub state: RunState,
    pub submitted: DateTime<Utc>,
    /// Hex SHA-256 of the verified module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `cache` or the peers the bytes came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Status and resource use, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<JobOutcome>,
}

impl RunInfo {
    /// One line for humans: id, job, state and what it used.
    pub fn summary(&self) -> String {
        let mut s = format!("{:<16} {:<12} ", self.id, self.job);
        match (&self.state, &self.outcome, &self.error) {
            (RunState::Done, Some(o), _) => s.push_str(&format!(
                "{} (fuel {}, peak memory {} B, {} ms)",
                o.status, o.usage.fuel, o.usage.peak_memory_bytes, o.usage.wall_ms
            )),
            (st, _, Some(e)) => s.push_str(&format!("{} : {e}", state_word(*st))),
            (st, _, None) => s.push_str(state_word(*st)),
        }
        s
    }
}

fn state_word(s: RunState) -> &'static str {
    match s {
        RunState::Resolving => "resolving",
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Done => "done",
        RunState::Refused => "refused",
        RunState::Failed => "failed",
    }
}

/// A control answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<RunInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

impl Response {
    fn error(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Response::default()
        }
    }
}

/// The error and its causes on one line.
pub use verifier::error_chain as chain;

/// The writable block-device mount (`/dev/...`, `rw`) that holds `path`,
/// as `device on dir`, from `/proc/self/mounts` text; `None` when the
/// longest matching mount is not one (tmpfs, overlay, a read-only disk).
pub fn disk_mount_of(path: &Path, mounts: &str) -> Option<String> {
    let mut best: Option<(usize, &str, &str, bool)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || !path.starts_with(f[1]) {
            continue;
        }
        let len = f[1].len();
        if best.is_none_or(|(b, ..)| len >= b) {
            let rw = f[3].split(',').any(|o| o == "rw");
            best = Some((len, f[0], f[1], rw));
        }
    }
    best.filter(|(_, dev, _, rw)| *rw && dev.starts_with("/dev/"))
        .map(|(_, dev, dir, _)| format!("{dev} on {dir}"))
}

/// The running daemon: job runner, resolver, run table.
pub struct Daemon {
    plasm: Plasm,
    resolver: Arc<Mutex<Resolver>>,
    runs: Mutex<VecDeque<RunInfo>>,
    slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("plasm", &self.plasm)
            .finish()
    }
}

impl Daemon {
    /// Set up the sandbox and the resolver (call inside the runtime).
    pub fn new(config: &DaemonConfig) -> Result<Arc<Daemon>, String> {
        config.check()?;
        let state = config.state_dir();
        std::fs::create_dir_all(&state)
            .map_err(|e| format!("cannot create state directory {}: {e}", state.display()))?;
        let _ = std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700));
        let mut pc = PlasmConfig::new(&state);
        pc.provenance = Some(config.boot_json_path());
        if let Some(h) = &config.hostname {
            pc.hostname = h.clone();
        }
        let plasm = Plasm::new(pc).map_err(|e| chain(&e))?;
        let sources = Sources {
            store: state.clone(),
            caches: config.cache.iter().cloned().collect(),
            root: config.root.clone(),
            peers: config.all_peers(),
            fetch_deadline: config.fetch_deadline_s.map(Duration::from_secs),
        };
        let resolver =
            Resolver::open(&sources, tokio::runtime::Handle::current()).map_err(|e| chain(&e))?;
        Ok(Arc::new(Daemon {
            plasm,
            resolver: Arc::new(Mutex::new(resolver)),
            runs: Mutex::new(VecDeque::new()),
            slots: tokio::sync::Semaphore::new(config.max_parallel.unwrap_or(2)),
        }))
    }

    /// The peers jobs are fetched from.
    pub fn peers(&self) -> Vec<String> {
        self.resolver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .peers()
            .iter()
            .map(|p| p.label())
            .collect()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut RunInfo)) -> Option<RunInfo> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let r = runs.iter_mut().find(|r| r.id == id)?;
        f(r);
        Some(r.clone())
    }

    fn insert(&self, info: RunInfo) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if runs.len() >= MAX_RUNS_KEPT {
            if let Some(i) = runs.iter().position(|r| {
                matches!(
                    r.state,
                    RunState::Done | RunState::Refused | RunState::Failed
                )
            }) {
                runs.remove(i);
            }
        }
        runs.push_back(info);
    }

    /// Every run known, oldest first.
    pub fn status(&self) -> Vec<RunInfo> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Resolve `name` and start it; with `wait`, return once it has ended.
    /// `Err` is one line: the job was refused or the run could not start.
    pub async fn submit(self: &Arc<Self>, name: &str, wait: bool) -> Result<RunInfo, String> {
        if job_name(&target_name(name)).is_none() {
            return Err(format!(
                "{name:?} is not a job name (letters, digits, '.', '_', '-'; the target is jobs/<name>.wasm)"
            ));
        }
        let id = self.plasm.reserve_run(name).map_err(|e| chain(&e))?;
        self.insert(RunInfo {
            id: id.clone(),
            job: name.to_string(),
            state: RunState::Resolving,
            submitted: Utc::now(),
            sha256: None,
            source: None,
            error: None,
            outcome: None,
        });
        let resolver = self.resolver.clone();
        let n = name.to_string();
        let resolved = tokio::task::spawn_blocking(move || {
            resolver
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .resolve(&n)
        })
        .await;
        let resolved = match resolved {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.refuse(&id, RunState::Refused, chain(&e))),
            Err(e) => {
                return Err(self.refuse(
                    &id,
                    RunState::Failed,
                    format!("resolver task failed: {e}"),
                ))
            }
        };
        let info = self
            .update(&id, |r| {
                r.state = RunState::Queued;
                r.sha256 = Some(resolved.job.sha256().to_string());
                r.source = Some(resolved.source.clone());
            })
            .ok_or_else(|| format!("run {id} vanished"))?;
        println!(
            "plasmd: {id} verified {} sha256:{} from {}",
            target_name(name),
            resolved.job.sha256(),
            resolved.source
        );
        let me = self.clone();
        let rid = id.clone();
        let task = tokio::spawn(async move { me.execute(resolved.job, rid).await });
        if !wait {
            return Ok(info);
        }
        let _ = task.await;
        self.update(&id, |_| {})
            .ok_or_else(|| format!("run {id} vanished"))
    }

    fn refuse(&self, id: &str, state: RunState, msg: String) -> String {
        println!("plasmd: {id} refused: {msg}");
        let _ = std::fs::write(self.plasm.run_dir(id).join("refused"), format!("{msg}\n"));
        self.update(id, |r| {
            r.state = state;
            r.error = Some(msg.clone());
        });
        msg
    }

    async fn execute(self: Arc<Self>, job: crate::job::Job, id: String) {
        let _slot = self.slots.acquire().await;
        self.update(&id, |r| r.state = RunState::Running);
        // The run is its own task so that even a panic inside it is a
        // recorded failure, not a lost daemon.
        let me = self.clone();
        let rid = id.clone();
        let run = tokio::spawn(async move { me.plasm.run_reserved(&job, &rid).await }).await;
        match run {
            Ok(Ok(outcome)) => {
                println!(
                    "plasmd: {} {} (fuel {}, peak memory {} B, {} ms; log {})",
                    outcome.id,
                    outcome.status,
                    outcome.usage.fuel,
                    outcome.usage.peak_memory_bytes,
                    outcome.usage.wall_ms,
                    outcome.log.display()
                );
                self.update(&id, |r| {
                    r.state = RunState::Done;
                    r.outcome = Some(outcome);
                });
            }
            Ok(Err(e)) => {
                self.refuse(&id, RunState::Failed, chain(&e));
            }
            Err(e) => {
                self.refuse(&id, RunState::Failed, format!("run task failed: {e}"));
            }
        }
    }

    /// The log of run `which` (an id), or of the latest run of job `which`.
    pub fn logs(&self, which: &str) -> Result<(RunInfo, String), String> {
        let info = {
            let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            runs.iter()
                .find(|r| r.id == which)
                .or_else(|| runs.iter().rev().find(|r| r.job == which))
                .cloned()
        };
        let Some(info) = info else {
            return Err(format!("no run or job named {which:?}"));
        };
        let path = self.plasm.run_dir(&info.id).join("log");
        let log = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok((info, log))
    }

    /// Answer one request.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Response {
        match req {
            Request::Submit { job, wait } => match self.submit(&job, wait).await {
                Ok(run) => Response {
                    ok: true,
                    run: Some(run),
                    ..Response::default()
                },
                Err(e) => Response::error(e),
            },
            Request::Status => Response {
                ok: true,
                runs: Some(self.status()),
                ..Response::default()
            },
            Request::Logs { run } => match self.logs(&run) {
                Ok((info, log)) => Response {
                    ok: true,
                    run: Some(info),
                    log: Some(log),
                    ..Response::default()
                },
                Err(e) => Response::error(e),
            },
        }
    }
}

/// Bind the control socket: parent directory created 0700 when missing,
/// a stale socket (nobody answering) replaced, an answering one refused;
/// the socket is bound under a temporary name, made 0600, then renamed.
pub fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create socket directory {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another plasmd is already listening on {}",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| format!("socket path {} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{file}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).map_err(|e| format!("cannot listen on {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot move the socket to {}: {e}", path.display())
    })?;
    Ok(listener)
}

/// Serve the control socket until `shutdown` resolves.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let conns = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = conns.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the control socket failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let d = daemon.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(d, stream).await;
        });
    }
}

async fn connection(daemon: Arc<Daemon>, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(rd).take(MAX_REQUEST as u64 + 1);
    let mut line = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let resp = match read {
        Err(_) => Response::error(format!("no request within {} s", REQUEST_TIMEOUT.as_secs())),
        Ok(Err(e)) => Response::error(format!("cannot read the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => {
            Response::error(format!("request longer than {MAX_REQUEST} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
            Ok(req) => daemon.handle(req).await,
            Err(e) => Response::error(format!(
                "bad request (want one JSON line like {{\"op\":\"status\"}}): {e}"
            )),
        },
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    let _ = wr.write_all(&out).await;
    let _ = wr.shutdown().await;
}

/// Client side: send one request, read one response (blocking).
pub fn call(socket: &Path, req: &Request) -> Result<Response, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to plasmd at {}: {e} (is `plasmd daemon` running, and may you open its socket?)",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("cannot send the request to {}: {e}", socket.display()))?;
    let mut resp = Vec::new();
    BufReader::new(s)
        .take(256 << 20)
        .read_until(b'\n', &mut resp)
        .map_err(|e| format!("cannot read the answer from {}: {e}", socket.display()))?;
    if resp.is_empty() {
        return Err(format!(
            "plasmd at {} closed without answering",
            socket.display()
        ));
    }
    serde_json::from_slice(&resp).map_err(|e| format!("plasmd sent an unreadable answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_checks() {
        let c = DaemonConfig::parse(
            r#"state = "/s"
cache = "/phase"
peers = ["http://198.18.0.1:7070"]
jobs = ["hello", "a-b.c"]
"#,
        )
        .expect("valid config");
        assert_eq!(c.jobs, vec!["hello".to_string(), "a-b.c".to_string()]);
        assert_eq!(c.socket_path(), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.boot_json_path(), PathBuf::from(DEFAULT_BOOT_JSON));
        let e = DaemonConfig::parse("jobs = [\"../x\"]").expect_err("bad job name");
        assert!(e.contains("\"../x\""), "{e}");
        let e = DaemonConfig::parse("state = \"/s\"\njob = [\"x\"]").expect_err("unknown key");
        assert!(e.starts_with("line 2: unknown field `job`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = DaemonConfig::parse("max_parallel = 0").expect_err("zero slots");
        assert!(e.contains("max_parallel"), "{e}");
    }

    #[test]
    fn requests_round_trip_and_bad_ones_are_named() {
        let r: Request = serde_json::from_str(r#"{"op":"submit","job":"hello"}"#).expect("submit");
        assert_eq!(
            r,
            Request::Submit {
                job: "hello".into(),
                wait: false
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"logs","run":"hello-1"}"#).expect("logs");
        assert_eq!(
            r,
            Request::Logs {
                run: "hello-1".into()
            }
        );
        let e = serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).expect_err("unknown op");
        assert!(e.to_string().contains("reboot"), "{e}");
        assert!(serde_json::from_str::<Request>(r#"{"op":"submit"}"#).is_err());
    }

    #[test]
    fn boot_json_peers_are_http_urls_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let b = dir.path().join("boot.json");
        std::fs::write(
            &b,
            r#"{"peers":[{"peer":"http://198.18.0.1:7070","bytes":5},{"peer":"cache","bytes":1}]}"#,
        )
        .expect("write");
        assert_eq!(boot_peers(&b), vec!["http://198.18.0.1:7070".to_string()]);
        let c = DaemonConfig {
            boot_json: Some(b),
            peers_from_boot: None,
            peers: vec!["http://198.18.0.2:1".into()],
            ..DaemonConfig::default()
        };
        assert_eq!(c.all_peers().len(), 2);
    }

    #[test]
    fn private_mode_drops_every_peer_and_nowrite_refuses_a_disk_state_dir() {
        let mounts = "\
overlay / overlay rw,lowerdir=/l,upperdir=/u,workdir=/w 0 0
tmpfs /run tmpfs rw,nosuid 0 0
/dev/vda2 /var/lib/plasmd ext4 rw,relatime 0 0
/dev/vda3 /mnt/ro ext4 ro,relatime 0 0
";
        let mut c = DaemonConfig {
            peers: vec!["http://198.18.0.10:7070".into()],
            state: Some("/run/plasmd-state".into()),
            ..DaemonConfig::default()
        };
        let notes = c.apply_boot_policy(Some("private"), true, mounts).unwrap();
        assert!(notes[0].contains("no peers"), "{notes:?}");
        assert!(c.all_peers().is_empty());
        assert_eq!(c.peers_from_boot, Some(false));
        let mut local = DaemonConfig {
            peers: vec!["http://198.18.0.10:7070".into()],
            ..DaemonConfig::default()
        };
        local
            .apply_boot_policy(Some("local"), false, mounts)
            .unwrap();
        assert_eq!(local.peers.len(), 1, "other modes keep their peers");
        // The default state dir sits on the rw disk mount: refused.
        let e = DaemonConfig::default()
            .apply_boot_policy(Some("private"), true, mounts)
            .unwrap_err();
        assert!(e.contains("/dev/vda2 on /var/lib/plasmd"), "{e}");
        assert_eq!(disk_mount_of(Path::new("/mnt/ro/x"), mounts), None);
        assert_eq!(disk_mount_of(Path::new("/var/lib/plasmdx"), mounts), None);
    }
}
