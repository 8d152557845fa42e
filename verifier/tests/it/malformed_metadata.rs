//! Random bytes, random JSON and random mutations of valid metadata never
//! panic the verifier: they are refused with a typed error.
use super::support;
use proptest::prelude::*;
use support::*;
use verifier::TrustedSet;

fn offer_everywhere(bytes: &[u8]) {
    let repo = Repo::new();
    let _ = TrustedSet::new(bytes, now());
    let mut set = TrustedSet::new(&repo.root_v1(), now()).unwrap();
    let _ = set.update_root(bytes);
    let _ = set.update_timestamp(bytes);
    let mut set = TrustedSet::new(&repo.root_v1(), now()).unwrap();
    set.update_timestamp(&repo.served("timestamp.json"))
        .unwrap();
    let _ = set.update_snapshot(bytes, false);
    let _ = set.update_snapshot(bytes, true);
    let mut set2 = TrustedSet::new(&repo.root_v1(), now()).unwrap();
    set2.update_timestamp(&repo.served("timestamp.json"))
        .unwrap();
    set2.update_snapshot(&repo.served("1.snapshot.json"), false)
        .unwrap();
    let _ = set2.update_targets("targets", "root", bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        offer_everywhere(&bytes);
    }

    #[test]
    fn mutated_metadata_never_panics(pos in any::<prop::sample::Index>(), byte in any::<u8>(), which in 0usize..4) {
        let repo = Repo::new();
        let mut b = match which {
            0 => repo.root_v1(),
            1 => repo.served("timestamp.json"),
            2 => repo.served("1.snapshot.json"),
            _ => repo.served("1.targets.json"),
        };
        let i = pos.index(b.len());
        b[i] = byte;
        offer_everywhere(&b);
    }

    #[test]
    fn random_json_values_never_panic(v in arb_json()) {
        let doc = serde_json::json!({"signatures": [], "signed": v});
        offer_everywhere(&serde_json::to_vec(&doc).unwrap());
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-z_]{0,8}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("root")),
        Just(serde_json::Value::from("2030-01-01T00:00:00Z")),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("_type".to_string()),
                    Just("version".to_string()),
                    Just("spec_version".to_string()),
                    Just("expires".to_string()),
                    Just("keys".to_string()),
                    Just("roles".to_string()),
                    Just("meta".to_string()),
                    Just("targets".to_string()),
                    Just("threshold".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
