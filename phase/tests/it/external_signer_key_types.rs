//! Every supported key type through an external signer driven by the real
//! openssl binary: Ed25519 (`openssl pkeyutl -sign -rawin`), ECDSA P-256
//! and P-384 (`openssl dgst -sha256|-sha384 -sign`, DER), RSA-PSS and RSA
//! PKCS#1 v1.5 (`openssl dgst -sha256 [-sigopt rsa_padding_mode:pss] -sign`).
//! All four roles move to openssl keys of one type (root first, signed by
//! the old local root key and the new external one), a publish signs
//! targets, snapshot and timestamp through `--signer`, and `phase verify`
//! follows the chain from root v1.
use super::signer_support;
use super::trust_support;

use signer_support::*;
use trust_support::*;

fn all_roles_external(kind: KeyType) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let keys = dir.join("keys");
    let repo = dir.join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    let key = |role: &str| OpensslKey::generate(dir, role, kind);
    let root = key("root");
    let others = [
        ("targets", key("targets")),
        ("snapshot", key("snapshot")),
        ("timestamp", key("timestamp")),
    ];

    // Root: signed by the local v1 root key and the new external key.
    ok(&[
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "root",
        "--new-key",
        s(&root.public),
        "--signer",
        &root.signer("root"),
    ]);
    // Without the root signer, no further rotation is possible.
    let err = fails(&[
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "targets",
        "--new-key",
        s(&others[0].1.public),
    ]);
    assert!(err.contains(&key_id(&root.public)), "{err}");
    for (role, k) in &others {
        ok(&[
            "rotate",
            "--keys",
            s(&keys),
            "--role",
            role,
            "--new-key",
            s(&k.public),
            "--signer",
            &root.signer("root"),
        ]);
    }
    let root5: serde_json::Value =
        serde_json::from_slice(&std::fs::read(keys.join("5.root.json")).unwrap()).unwrap();
    for (role, k) in std::iter::once(("root", &root)).chain(others.iter().map(|(r, k)| (*r, k))) {
        let id = key_id(&k.public);
        assert_eq!(
            root5["signed"]["roles"][role]["keyids"],
            serde_json::json!([id])
        );
        assert_eq!(
            root5["signed"]["keys"][&id]["scheme"],
            kind.scheme(),
            "{role}"
        );
    }

    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, b"kernel signed elsewhere").unwrap();
    let signers: Vec<String> = others.iter().map(|(r, k)| k.signer(r)).collect();
    let signer_refs: Vec<&str> = signers.iter().map(String::as_str).collect();
    publish(&keys, &repo, &kernel, &signer_refs);
    let v = verify(&keys, &repo);
    assert_eq!(v["root_version"], 5, "{v}");
    assert_eq!(v["timestamp_version"], 1, "{v}");
    assert_eq!(v["targets"][0]["downloaded"], true, "{v}");
    assert_eq!(
        v["targets"][0]["sha256"],
        verifier::digest::sha256_hex(b"kernel signed elsewhere").as_str()
    );
    // No private key file of any current role is on this machine.
    let local: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "key"))
        .collect();
    assert!(local.is_empty(), "{local:?}");
}

#[test]
fn ed25519_openssl_pkeyutl_signs_every_role() {
    all_roles_external(KeyType::Ed25519);
}

#[test]
fn ecdsa_p256_openssl_signs_every_role() {
    all_roles_external(KeyType::EcdsaP256);
}

#[test]
fn ecdsa_p384_openssl_signs_every_role() {
    all_roles_external(KeyType::EcdsaP384);
}

#[test]
fn rsa_pss_openssl_signs_every_role() {
    all_roles_external(KeyType::RsaPss);
}

#[test]
fn rsa_pkcs1v15_openssl_signs_every_role() {
    all_roles_external(KeyType::RsaPkcs1);
}

#[test]
fn public_key_import_names_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // An RSA key under 2048 bits is refused.
    let short = dir.join("short.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            s(&short),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let short_pub = dir.join("short.pub.pem");
    assert!(std::process::Command::new("openssl")
        .args(["pkey", "-in", s(&short), "-pubout", "-out", s(&short_pub)])
        .status()
        .unwrap()
        .success());
    let err = fails(&[
        "keygen",
        "--public-key",
        s(&short_pub),
        "--out",
        s(&dir.join("x.json")),
    ]);
    assert!(err.contains("1024 bits") && err.contains("2048"), "{err}");
    // An ECDSA key with a P-256 scheme on a P-384 key is refused.
    let p384 = OpensslKey::generate(dir, "p384", KeyType::EcdsaP384);
    let err = fails(&[
        "keygen",
        "--public-key",
        s(&p384.public_pem),
        "--scheme",
        "ecdsa-sha2-nistp256",
        "--out",
        s(&dir.join("y.json")),
    ]);
    assert!(err.contains("ecdsa-sha2-nistp384"), "{err}");
    // A private key given as the public key is refused.
    let err = fails(&[
        "keygen",
        "--public-key",
        s(&p384.private),
        "--out",
        s(&dir.join("z.json")),
    ]);
    assert!(err.contains("PUBLIC KEY"), "{err}");
    // Malformed PEM.
    std::fs::write(
        dir.join("bad.pem"),
        "-----BEGIN PUBLIC KEY-----\nAAAA!!\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let err = fails(&[
        "keygen",
        "--public-key",
        s(&dir.join("bad.pem")),
        "--out",
        s(&dir.join("w.json")),
    ]);
    assert!(err.contains("bad.pem"), "{err}");
    // The imported TUF key matches what securesystemslib writes for P-256.
    let p256 = OpensslKey::generate(dir, "p256", KeyType::EcdsaP256);
    let json = dir.join("p256.pub.json");
    ok(&[
        "keygen",
        "--public-key",
        s(&p256.public_pem),
        "--out",
        s(&json),
    ]);
    let k: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(k["keytype"], "ecdsa");
    assert_eq!(k["scheme"], "ecdsa-sha2-nistp256");
    assert_eq!(
        k["keyval"]["public"].as_str().unwrap(),
        std::fs::read_to_string(&p256.public_pem).unwrap()
    );
}
