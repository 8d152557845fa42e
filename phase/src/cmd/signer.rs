//! External signers: TUF keys held outside this machine (hardware tokens,
//! PKCS#11 HSMs, cloud KMS) sign through a command. This is the I/O edge of
//! signing; the verifier crate only sees [`MetadataSigner`] and checks every
//! signature against the declared public key before it is kept.
//!
//! Contract (docs/trust.md "External signers"):
//! * `--signer ROLE=PUBKEY:COMMAND`: ROLE is root, targets, snapshot or
//!   timestamp; PUBKEY is a PEM SubjectPublicKeyInfo or a TUF key JSON file
//!   (`phase keygen --public-key`); COMMAND runs with `/bin/sh -c`.
//! * The command reads the canonical JSON bytes of the `signed` object on
//!   stdin (the message itself, not a digest) and prints the signature on
//!   stdout: raw bytes by default (`openssl dgst -sign`, `openssl pkeyutl`),
//!   or hex / base64 text with `--signer-format`. ECDSA signatures are DER
//!   (as TUF stores them, hex-encoded); Ed25519 64 bytes; RSA the
//!   modulus-sized block.
//! * It gets `PHASE_SIGN_ROLE`, `PHASE_SIGN_KEYID` and `PHASE_SIGN_INPUT`
//!   (a private temporary file holding the same bytes as stdin, for tools
//!   that need a file, such as `openssl pkeyutl -rawin` for Ed25519 or
//!   `pkcs11-tool --input-file`) in its environment,
//!   runs in its own process group, and is killed (the whole group) after
//!   `--signer-timeout` (default 60 s). A non-zero exit, an empty output, an
//!   output that does not decode, or a signature that does not verify is an
//!   error naming the role and key id.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use verifier::metadata::Key;
use verifier::publish::{read_public_key, MetadataSigner};

use super::common::duration_arg;

/// Largest signature output read from a signer (RSA-16384 is 2 KiB raw).
const MAX_OUTPUT: u64 = 64 << 10;
/// Poll interval while waiting for the signer.
const POLL: Duration = Duration::from_millis(20);

/// How the signer prints the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Raw signature bytes (openssl dgst -sign, openssl pkeyutl -sign).
    Raw,
    /// Hex text (whitespace around it ignored).
    Hex,
    /// Standard base64 text (cloud KMS CLIs; whitespace ignored).
    Base64,
}

/// The signer options shared by publish, rotate and sign.
#[derive(Debug, Clone, clap::Args)]
pub struct SignerArgs {
    /// External signer ROLE=PUBKEY:COMMAND (repeatable): COMMAND reads the
    /// canonical bytes on stdin and prints the signature on stdout; PUBKEY
    /// is its PEM public key or TUF key JSON. Example:
    /// --signer 'timestamp=ts.pub.pem:openssl dgst -sha256 -sign ts.pem'
    #[arg(long = "signer", value_name = "ROLE=PUBKEY:COMMAND")]
    pub signers: Vec<String>,
    /// Output format of every --signer command.
    #[arg(long, value_enum, default_value = "raw")]
    pub signer_format: Format,
    /// How long a --signer command may run before it is killed (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = duration_arg)]
    pub signer_timeout: chrono::Duration,
}

impl SignerArgs {
    /// The external signers asked for.
    pub fn load(&self) -> anyhow::Result<Vec<Box<dyn MetadataSigner>>> {
        let timeout = self
            .signer_timeout
            .to_std()
            .ok()
            .filter(|d| !d.is_zero())
            .context("--signer-timeout must be positive")?;
        let mut out: Vec<Box<dyn MetadataSigner>> = Vec::new();
        for spec in &self.signers {
            out.push(Box::new(ExternalSigner::parse(
                spec,
                self.signer_format,
                timeout,
            )?));
        }
        Ok(out)
    }
}

/// A key whose private half is driven by a command.
#[derive(Debug)]
pub struct ExternalSigner {
    role: String,
    key: Key,
    keyid: String,
    command: String,
    format: Format,
    timeout: Duration,
}

