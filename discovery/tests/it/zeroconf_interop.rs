//! Interop with python-zeroconf (PyPI `zeroconf`, in the test venv), both
//! ways, in network namespaces on a bridge:
//! * a service published by python-zeroconf with our TXT format is found by
//!   `phase discover` (and one with another trust root is not listed);
//! * our advertisement is resolved by python-zeroconf's browser, TXT intact.
use super::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("PHASE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/venv"));
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import zeroconf"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python-zeroconf not found in {} (PHASE_VENV): run scripts/deps-check.sh --install",
        venv.display()
    );
    py
}

fn phase_bin() -> PathBuf {
    let bin = std::env::var_os("PHASE_BIN")
        .map(PathBuf::from)
        .expect("PHASE_BIN is not set: build the phase CLI (make host) and point PHASE_BIN at it");
    assert!(bin.is_file(), "PHASE_BIN={} does not exist", bin.display());
    bin
}

const PUBLISH: &str = r#"
import socket, sys, time
from zeroconf import IPVersion, ServiceInfo, Zeroconf
name, ip, port, root, pid, secs = sys.argv[1:7]
zc = Zeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
info = ServiceInfo("_phase._tcp.local.", name + "._phase._tcp.local.",
    addresses=[socket.inet_aton(ip)], port=int(port), server=name + ".local.",
    properties={"v": "1", "id": pid, "root": root, "ts": "9", "ch": "stable", "port": port})
zc.register_service(info)
print("registered", flush=True)
time.sleep(float(secs))
zc.unregister_service(info)
zc.close()
"#;

const BROWSE: &str = r#"
import json, sys, time
from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf
ip, secs = sys.argv[1], float(sys.argv[2])
start = time.monotonic()
zc = Zeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
names = set()
class L(ServiceListener):
    def add_service(self, zc, t, n): names.add(n)
    def update_service(self, zc, t, n): names.add(n)
    def remove_service(self, zc, t, n): pass
ServiceBrowser(zc, "_phase._tcp.local.", L())
result = None
while result is None and time.monotonic() - start < secs:
    for n in list(names):
        info = zc.get_service_info("_phase._tcp.local.", n, timeout=1000)
        if info is not None and info.properties:
            result = {"name": n, "port": info.port, "addresses": info.parsed_addresses(),
                      "txt": {k.decode(): None if v is None else v.decode() for k, v in info.properties.items()},
                      "seconds": time.monotonic() - start}
            break
    time.sleep(0.05)
zc.close()
print(json.dumps(result))
"#;

#[test]
fn phase_discover_finds_a_python_zeroconf_service() {
    let py = venv_python();
    let phase = phase_bin();
    let lan = lan(3, true);
    let good_root = root(1).to_string();
    let other_root = root(2).to_string();
    let mut publishers = Vec::new();
    for (i, name, r, pid) in [
        (1, "py-peer", &good_root, "py-1"),
        (2, "py-stranger", &other_root, "py-2"),
    ] {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lan.nodes[i], "timeout", "30"])
            .arg(&py)
            .args([
                "-c",
                PUBLISH,
                name,
                &lan.ipv4(i).to_string(),
                "8181",
                r,
                pid,
                "20",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python publisher");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(
            line.trim(),
            "registered",
            "python publisher {name} did not register"
        );
        publishers.push(child);
    }
    let start = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &lan.nodes[0], "timeout", "20"])
        .arg(&phase)
        .args([
            "discover",
            "--mdns",
            "--json",
            "--timeout",
            "4",
            "--interface",
            "eth0",
            "--root-key",
            &good_root,
        ])
        .output()
        .expect("run phase discover");
    let wall = start.elapsed();
    for mut p in publishers {
        stop_child(&mut p);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "phase discover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        peers.len(),
        1,
        "want exactly the same-root python peer, got: {stdout}"
    );
    let p = &peers[0];
    assert_eq!(p["how"], "mdns");
    assert_eq!(p["id"], "py-1");
    assert_eq!(p["root"], good_root.as_str());
    assert_eq!(p["channel"], "stable");
    assert_eq!(p["ts"], 9);
    assert_eq!(p["urls"][0], format!("http://{}:8181", lan.ipv4(1)));
    eprintln!(
        "phase discover found py-1 after {} ms (process wall {wall:?})",
        p["first_answer_ms"]
    );
}

#[test]
fn python_zeroconf_resolves_our_advertisement() {
    let py = venv_python();
    let lan = lan(2, true);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut node = lan_nodes(&lan, true).remove(1);
    node.want = 0;
    node.http_port = 8282;
    // Advertise until python is done (it bumps `done` below), at most 30 s.
    let ours = spawn_mdns_node(node, done.clone(), 2);
    let out = Command::new("ip")
        .args(["netns", "exec", &lan.nodes[0], "timeout", "20"])
        .arg(&py)
        .args(["-c", BROWSE, &lan.ipv4(0).to_string(), "10"])
        .output()
        .expect("run python browser");
    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    join("node-1", ours);
    assert!(
        out.status.success(),
        "python browser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python printed JSON");
    assert!(
        !v.is_null(),
        "python-zeroconf did not resolve our service within 10 s"
    );
    assert_eq!(v["name"], "phase-node-1._phase._tcp.local.");
    assert_eq!(v["port"], 8282);
    assert!(
        v["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == &lan.ipv4(1).to_string()),
        "addresses {}",
        v["addresses"]
    );
    let txt = &v["txt"];
    assert_eq!(txt["v"], "1");
    assert_eq!(txt["id"], "node-1");
    assert_eq!(txt["root"], root(1).to_string().as_str());
    assert_eq!(txt["ts"], "7");
    assert_eq!(txt["ch"], "stable");
    assert_eq!(txt["port"], "8282");
    eprintln!(
        "python-zeroconf resolved our service in {:.3} s",
        v["seconds"].as_f64().unwrap()
    );
}
