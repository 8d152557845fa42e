//! Shared fixture: a real TUF repository (keys, publisher, updater) whose
//! job targets carry plasmd's custom metadata, and a `Plasm` whose state
//! lives in the same temporary directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use plasmd::{Job, Plasm, PlasmConfig};
use serde_json::Value;
use verifier::publish::{generate_keys, KeygenOptions, Publisher, TargetSpec};
use verifier::{DirStorage, DirTransport, Kind, Updater};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub keys: PathBuf,
    pub repo: PathBuf,
    pub state: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = dir.path().join("keys");
        generate_keys(
            &keys,
            &KeygenOptions {
                root_keys: 1,
                root_threshold: 1,
                root_expires: chrono::Utc::now() + chrono::Duration::days(30),
                consistent_snapshot: true,
            },
        )
        .expect("keygen");
        let repo = dir.path().join("repo");
        let state = dir.path().join("state");
        Fixture {
            dir,
            keys,
            repo,
            state,
        }
    }

    /// Sign `wasm` as `jobs/<name>.wasm` with custom metadata `extra`
    /// (`args`, `env`, `limits`) beside what the publisher computes, the way
    /// `phase publish --job FILE --job-arg ..` does.
    pub fn publish(&self, name: &str, wasm: &[u8], extra: Value) {
        let src = self.dir.path().join(format!("{name}.wasm"));
        std::fs::write(&src, wasm).expect("write module");
        let mut p = Publisher::open(&self.repo, &self.keys).expect("open repo");
        let Value::Object(extra) = extra else {
            panic!("extra custom metadata must be an object")
        };
        p.add_target_with(
            &TargetSpec {
                name: plasmd::job::target_name(name),
                kind: Kind::Job,
                version: "1".into(),
                cmdline: None,
                source: src,
            },
            extra,
        )
        .expect("add job");
        p.commit(chrono::Duration::days(7)).expect("commit");
    }

    /// A read-only cache in the layout of a booted node's `/phase`: the
    /// repository's metadata in `tuf/metadata/`, the trusted root in
    /// `tuf/root.json`, and the named jobs' bytes in `cas/sha256/<2>/<64>`.
    pub fn node_cache(&self, jobs: &[&[u8]]) -> PathBuf {
        let cache = self.dir.path().join("node-cache");
        let meta = cache.join("tuf/metadata");
        std::fs::create_dir_all(&meta).expect("cache dirs");
        for e in std::fs::read_dir(self.repo.join("metadata")).expect("repo metadata") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), meta.join(e.file_name())).expect("copy metadata");
        }
        std::fs::copy(self.keys.join("root.json"), cache.join("tuf/root.json")).expect("root");
        for wasm in jobs {
            let hex = verifier::digest::sha256_hex(wasm);
            let d = cache.join("cas/sha256").join(&hex[..2]);
            std::fs::create_dir_all(&d).expect("cas dir");
            std::fs::write(d.join(&hex), wasm).expect("cas object");
        }
        cache
    }

    /// A refreshed TUF client over the repository directory.
    pub fn updater(&self) -> Updater<DirStorage, DirTransport> {
        let now = chrono::Utc::now();
        let storage = DirStorage::new(self.state.join("tuf")).expect("storage");
        let root = std::fs::read(self.keys.join("root.json")).expect("root.json");
        verifier::install_root(&storage, &root, now).expect("install root");
        let mut up = Updater::new(storage, DirTransport::new(&self.repo), now);
        up.refresh().expect("refresh");
        up
    }

    /// Publish and resolve a job through TUF.
    pub fn job(&self, name: &str, wasm: &[u8], extra: Value) -> Job {
        self.publish(name, wasm, extra);
        Job::fetch(&mut self.updater(), name).expect("fetch verified job")
    }

    pub fn config(&self) -> PlasmConfig {
        let mut c = PlasmConfig::new(&self.state);
        c.hostname = "node-7".into();
        c
    }

    pub fn plasm(&self) -> Plasm {
        Plasm::new(self.config()).expect("plasm")
    }
}

pub fn wat(src: &str) -> Vec<u8> {
    plasmd::assemble(src).expect("test job WAT assembles")
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).expect("job log")).into_owned()
}

/// The demo job, assembled from the committed source.
pub fn hello_wasm() -> Vec<u8> {
    wat(plasmd::HELLO_WAT)
}

/// Run the demo job on `plasm` and check it still works (plasmd keeps
/// running after a job was killed).
pub fn hello_still_runs(fx: &Fixture, plasm: &Plasm, rt: &tokio::runtime::Runtime) {
    let hello = fx.job("hello", &hello_wasm(), serde_json::json!({}));
    let out = rt.block_on(plasm.run(&hello)).expect("run hello");
    let text = log(&out.log);
    assert!(
        text.contains("Hello from Phase WASM on node-7"),
        "greeting missing after an earlier job: {text}"
    );
}

/// A `boot.json` as stage 1 writes it, naming `peers` (stage 1 fetched
/// 5 bytes from each).
pub fn boot_json(peers: &[&str]) -> Vec<u8> {
    handover::BootJson {
        version: handover::BOOT_JSON_VERSION,
        mode: "local".into(),
        channel: "stable".into(),
        cmdline: "phase.stage=target".into(),
        artifacts: vec![],
        tuf: handover::TufVersions::default(),
        peers: peers
            .iter()
            .map(|p| handover::PeerBytes {
                peer: (*p).into(),
                bytes: 5,
                found: Some("mdns".into()),
                dropped: None,
            })
            .collect(),
        steps: vec![],
        identity: None,
        platform: None,
        handover: None,
        measurements: Vec::new(),
    }
    .to_json()
}
