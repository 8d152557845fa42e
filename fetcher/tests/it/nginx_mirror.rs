//! Any static web server is a mirror: nginx (Debian's, with a temporary
//! config on 127.0.0.1) serves a repository directory, and the fetch engine
//! downloads targets from it by their consistent-snapshot path, alone and
//! together with a Phase peer.
use super::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fetcher::{Cas, Fetcher, Peer as PeerUrl};

struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(root: &Path, work: &Path) -> Nginx {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is a test prerequisite (Debian package nginx; make deps installs it)");
    let port = free_port();
    let conf = work.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\nuser root;\npid {w}/nginx.pid;\nerror_log {w}/error.log warn;\ndaemon off;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  client_body_temp_path {w}/body;\n  proxy_temp_path {w}/proxy;\n\
               fastcgi_temp_path {w}/fcgi;\n  uwsgi_temp_path {w}/uwsgi;\n  scgi_temp_path {w}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; location /repo/ {{ alias {root}/; }} }}\n}}\n",
            w = work.display(),
            root = root.display(),
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["-e", &format!("{}/error.log", work.display()), "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { child, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_a_repository_as_a_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(20 << 20, 1 << 20, 81);
    // A repository layout: targets/<dir>/<sha256>.<name>, metadata/.
    let repo = tmp.path().join("repo");
    let rel = format!("stable/x86_64/{}.rootfs", spec.sha256);
    std::fs::create_dir_all(repo.join("targets/stable/x86_64")).unwrap();
    std::fs::create_dir_all(repo.join("metadata")).unwrap();
    std::fs::write(repo.join("targets").join(&rel), &data).unwrap();
    std::fs::write(repo.join("metadata/timestamp.json"), b"{}").unwrap();
    let nginx = start_nginx(&repo, tmp.path());
    let mirror = PeerUrl::parse(&format!("http://127.0.0.1:{}/repo/", nginx.port)).unwrap();
    assert!(matches!(mirror, PeerUrl::Mirror(_)));

    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let r = f
        .fetch(
            &spec,
            vec![mirror.source(&spec.sha256, &rel).unwrap()],
            None,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), data);
    assert_eq!(r.peers[0].bytes, spec.length);

    // nginx and a Phase peer together.
    let phase_peer = Peer::serve_cache(&seeded_cache(tmp.path(), "peer", &data));
    let cas2 = Cas::open(tmp.path().join("client2")).unwrap();
    let f2 = Fetcher::new(cas2, quick_options()).unwrap();
    let pp = PeerUrl::parse(phase_peer.url().as_str()).unwrap();
    let r2 = f2
        .fetch(
            &spec,
            vec![
                mirror.source(&spec.sha256, &rel).unwrap(),
                pp.source(&spec.sha256, &rel).unwrap(),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&r2.path).unwrap(), data);
    assert_eq!(r2.peers.iter().map(|p| p.bytes).sum::<u64>(), spec.length);

    // The metadata transport reads the mirror too.
    let t = fetcher::PeerTransport::new(
        f.client().clone(),
        tokio::runtime::Handle::current(),
        vec![mirror],
        None,
    );
    let got = tokio::task::spawn_blocking(move || {
        verifier::Transport::fetch_metadata(&t, "timestamp.json", 100)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, b"{}");
}
