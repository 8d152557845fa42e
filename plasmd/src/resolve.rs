//! Resolving a job name to verified bytes, the way every Phase Boot
//! artifact is resolved: a TUF refresh through the `verifier` (peers first,
//! then the metadata kept in the cache, so a node without a network still
//! works from what it verified at boot), the signed target
//! `jobs/<name>.wasm`, then its bytes through `fetcher::Lookup`: the store,
//! then the read-only caches, then the peers (chunk by chunk against the
//! signed chunk list, into the store under its digest). Whatever the source,
//! [`Job::from_verified`] checks the bytes against the signed target again
//! before anything runs them.
//!
//! Two kinds of cache, both in the `fetcher` CAS layout (objects in
//! `<dir>/cas/sha256/<2>/<64>`, TUF in `<dir>/tuf/`):
//! * read-only caches: on a booted node `/phase`, the
//!   payload stage 1 verified (its `tuf/root.json` is the trust anchor when
//!   nothing else is given, its `tuf/metadata/` the offline fallback);
//! * plasmd's own writable store (the state directory): the trusted TUF
//!   state in `<state>/tuf/`, and the jobs fetched from peers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fetcher::{Cas, FetchOptions, Fetcher, Lookup, Origin, Peer, PeerTransport, TargetObject};
use verifier::{DirStorage, Storage, Updater};

use crate::job::{job_name, target_name, Job, JobError};

/// Why a job could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Setting up the cache, the trusted state or the HTTP client failed.
    #[error("{0}")]
    Setup(String),
    /// The TUF refresh failed (no peer answered and the cached metadata is
    /// missing, expired or does not verify).
    #[error("TUF refresh failed")]
    Refresh(#[source] Box<verifier::Error>),
    /// The job was refused (not listed, bad name, bytes not the signed ones,
    /// malformed metadata).
    #[error(transparent)]
    Job(Box<JobError>),
    /// The bytes are in neither the cache nor any peer.
    #[error("job {name}: cannot fetch {sha256}")]
    Fetch {
        name: String,
        sha256: String,
        #[source]
        source: Box<fetcher::FetchError>,
    },
}

impl From<JobError> for ResolveError {
    fn from(e: JobError) -> Self {
        ResolveError::Job(Box::new(e))
    }
}

fn refresh_err(e: verifier::Error) -> ResolveError {
    ResolveError::Refresh(Box::new(e))
}

/// A refresh that failed only because no peer delivered a file (as opposed
/// to metadata that was delivered and rejected).
fn no_peer_answered(e: &verifier::Error) -> bool {
    matches!(
        e,
        verifier::Error::Fetch {
            source: verifier::TransportError::Other(_),
            ..
        }
    )
}

/// Where a resolver finds trust, metadata and bytes.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// plasmd's writable store: trusted state in `<store>/tuf`, fetched
    /// jobs in `<store>/cas/sha256`.
    pub store: PathBuf,
    /// Read-only caches (objects after the store; metadata; trust anchor).
    pub caches: Vec<PathBuf>,
    /// Trusted root used when `<store>/tuf/root.json` does not exist
    /// (default: the first cache's `tuf/root.json`).
    pub root: Option<PathBuf>,
    /// Peers: `http://host:port` (a Phase peer) or a static mirror URL.
    pub peers: Vec<String>,
    /// Longest time one job's bytes may take to fetch.
    pub fetch_deadline: Option<Duration>,
}

/// A resolved job and where its bytes came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The verified job.
    pub job: Job,
    /// `cache` or the peers that supplied bytes (`peer=bytes, ...`).
    pub source: String,
}

/// Resolves job names through TUF, the local CAS and the peers. The calls
/// block: run them on a thread that does not drive the given runtime
/// (`spawn_blocking`, or the main thread).
#[derive(Debug)]
pub struct Resolver {
    cas: Cas,
    caches: Vec<PathBuf>,
    storage: DirStorage,
    peers: Vec<Peer>,
    fetcher: Fetcher,
    handle: tokio::runtime::Handle,
}

