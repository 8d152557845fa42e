//! The cache on a tiny tmpfs (mounted by the test, unmounted on drop): an
//! object that does not fit fails with a clear "not enough space" error,
//! earlier objects stay intact, nothing appears at the final name, and the
//! same fetch succeeds after space is freed.
use super::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fetcher::{Cas, CasError, FetchError, Fetcher};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount (the fault tests run as root)");
        assert!(
            st.success(),
            "mounting a tmpfs on {} failed (root needed)",
            dir.display()
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_space_is_a_clean_error_and_recoverable() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_data, a_spec) = object(5 << 20, 1 << 20, 101);
    let (b_data, b_spec) = object(6 << 20, 1 << 20, 102);
    let peer_dir = seeded_cache(tmp.path(), "peer", &a_data);
    Cas::open(&peer_dir).unwrap().insert_bytes(&b_data).unwrap();
    let peer = Peer::serve_cache(&peer_dir);

    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let _fs = Tmpfs::mount(&mnt, "8m");
    let cas = Cas::open(&mnt).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    f.fetch(&a_spec, vec![peer.source(&a_spec)], None)
        .await
        .expect("first object fits");

    let err = f
        .fetch(&b_spec, vec![peer.source(&b_spec)], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Cas(_, CasError::NoSpace { .. })),
        "expected a no-space error, got: {err}"
    );
    let chain = format!("{:#}", anyhow_like(&err));
    assert!(chain.contains("not enough space"), "{chain}");
    assert!(!cas.contains(&b_spec.sha256));
    assert_eq!(
        std::fs::read(cas.object_path(&a_spec.sha256)).unwrap(),
        a_data,
        "earlier object intact"
    );
    assert!(files_ending(&mnt, ".partial").is_empty());

    // Free space (gc keeps nothing), then the same fetch succeeds.
    cas.gc(&Default::default()).unwrap();
    let r = f
        .fetch(&b_spec, vec![peer.source(&b_spec)], None)
        .await
        .expect("re-run after freeing space");
    assert_eq!(std::fs::read(&r.path).unwrap(), b_data);
}

/// The error chain as one line, like the CLI prints it.
fn anyhow_like(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
