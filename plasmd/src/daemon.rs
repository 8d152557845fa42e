//! `plasmd daemon`: runs the jobs the config names at start-up, then serves
//! a local Unix socket on which `plasmd submit`, `plasmd status` and
//! `plasmd logs` talk to it ([`crate::protocol`]). Its configuration is
//! [`crate::config`]; job names are resolved to verified bytes by
//! [`crate::resolve`].
//!
//! Access control is the file system: the socket's directory is created
//! 0700 and the socket is 0600, so only its owner (root on a node) can
//! connect.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use verifier::error_chain as chain;

use crate::config::DaemonConfig;
use crate::job::{job_name, target_name};
use crate::protocol::{Request, Response, RunInfo, RunState, MAX_REQUEST};
use crate::resolve::{Resolver, Sources};
use crate::sandbox::{Plasm, PlasmConfig};

/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Runs kept in memory for `status` (the oldest finished ones go first).
pub const MAX_RUNS_KEPT: usize = 1000;

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
