//! Someone with write access to a shared cache plants symbolic links: the
//! partial file of a download points at a file outside the cache, and a
//! CAS object name points at another outside file. The writer never writes
//! or truncates through the link (the outside file is unchanged, the
//! object is a regular file in the cache), and the server answers 404 for
//! the linked object instead of the outside file's contents; `gc` removes
//! the link, not what it points at.
use super::common;

use std::collections::HashSet;

use common::*;
use fetcher::{Cas, Fetcher, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside-secret");
    let secret = b"outside the cache; must stay as it is".to_vec();
    std::fs::write(&outside, &secret).unwrap();

    // 1. A symlinked partial file.
    let (data, spec) = object(3 << 20, 1 << 20, 5);
    let good = Peer::serve_cache(&seeded_cache(tmp.path(), "good", &data));
    let client_dir = tmp.path().join("client");
    let cas = Cas::open(&client_dir).unwrap();
    let hex = spec.sha256.to_hex();
    let shard = client_dir.join(format!("cas/sha256/{}", &hex[..2]));
    std::fs::create_dir_all(&shard).unwrap();
    std::os::unix::fs::symlink(&outside, shard.join(format!("{hex}.partial"))).unwrap();
    std::os::unix::fs::symlink(&outside, shard.join(format!("{hex}.partial.json.tmp"))).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let report = f
        .fetch(&spec, vec![good.source(&spec)], None)
        .await
        .expect("fetch");
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        secret,
        "written through a link"
    );
    let meta = std::fs::symlink_metadata(&report.path).unwrap();
    assert!(meta.file_type().is_file(), "the object is a link: {meta:?}");
    assert_eq!(std::fs::read(&report.path).unwrap(), data);

    // 2. A symlinked CAS object, served.
    let served = tmp.path().join("served");
    let scas = Cas::open(&served).unwrap();
    let fake = fetcher::Sha256Digest::of(b"any object name");
    let fhex = fake.to_hex();
    let fshard = served.join(format!("cas/sha256/{}", &fhex[..2]));
    std::fs::create_dir_all(&fshard).unwrap();
    std::os::unix::fs::symlink(&outside, fshard.join(&fhex)).unwrap();
    // A linked shard directory too.
    let outside_dir = tmp.path().join("outside-dir");
    let other = fetcher::Sha256Digest::of(b"another name");
    let ohex = other.to_hex();
    std::fs::create_dir_all(&outside_dir).unwrap();
    std::fs::write(outside_dir.join(&ohex), &secret).unwrap();
    std::os::unix::fs::symlink(
        &outside_dir,
        served.join(format!("cas/sha256/{}", &ohex[..2])),
    )
    .unwrap();
    let server = Peer::start(ServerConfig::new(&served));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for h in [&fhex, &ohex] {
        for tail in ["", "/chunks"] {
            let r = http
                .get(format!("{}cas/sha256/{h}{tail}", server.url()))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.bytes().await.unwrap();
            assert_eq!(
                status,
                404,
                "{h}{tail}: served {:?}",
                String::from_utf8_lossy(&body)
            );
            assert!(!body.windows(secret.len()).any(|w| w == secret));
        }
    }
    assert!(!scas.contains(&fake));

    // 3. gc removes the link, keeps the outside file, never walks the
    // linked shard.
    let r = scas.gc(&HashSet::new()).unwrap();
    assert!(
        std::fs::symlink_metadata(fshard.join(&fhex)).is_err(),
        "{r:?}"
    );
    assert!(std::fs::read(&outside).unwrap() == secret);
    assert!(std::fs::read(outside_dir.join(&ohex)).unwrap() == secret);
}
