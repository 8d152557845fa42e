//! A small TUF repository with fixed keys (deterministic Ed25519
//! signatures), for the verify-path target: a trusted root and the signed
//! timestamp, snapshot, targets and one delegated role that go with it.
//! Built once per process; `write_seeds` stores it as corpus seeds.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use verifier::metadata::{
    DelegatedRole, Delegations, Expires, MetaFile, RoleKeys, Root, Snapshot, TargetFile, Targets,
    Timestamp,
};
use verifier::publish::sign_metadata;
use verifier::SigningKey;

/// The fixed "now" of every update.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed([n; 32])
}

fn sha256_hex(b: &[u8]) -> String {
    verifier::digest::sha256_hex(b)
}

/// Signs metadata with the fixture key `k`.
fn sign<T: serde::Serialize>(signed: &T, k: u8) -> Vec<u8> {
    // The fixture's metadata is strings and integers: it always has a
    // canonical form, so signing cannot fail.
    sign_metadata(signed, &[&key(k)]).expect("fixture metadata signs")
}

fn meta(version: u64, bytes: &[u8]) -> MetaFile {
    MetaFile {
        version,
        length: Some(bytes.len() as u64),
        hashes: Some([("sha256".to_owned(), sha256_hex(bytes))].into()),
    }
}

/// The signed files, by stage.
#[derive(Debug)]
pub struct Fixture {
    pub root: Vec<u8>,
    /// A version 2 root signed by the version 1 keys (a valid rotation).
    pub root2: Vec<u8>,
    pub timestamp: Vec<u8>,
    pub snapshot: Vec<u8>,
    pub targets: Vec<u8>,
    /// The delegated role `apps`, delegated by `targets`.
    pub apps: Vec<u8>,
}

impl Fixture {
    pub fn build() -> Fixture {
        let expires = Expires(now() + chrono::Duration::days(365));
        let mut keys = BTreeMap::new();
        let mut roles = BTreeMap::new();
        for (i, role) in ["root", "timestamp", "snapshot", "targets"]
            .iter()
            .enumerate()
        {
            let k = key(i as u8 + 1);
            keys.insert(k.key_id(), k.public_key());
            roles.insert(
                (*role).to_owned(),
                RoleKeys {
                    keyids: vec![k.key_id()],
                    threshold: 1,
                },
            );
        }
        let mut root = Root {
            type_: "root".into(),
            spec_version: "1.0.31".into(),
            version: 1,
            expires,
            consistent_snapshot: true,
            keys,
            roles,
        };
        let root1 = sign(&root, 1);
        root.version = 2;
        let root2 = sign(&root, 1);

        let apps_key = key(9);
        let apps = Targets {
            type_: "targets".into(),
            spec_version: "1.0.31".into(),
            version: 1,
            expires,
            targets: [(
                "apps/hello.wasm".to_owned(),
                TargetFile {
                    length: 5,
                    hashes: [("sha256".to_owned(), sha256_hex(b"hello"))].into(),
                    custom: None,
                },
            )]
            .into(),
            delegations: None,
        };
        let apps_bytes = sign(&apps, 9);
        let targets = Targets {
            type_: "targets".into(),
            spec_version: "1.0.31".into(),
            version: 1,
            expires,
            targets: [(
                "stable/x86_64/kernel".to_owned(),
                TargetFile {
                    length: 6,
                    hashes: [("sha256".to_owned(), sha256_hex(b"kernel"))].into(),
                    custom: Some(serde_json::json!({"phase": {"kind": "kernel", "version": "1"}})),
                },
            )]
            .into(),
            delegations: Some(Delegations {
                keys: [(apps_key.key_id(), apps_key.public_key())].into(),
                roles: vec![DelegatedRole {
                    name: "apps".into(),
                    keyids: vec![apps_key.key_id()],
                    threshold: 1,
                    terminating: true,
                    paths: Some(vec!["apps/*".into(), "apps/*/[a-z]?*.wasm".into()]),
                    path_hash_prefixes: None,
                }],
            }),
        };
        let targets_bytes = sign(&targets, 4);
        let snapshot = Snapshot {
            type_: "snapshot".into(),
            spec_version: "1.0.31".into(),
            version: 1,
            expires,
            meta: [
                ("targets.json".to_owned(), meta(1, &targets_bytes)),
                ("apps.json".to_owned(), meta(1, &apps_bytes)),
            ]
            .into(),
        };
        let snapshot_bytes = sign(&snapshot, 3);
        let timestamp = Timestamp {
            type_: "timestamp".into(),
            spec_version: "1.0.31".into(),
            version: 1,
            expires,
            meta: [("snapshot.json".to_owned(), meta(1, &snapshot_bytes))].into(),
        };
        let timestamp_bytes = sign(&timestamp, 2);
        Fixture {
            root: root1,
            root2,
            timestamp: timestamp_bytes,
            snapshot: snapshot_bytes,
            targets: targets_bytes,
            apps: apps_bytes,
        }
    }

    /// The files as `(name, bytes)`.
    pub fn files(&self) -> [(&'static str, &[u8]); 6] {
        [
            ("1.root.json", &self.root),
            ("2.root.json", &self.root2),
            ("timestamp.json", &self.timestamp),
            ("1.snapshot.json", &self.snapshot),
            ("1.targets.json", &self.targets),
            ("1.apps.json", &self.apps),
        ]
    }
}

/// Writes `<prefix byte><file>` seeds for the verify target into `dir`: the
/// prefix selects the stage the bytes are offered at (see tuf_verify.rs).
pub fn write_seeds(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let f = Fixture::build();
    for (stage, (name, bytes)) in f.files().iter().enumerate() {
        let mut seed = vec![stage as u8];
        seed.extend_from_slice(bytes);
        std::fs::write(dir.join(format!("fixture-{name}")), seed)?;
    }
    Ok(())
}