fn setup<E: std::fmt::Display>(what: String) -> impl FnOnce(E) -> ResolveError {
    move |e| ResolveError::Setup(format!("{what}: {e}"))
}

impl Resolver {
    /// Open the cache, install the trusted root when the cache has none,
    /// and parse the peers. `handle` runs the HTTP requests.
    pub fn open(sources: &Sources, handle: tokio::runtime::Handle) -> Result<Self, ResolveError> {
        let store = &sources.store;
        let cas = Cas::open(store)
            .map_err(setup(format!("cannot open the store {}", store.display())))?;
        let tuf = cas.tuf_dir();
        let storage = DirStorage::new(&tuf).map_err(setup(format!(
            "cannot open the trusted state {}",
            tuf.display()
        )))?;
        let have_root = storage
            .load("root.json")
            .map_err(setup(format!(
                "cannot read {}",
                tuf.join("root.json").display()
            )))?
            .is_some();
        if !have_root {
            let anchor = sources.root.clone().or_else(|| {
                sources
                    .caches
                    .first()
                    .map(|c| c.join(fetcher::cas::layout::TUF).join("root.json"))
            });
            let Some(root) = anchor else {
                return Err(ResolveError::Setup(format!(
                    "no trusted root: {} does not exist and neither a root file nor a cache was given",
                    tuf.join("root.json").display()
                )));
            };
            let bytes = std::fs::read(&root).map_err(setup(format!(
                "cannot read the trusted root {}",
                root.display()
            )))?;
            verifier::install_root(&storage, &bytes, chrono::Utc::now()).map_err(setup(
                format!("{} is not a valid trusted root", root.display()),
            ))?;
        }
        let mut peers = Vec::new();
        for p in &sources.peers {
            peers.push(Peer::parse(p).map_err(|e| ResolveError::Setup(e.to_string()))?);
        }
        let mut opts = FetchOptions::default();
        if let Some(d) = sources.fetch_deadline {
            opts.deadline = d;
        }
        let fetcher = {
            let _guard = handle.enter();
            Fetcher::new(cas.clone(), opts).map_err(setup("cannot set up the fetcher".into()))?
        };
        Ok(Resolver {
            cas,
            caches: sources.caches.clone(),
            storage,
            peers,
            fetcher,
            handle,
        })
    }

    /// The peers in use.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// plasmd's own store.
    pub fn cas(&self) -> &Cas {
        &self.cas
    }

    /// Copy metadata files the store lacks from the read-only caches, so a
    /// refresh without peers works from what the node verified at boot.
    /// These copies are only a transport: the updater verifies them.
    fn seed_metadata(&self, meta_dir: &Path) {
        let _ = std::fs::create_dir_all(meta_dir);
        for c in &self.caches {
            let Ok(rd) = std::fs::read_dir(c.join(fetcher::cas::layout::METADATA)) else {
                continue;
            };
            for e in rd.flatten().take(10_000) {
                let to = meta_dir.join(e.file_name());
                let is_json = e
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'));
                if is_json && !to.exists() && e.file_type().is_ok_and(|t| t.is_file()) {
                    if let Ok(b) = verifier::read_capped(
                        match std::fs::File::open(e.path()) {
                            Ok(f) => f,
                            Err(_) => continue,
                        },
                        16 << 20,
                    ) {
                        let _ = verifier::publish::write_atomic(&to, &b, 0o644);
                    }
                }
            }
        }
    }

    /// Finds objects: the store, then the read-only caches, then the
    /// peers (into the store).
    fn lookup(&self) -> Lookup {
        Lookup::new(self.fetcher.clone())
            .with_caches(self.caches.iter().cloned())
            .with_peers(self.peers.clone())
    }

