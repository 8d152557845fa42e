//! Shared by the external-signer tests: keys made by the real `openssl`
//! binary and the `--signer` commands that drive it, one per TUF scheme.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::trust_support::{ok, s};

/// A TUF key type/scheme as openssl makes and signs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    RsaPss,
    RsaPkcs1,
}

impl KeyType {
    pub const ALL: [KeyType; 5] = [
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::RsaPss,
        KeyType::RsaPkcs1,
    ];

    pub fn scheme(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyType::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyType::RsaPss => "rsassa-pss-sha256",
            KeyType::RsaPkcs1 => "rsa-pkcs1v15-sha256",
        }
    }

    fn genpkey_args(self) -> Vec<&'static str> {
        match self {
            KeyType::Ed25519 => vec!["-algorithm", "ed25519"],
            KeyType::EcdsaP256 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::EcdsaP384 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyType::RsaPss | KeyType::RsaPkcs1 => {
                vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
            }
        }
    }
}

/// An openssl-made key pair and how to sign with it.
#[derive(Debug, Clone)]
pub struct OpensslKey {
    pub kind: KeyType,
    pub private: PathBuf,
    /// PEM SubjectPublicKeyInfo.
    pub public_pem: PathBuf,
    /// The public key as given to phase: the PEM, or for RSA PKCS#1 v1.5 the
    /// TUF key JSON written by `phase keygen --public-key --scheme`.
    pub public: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl binary is needed by the external-signer tests (apt install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OpensslKey {
    /// Make `dir/NAME.pem` and `dir/NAME.pub.pem` with openssl.
    pub fn generate(dir: &Path, name: &str, kind: KeyType) -> OpensslKey {
        let private = dir.join(format!("{name}.pem"));
        let public_pem = dir.join(format!("{name}.pub.pem"));
        let mut args = vec!["genpkey"];
        args.extend(kind.genpkey_args());
        args.extend(["-out", s(&private)]);
        openssl(&args);
        openssl(&[
            "pkey",
            "-in",
            s(&private),
            "-pubout",
            "-out",
            s(&public_pem),
        ]);
        let public = if kind == KeyType::RsaPkcs1 {
            let json = dir.join(format!("{name}.pub.json"));
            ok(&[
                "keygen",
                "--public-key",
                s(&public_pem),
                "--scheme",
                kind.scheme(),
                "--out",
                s(&json),
            ]);
            json
        } else {
            public_pem.clone()
        };
        OpensslKey {
            kind,
            private,
            public_pem,
            public,
        }
    }

    /// The openssl command that signs stdin (or `$PHASE_SIGN_INPUT`) and
    /// prints the raw signature, as the docs show it.
    pub fn command(&self) -> String {
        let k = s(&self.private);
        match self.kind {
            // Ed25519 signs the message itself in one shot; openssl 3.0
            // needs it in a file for that.
            KeyType::Ed25519 => {
                format!("openssl pkeyutl -sign -rawin -inkey '{k}' -in \"$PHASE_SIGN_INPUT\"")
            }
            KeyType::EcdsaP256 => format!("openssl dgst -sha256 -sign '{k}'"),
            KeyType::EcdsaP384 => format!("openssl dgst -sha384 -sign '{k}'"),
            KeyType::RsaPss => format!(
                "openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest -sign '{k}'"
            ),
            KeyType::RsaPkcs1 => format!("openssl dgst -sha256 -sign '{k}'"),
        }
    }

    /// `ROLE=PUBKEY:COMMAND` for `--signer`.
    pub fn signer(&self, role: &str) -> String {
        format!("{role}={}:{}", s(&self.public), self.command())
    }

    /// `ROLE=PUBKEY:COMMAND` with another command (bad-signer scenarios).
    pub fn signer_with(&self, role: &str, command: &str) -> String {
        format!("{role}={}:{command}", s(&self.public))
    }
}

/// The key id of the key in `file` (PEM or TUF JSON) as phase computes it.
pub fn key_id(public: &Path) -> String {
    let key = verifier::publish::read_public_key(public).expect("public key");
    verifier::crypto::key_id(&key).expect("key id")
}

/// Every file under `dir` with its bytes, sorted (to show nothing changed).
pub fn snapshot_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// A repository whose timestamp key is the openssl key `ts` (rotated in
/// with `--new-key`), published once with it through `--signer`.
pub fn repo_with_external_timestamp(dir: &Path, ts: &OpensslKey) -> (PathBuf, PathBuf) {
    let keys = dir.join("keys");
    let repo = dir.join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    ok(&[
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "timestamp",
        "--new-key",
        s(&ts.public),
    ]);
    std::fs::write(dir.join("vmlinuz"), b"kernel v1").unwrap();
    publish(
        &keys,
        &repo,
        &dir.join("vmlinuz"),
        &[&ts.signer("timestamp")],
    );
    (keys, repo)
}

/// `phase publish` of one kernel with `--signer`s; requires success.
pub fn publish(keys: &Path, repo: &Path, kernel: &Path, signers: &[&str]) -> String {
    let mut args = vec![
        "publish",
        "--repo",
        s(repo),
        "--keys",
        s(keys),
        "--kernel",
        s(kernel),
    ];
    for sg in signers {
        args.extend(["--signer", sg]);
    }
    ok(&args)
}

/// The same publish arguments, for a run expected to fail.
pub fn publish_args<'a>(
    keys: &'a Path,
    repo: &'a Path,
    kernel: &'a Path,
    signer: &'a str,
) -> Vec<&'a str> {
    vec![
        "publish",
        "--repo",
        s(repo),
        "--keys",
        s(keys),
        "--kernel",
        s(kernel),
        "--signer",
        signer,
    ]
}

/// `phase verify --json` of `repo` from `keys/1.root.json`.
pub fn verify(keys: &Path, repo: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&[
        "verify",
        "--repo",
        s(repo),
        "--root",
        s(&keys.join("1.root.json")),
        "--json",
    ]))
    .expect("verify --json")
}

/// Assert `stderr` is one line naming `role` and `keyid`, and return it.
pub fn one_line_naming(stderr: &str, role: &str, keyid: &str) -> String {
    let line = stderr.trim_end();
    assert!(
        !line.contains('\n'),
        "error is more than one line: {stderr}"
    );
    assert!(line.contains(role), "error does not name {role}: {line}");
    assert!(
        line.contains(keyid),
        "error does not name key {keyid}: {line}"
    );
    line.to_string()
}
