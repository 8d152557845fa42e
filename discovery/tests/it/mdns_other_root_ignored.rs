//! Two fleets share one LAN: a peer announcing another trust root is seen
//! (its instance resolves) but never yielded, in either direction.
use super::common;

use std::time::Duration;

use common::*;
use discovery::mdns::Rejection;

#[test]
fn peer_with_another_trust_root_is_ignored() {
    let lan = lan(3, true);
    let mut nodes = lan_nodes(&lan, true);
    nodes[2].root = root(2);
    nodes[2].id = "stranger".into();
    for n in &mut nodes {
        // Browse for the whole window, so the stranger has every chance to
        // be (wrongly) accepted.
        n.want = usize::MAX;
        n.deadline = Duration::from_secs(4);
    }
    let seen = run_mdns_nodes(nodes);
    for s in &seen[..2] {
        let ids: Vec<_> = s.peers.iter().map(|p| p.id.as_str()).collect();
        let other = if s.id == "node-0" { "node-1" } else { "node-0" };
        assert_eq!(ids, vec![other], "{} found {ids:?}", s.id);
        assert!(
            s.stats
                .rejections
                .iter()
                .any(|(name, why)| name.starts_with("phase-stranger.")
                    && *why == Rejection::WrongRoot(root(2))),
            "{} did not see and reject the stranger: {:?}",
            s.id,
            s.stats
        );
    }
    let stranger = &seen[2];
    assert!(
        stranger.peers.is_empty(),
        "stranger found {:?}",
        stranger.peers
    );
    let rejected_roots = stranger
        .stats
        .rejections
        .iter()
        .filter(|(_, why)| *why == Rejection::WrongRoot(root(1)))
        .count();
    assert!(
        rejected_roots >= 2,
        "stranger rejections: {:?}",
        stranger.stats
    );
}