    /// Refresh TUF, then resolve `name` (`hello` for `jobs/hello.wasm`).
    pub fn resolve(&self, name: &str) -> Result<Resolved, ResolveError> {
        let tname = target_name(name);
        if job_name(&tname).is_none() {
            return Err(JobError::Name(tname).into());
        }
        let meta_dir = self.cas.metadata_dir();
        self.seed_metadata(&meta_dir);
        let now = chrono::Utc::now();
        let online = PeerTransport::new(
            self.fetcher.client().clone(),
            self.handle.clone(),
            self.peers.clone(),
            Some(meta_dir.clone()),
        );
        let offline;
        let mut transport = &online;
        let mut updater = Updater::new(&self.storage, transport, now);
        if let Err(e) = updater.refresh() {
            if self.peers.is_empty() || !no_peer_answered(&e) {
                return Err(refresh_err(e));
            }
            // Every peer failed (unreachable, a name that does not resolve
            // here, an HTTP error): refresh from the metadata this node
            // verified at boot. It is verified again, expiry included, so
            // this can only be as fresh as the boot, never less checked.
            tracing::warn!(
                error = %verifier::error_chain(&e),
                "no peer answered the TUF refresh; using the metadata verified at boot"
            );
            offline = PeerTransport::new(
                self.fetcher.client().clone(),
                self.handle.clone(),
                Vec::new(),
                Some(meta_dir.clone()),
            );
            transport = &offline;
            updater = Updater::new(&self.storage, transport, now);
            updater.refresh().map_err(refresh_err)?;
        }
        // Re-share what was accepted; a failure here does not stop the job.
        if let Err(e) = export_metadata(transport, &self.storage, &meta_dir) {
            tracing::warn!(error = %e, "cannot keep the refreshed metadata in the cache");
        }
        let target = updater.target(&tname).map_err(|source| JobError::Resolve {
            name: name.to_string(),
            source,
        })?;
        let consistent = updater.root().map_err(refresh_err)?.consistent_snapshot;
        target.phase().map_err(|source| JobError::Custom {
            name: name.to_string(),
            source,
        })?;
        let object = TargetObject::new(&target, consistent)
            .map_err(|e| ResolveError::Setup(format!("job {name}: {e}")))?;
        let found = self
            .handle
            .block_on(self.lookup().find(&object, None, None))
            .map_err(|source| ResolveError::Fetch {
                name: name.to_string(),
                sha256: object.spec.sha256.to_hex(),
                source: Box::new(source),
            })?;
        if let Some(e) = &found.ref_error {
            tracing::warn!(error = %e, "cannot record the job in the cache refs");
        }
        let source = match &found.origin {
            Origin::Local => "store".to_string(),
            Origin::Cache(dir) => format!("cache {}", dir.display()),
            Origin::Peers(report) => {
                let by_peer: Vec<String> = report
                    .peers
                    .iter()
                    .filter(|p| p.bytes > 0)
                    .map(|p| format!("{}={}", p.label, p.bytes))
                    .collect();
                if by_peer.is_empty() {
                    "store".to_string()
                } else {
                    by_peer.join(", ")
                }
            }
        };
        let path = found.path;
        let bytes = read_object(&path, target.length).map_err(|e| {
            ResolveError::Setup(format!("job {name}: cannot read {}: {e}", path.display()))
        })?;
        let job = Job::from_verified(target, bytes)?;
        Ok(Resolved { job, source })
    }
}

/// Read at most `length + 1` bytes, so an object longer than its signed
/// length is caught by the digest check without reading all of it.
fn read_object(path: &Path, length: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    f.take(length.saturating_add(1)).read_to_end(&mut out)?;
    Ok(out)
}

/// Keep the metadata the refresh accepted in `<cache>/tuf/metadata/`, so
/// the next refresh works offline and `phase serve --cache` shares it.
fn export_metadata(
    transport: &PeerTransport,
    storage: &DirStorage,
    dir: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let trusted: Vec<Vec<u8>> = [
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ]
    .iter()
    .filter_map(|n| storage.load(n).ok().flatten())
    .collect();
    for (name, bytes) in transport.fetched() {
        if name.ends_with(".root.json") || trusted.contains(&bytes) {
            verifier::publish::write_atomic(&dir.join(&name), &bytes, 0o644)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
