//! A flood from many addresses (20 loopback addresses, 15 connections
//! each: under the per-address limit, 300 in all, more than the server's
//! 256 slots), every socket idle and reconnecting when closed. An honest
//! request from another address is still answered within 2 s: with every
//! slot taken, a new connection takes the slot of the slowest one.
use super::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use fetcher::ServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_slots_taken_from_many_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(1 << 20, 1 << 20, 4);
    let server = Peer::start(ServerConfig::new(seeded_cache(tmp.path(), "srv", &data)));
    let addr = server.addr;
    let hex = spec.sha256.to_hex();
    let flood_until = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for a in 0..20u8 {
        for _ in 0..15 {
            let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3 + a));
            tasks.push(tokio::spawn(async move {
                // Bounded: at most 50 connections per task, until the end
                // of the flood.
                for _ in 0..50 {
                    if Instant::now() >= flood_until {
                        return;
                    }
                    let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
                        return;
                    };
                    if sock.bind(SocketAddr::new(local, 0)).is_err() {
                        return;
                    }
                    let Ok(s) = sock.connect(addr).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let mut b = [0u8; 1];
                    let left = flood_until.saturating_duration_since(Instant::now());
                    let _ = tokio::time::timeout(left, s.peek(&mut b)).await;
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let honest = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            honest
                .get(format!("http://{addr}/cas/sha256/{hex}/chunks"))
                .send(),
        )
        .await
        .expect("no answer within 10 s")
        .expect("request");
        assert_eq!(r.status(), 200);
        eprintln!("honest request: {:?}", t0.elapsed());
        worst = worst.max(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    eprintln!("honest request with all 256 slots taken from 20 addresses: worst {worst:?}");
    assert!(
        worst < Duration::from_secs(2),
        "honest request took {worst:?}"
    );
    for t in tasks {
        t.abort();
    }
}
