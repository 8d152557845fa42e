//! The node's side of `GET /attest`: a quote from the TPM over the
//! verifier's nonce, with the PCR values, the Phase event log from
//! `boot.json` and the firmware event log (docs/attestation.md).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use fetcher::AttestError;
use measure::Tpm;

use super::wire::{AttestResponse, PcrValue, ATTEST_VERSION};

/// The firmware's event log, as the kernel exposes it.
pub const FIRMWARE_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// The largest firmware log sent (a PC's is tens of KiB); base64 of this
/// keeps the answer well under the verifier's 4 MiB cap.
const MAX_FIRMWARE_LOG: u64 = 2 << 20;
/// The largest `boot.json` read.
const MAX_BOOT_JSON: u64 = 1 << 20;

/// Quotes with the TPM at `tpm`: a character device (`/dev/tpmrm0`) or a
/// UNIX socket speaking the same command stream (swtpm's `unixio` server).
#[derive(Debug)]
pub struct TpmAttestor {
    pub tpm: PathBuf,
    pub boot_json: PathBuf,
    pub firmware_log: PathBuf,
    pub node: String,
    /// One quote at a time (a socket TPM serves one client).
    lock: Mutex<()>,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

impl TpmAttestor {
    pub fn new(tpm: PathBuf, boot_json: PathBuf, firmware_log: PathBuf, node: String) -> Self {
        TpmAttestor {
            tpm,
            boot_json,
            firmware_log,
            node,
            lock: Mutex::new(()),
        }
    }

    fn open(&self) -> Result<Tpm<Box<dyn Stream>>, AttestError> {
        let meta = std::fs::metadata(&self.tpm)
            .map_err(|_| AttestError::NoTpm(format!("{} does not exist", self.tpm.display())))?;
        let cannot = |e: std::io::Error| {
            AttestError::Failed(format!("cannot open the TPM {}: {e}", self.tpm.display()))
        };
        let io: Box<dyn Stream> = if meta.file_type().is_socket() {
            let s = UnixStream::connect(&self.tpm).map_err(cannot)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(cannot)?;
            Box::new(s)
        } else {
            Box::new(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&self.tpm)
                    .map_err(cannot)?,
            )
        };
        Ok(Tpm::new(io))
    }

    fn answer(&self, nonce: &[u8]) -> Result<AttestResponse, AttestError> {
        let measurements = read_log(&self.boot_json)?;
        let firmware_log = read_capped(&self.firmware_log, MAX_FIRMWARE_LOG, "the firmware log")?;
        let quote = {
            let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.open()?
                .attest(nonce)
                .map_err(|e| AttestError::Failed(format!("{:#}", anyhow::Error::new(e))))?
        };
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        Ok(AttestResponse {
            version: ATTEST_VERSION,
            node: self.node.clone(),
            nonce: hex::encode(nonce),
            ak_public: b64(&quote.ak.to_tpm2b()),
            attest: b64(&quote.attest),
            signature: b64(&quote.signature),
            pcrs: quote
                .pcrs
                .iter()
                .map(|(pcr, v)| PcrValue {
                    pcr: *pcr,
                    sha256: hex::encode(v),
                })
                .collect(),
            measurements,
            firmware_log: firmware_log.map(|b| b64(&b)),
        })
    }
}

impl fetcher::Attestor for TpmAttestor {
    fn attest(&self, nonce: &[u8]) -> Result<Vec<u8>, AttestError> {
        let r = self.answer(nonce)?;
        serde_json::to_vec(&r)
            .map_err(|e| AttestError::Failed(format!("cannot encode the answer: {e}")))
    }
}

/// The file's bytes, `None` when it does not exist, an error when it
/// cannot be read or is larger than `max`.
fn read_capped(path: &Path, max: u64, what: &str) -> Result<Option<Vec<u8>>, AttestError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AttestError::Failed(format!(
                "cannot read {what} {}: {e}",
                path.display()
            )))
        }
    };
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| AttestError::Failed(format!("cannot read {what} {}: {e}", path.display())))?;
    if bytes.len() as u64 > max {
        return Err(AttestError::Failed(format!(
            "{what} {} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(Some(bytes))
}

/// The Phase event log of `boot.json` (empty when there is no `boot.json`:
/// the quote then shows PCR 23 as it is, and a verifier finds it does not
/// replay unless it is zero).
fn read_log(path: &Path) -> Result<Vec<handover::Measurement>, AttestError> {
    let Some(bytes) = read_capped(path, MAX_BOOT_JSON, "boot.json")? else {
        return Ok(Vec::new());
    };
    let boot = handover::BootJson::from_json(&bytes).map_err(|e| {
        AttestError::Failed(format!("{} is not a boot record: {e}", path.display()))
    })?;
    Ok(boot.measurements)
}

/// This machine's host name, the node's name by default.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unnamed".to_string())
}