impl ExternalSigner {
    /// Parse `ROLE=PUBKEY:COMMAND` and read the public key.
    pub fn parse(spec: &str, format: Format, timeout: Duration) -> anyhow::Result<Self> {
        let (role, rest) = spec
            .split_once('=')
            .with_context(|| format!("--signer {spec:?} must be ROLE=PUBKEY:COMMAND"))?;
        if !["root", "targets", "snapshot", "timestamp"].contains(&role) {
            anyhow::bail!(
                "--signer {spec:?}: role {role:?} is not root, targets, snapshot or timestamp"
            );
        }
        let (pubkey, command) = rest
            .split_once(':')
            .with_context(|| format!("--signer {spec:?} must be ROLE=PUBKEY:COMMAND"))?;
        if command.trim().is_empty() {
            anyhow::bail!("--signer {spec:?} has an empty COMMAND");
        }
        let key = read_public_key(&PathBuf::from(pubkey))
            .with_context(|| format!("--signer for {role}"))?;
        let keyid = verifier::crypto::key_id(&key)
            .with_context(|| format!("--signer for {role}: public key {pubkey}"))?;
        Ok(ExternalSigner {
            role: role.to_string(),
            key,
            keyid,
            command: command.to_string(),
            format,
            timeout,
        })
    }

    fn run(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let cmd_name = self.command.split_whitespace().next().unwrap_or("command");
        let mut input = tempfile::NamedTempFile::new()
            .map_err(|e| format!("creating the signer's input file failed: {e}"))?;
        input
            .write_all(message)
            .and_then(|()| input.flush())
            .map_err(|e| format!("writing the signer's input file failed: {e}"))?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .env("PHASE_SIGN_ROLE", &self.role)
            .env("PHASE_SIGN_KEYID", &self.keyid)
            .env("PHASE_SIGN_INPUT", input.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("external signer `{cmd_name}` could not start: {e}"))?;
        let pid = child.id();
        // Writers and readers on their own threads so a signer that does not
        // read its input, or fills stderr, cannot block us past the timeout.
        let stdin = child.stdin.take();
        let msg = message.to_vec();
        let writer = std::thread::spawn(move || {
            if let Some(mut s) = stdin {
                // A signer may exit without reading everything; its exit
                // status tells what happened, not EPIPE.
                let _ = s.write_all(&msg);
            }
        });
        let read = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(p) = pipe {
                    let _ = p.take(MAX_OUTPUT + 1).read_to_end(&mut buf);
                }
                buf
            })
        };
        let stdout = read(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = read(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for external signer `{cmd_name}`: {e}")),
            }
            if Instant::now() >= deadline {
                kill_group(pid);
                let _ = child.wait();
                let _ = writer.join();
                let _ = stdout.join();
                let _ = stderr.join();
                return Err(format!(
                    "external signer `{cmd_name}` did not finish within {:?}; it was killed \
                     (raise --signer-timeout if the token waits for a touch or PIN)",
                    self.timeout
                ));
            }
            std::thread::sleep(POLL);
        };
        // The shell has exited. Anything it left running in its group that
        // still holds the pipes is ended, so the readers finish (bounded).
        for _ in 0..50 {
            if stdout.is_finished() && stderr.is_finished() {
                break;
            }
            std::thread::sleep(POLL);
        }
        if !(stdout.is_finished() && stderr.is_finished()) {
            kill_group(pid);
        }
        let _ = writer.join();
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        if !status.success() {
            let last = String::from_utf8_lossy(&err)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| format!(": {}", l.trim()))
                .unwrap_or_default();
            return Err(format!(
                "external signer `{cmd_name}` failed ({status}){last}"
            ));
        }
        if out.len() as u64 > MAX_OUTPUT {
            return Err(format!(
                "external signer `{cmd_name}` printed more than {MAX_OUTPUT} bytes"
            ));
        }
        self.decode(&out)
            .map_err(|e| format!("external signer `{cmd_name}` output: {e}"))
    }

    fn decode(&self, out: &[u8]) -> Result<Vec<u8>, String> {
        let text = || {
            std::str::from_utf8(out)
                .map(str::trim)
                .map_err(|_| format!("not {:?} text", self.format))
        };
        let bytes = match self.format {
            Format::Raw => out.to_vec(),
            Format::Hex => hex::decode(text()?).map_err(|e| format!("not hex: {e}"))?,
            Format::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text()?.split_whitespace().collect::<String>())
                .map_err(|e| format!("not base64: {e}"))?,
        };
        if bytes.is_empty() {
            return Err("no signature printed".into());
        }
        Ok(bytes)
    }
}

/// SIGKILL the signer's process group (its shell and anything it started).
fn kill_group(pid: u32) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // ESRCH (already gone) is the normal case after a clean exit.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

impl MetadataSigner for ExternalSigner {
    fn public_key(&self) -> Key {
        self.key.clone()
    }
    fn key_id(&self) -> String {
        self.keyid.clone()
    }
    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        tracing::debug!(role = %self.role, keyid = %self.keyid, "running external signer");
        self.run(message)
    }
    fn role(&self) -> Option<&str> {
        Some(&self.role)
    }
}
