//! The TPM 2.0 commands stage 1 needs, as raw bytes (TPM 2.0 Library
//! Specification, Part 3), over any byte stream: the kernel's resource
//! manager `/dev/tpmrm0` (one write is one command, one read its
//! response) or swtpm's TCP command port in the tests.
//!
//! * `TPM2_PCR_Extend` of one SHA-256 digest, authorized with a password
//!   session (`TPM_RS_PW`) and the empty password, as the PC Client
//!   profile sets for PCRs 0-23;
//! * `TPM2_PCR_Read` of one PCR in the SHA-256 bank.
//!
//! Both are fixed layouts (65 and 20 bytes), written out here rather than
//! through a marshalling crate: `tpm2-protocol`, the pure-Rust one, needs
//! rustc 1.95 while the workspace promises 1.85 (`rust-version`), and
//! `tss-esapi` links the C TSS libraries, which a static PID 1 cannot.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// The kernel's TPM device with its resource manager.
pub const TPM_DEVICE: &str = "/dev/tpmrm0";

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
pub(crate) const TPM_ST_SESSIONS: u16 = 0x8002;
pub(crate) const TPM_RS_PW: u32 = 0x4000_0009;
pub(crate) const TPM_ALG_SHA256: u16 = 0x000b;
const HEADER: usize = 10;
/// Larger than any response to the commands here; a longer one is refused.
const MAX_RESPONSE: usize = 4096;

/// A TPM command this crate sends, named as the specification does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    PcrExtend,
    PcrRead,
    CreatePrimary,
    Quote,
    FlushContext,
}

impl Command {
    /// The command code (`TPM_CC`).
    pub fn code(self) -> u32 {
        match self {
            Command::PcrExtend => 0x0000_0182,
            Command::PcrRead => 0x0000_017e,
            Command::CreatePrimary => 0x0000_0131,
            Command::Quote => 0x0000_0158,
            Command::FlushContext => 0x0000_0165,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::PcrExtend => "TPM2_PCR_Extend",
            Command::PcrRead => "TPM2_PCR_Read",
            Command::CreatePrimary => "TPM2_CreatePrimary",
            Command::Quote => "TPM2_Quote",
            Command::FlushContext => "TPM2_FlushContext",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A TPM response code (`TPM_RC`) other than success. Shown as
/// `0x0000098e TPM_RC_AUTH_FAIL (session 1)`: the number, the
/// specification's name where it is a common one, and which handle,
/// session or parameter a format-one code points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCode(pub u32);

impl ResponseCode {
    /// The specification's name of the code (without the handle, session
    /// or parameter number), for the codes a PCR command can get.
    pub fn name(self) -> Option<&'static str> {
        let rc = self.0;
        if rc >> 16 != 0 {
            // A layer above the TPM (a TSS or resource manager code).
            return None;
        }
        let code = if rc & 0x80 != 0 {
            0x80 | (rc & 0x3f)
        } else if rc & 0x100 == 0 || rc & 0x400 != 0 {
            // TPM 1.2 style or vendor-defined.
            return None;
        } else {
            rc & 0x97f
        };
        Some(match code {
            0x080 => "TPM_RC_FMT1",
            0x081 => "TPM_RC_ASYMMETRIC",
            0x082 => "TPM_RC_ATTRIBUTES",
            0x083 => "TPM_RC_HASH",
            0x084 => "TPM_RC_VALUE",
            0x085 => "TPM_RC_HIERARCHY",
            0x087 => "TPM_RC_KEY_SIZE",
            0x08b => "TPM_RC_HANDLE",
            0x08d => "TPM_RC_RANGE",
            0x08e => "TPM_RC_AUTH_FAIL",
            0x08f => "TPM_RC_NONCE",
            0x095 => "TPM_RC_SIZE",
            0x097 => "TPM_RC_TAG",
            0x098 => "TPM_RC_SELECTOR",
            0x09a => "TPM_RC_INSUFFICIENT",
            0x0a1 => "TPM_RC_RESERVED_BITS",
            0x0a2 => "TPM_RC_BAD_AUTH",
            0x100 => "TPM_RC_INITIALIZE",
            0x101 => "TPM_RC_FAILURE",
            0x103 => "TPM_RC_SEQUENCE",
            0x120 => "TPM_RC_DISABLED",
            0x124 => "TPM_RC_AUTH_TYPE",
            0x125 => "TPM_RC_AUTH_MISSING",
            0x126 => "TPM_RC_POLICY",
            0x127 => "TPM_RC_PCR",
            0x128 => "TPM_RC_PCR_CHANGED",
            0x12d => "TPM_RC_UPGRADE",
            0x130 => "TPM_RC_REBOOT",
            0x142 => "TPM_RC_COMMAND_SIZE",
            0x143 => "TPM_RC_COMMAND_CODE",
            0x144 => "TPM_RC_AUTHSIZE",
            0x145 => "TPM_RC_AUTH_CONTEXT",
            0x14b => "TPM_RC_NV_UNINITIALIZED",
            0x153 => "TPM_RC_BAD_CONTEXT",
            0x901 => "TPM_RC_CONTEXT_GAP",
            0x902 => "TPM_RC_OBJECT_MEMORY",
            0x903 => "TPM_RC_SESSION_MEMORY",
            0x904 => "TPM_RC_MEMORY",
            0x905 => "TPM_RC_SESSION_HANDLES",
            0x906 => "TPM_RC_OBJECT_HANDLES",
            0x907 => "TPM_RC_LOCALITY",
            0x908 => "TPM_RC_YIELDED",
            0x909 => "TPM_RC_CANCELED",
            0x90a => "TPM_RC_TESTING",
            0x920 => "TPM_RC_NV_RATE",
            0x921 => "TPM_RC_LOCKOUT",
            0x922 => "TPM_RC_RETRY",
            0x923 => "TPM_RC_NV_UNAVAILABLE",
            _ => return None,
        })
    }

    /// What a format-one code points at: `handle N`, `session N` or
    /// `parameter N`.
    pub fn subject(self) -> Option<String> {
        let rc = self.0;
        if rc >> 16 != 0 || rc & 0x80 == 0 {
            return None;
        }
        let n = (rc >> 8) & 0xf;
        if rc & 0x40 != 0 {
            Some(format!("parameter {n}"))
        } else if n == 0 {
            None
        } else if n & 0x8 != 0 {
            Some(format!("session {}", n & 0x7))
        } else {
            Some(format!("handle {n}"))
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)?;
        match (self.name(), self.subject()) {
            (Some(n), Some(s)) => write!(f, " {n} ({s})"),
            (Some(n), None) => write!(f, " {n}"),
            (None, Some(s)) => write!(f, " ({s})"),
            (None, None) => Ok(()),
        }
    }
}

/// A command that did not do its work. The message names the command.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("{command}: cannot talk to the TPM")]
    Io {
        command: Command,
        #[source]
        source: io::Error,
    },
    #[error("{command}: the TPM answered {rc}")]
    Rc { command: Command, rc: ResponseCode },
    #[error("{command}: malformed response: {what}")]
    Malformed {
        command: Command,
        what: &'static str,
    },
}

/// The bytes of `TPM2_PCR_Extend(pcr, SHA-256: digest)` with the empty
/// password session.
pub fn extend_command(pcr: u32, digest: &[u8; 32]) -> Vec<u8> {
    let mut c = Vec::with_capacity(65);
    c.extend_from_slice(&TPM_ST_SESSIONS.to_be_bytes());
    c.extend_from_slice(&65u32.to_be_bytes());
    c.extend_from_slice(&Command::PcrExtend.code().to_be_bytes());
    c.extend_from_slice(&pcr.to_be_bytes());
    // Authorization area: its size, then TPMS_AUTH_COMMAND (handle, empty
    // nonce, attributes, empty password).
    c.extend_from_slice(&9u32.to_be_bytes());
    c.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    c.extend_from_slice(&0u16.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&0u16.to_be_bytes());
    // TPML_DIGEST_VALUES with one TPMT_HA.
    c.extend_from_slice(&1u32.to_be_bytes());
    c.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    c.extend_from_slice(digest);
    c
}

/// The bytes of `TPM2_PCR_Read` of `pcr` (0..=23) in the SHA-256 bank.
pub fn read_command(pcr: u32) -> Vec<u8> {
    let mut select = [0u8; 3];
    if let Some(b) = select.get_mut((pcr / 8) as usize) {
        *b = 1 << (pcr % 8);
    }
    let mut c = Vec::with_capacity(20);
    c.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
    c.extend_from_slice(&20u32.to_be_bytes());
    c.extend_from_slice(&Command::PcrRead.code().to_be_bytes());
    // TPML_PCR_SELECTION with one TPMS_PCR_SELECTION.
    c.extend_from_slice(&1u32.to_be_bytes());
    c.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    c.push(3);
    c.extend_from_slice(&select);
    c
}

/// A TPM behind a byte stream: `Tpm<File>` for `/dev/tpmrm0`, any
/// `Read + Write` (a TCP stream to swtpm) in tests.
#[derive(Debug)]
pub struct Tpm<T> {
    io: T,
}

impl Tpm<File> {
    /// Opens the TPM device read-write (the kernel's `/dev/tpmrm0`).
    pub fn open(path: &Path) -> io::Result<Tpm<File>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Tpm::new(f))
    }
}

impl<T: Read + Write> Tpm<T> {
    pub fn new(io: T) -> Tpm<T> {
        Tpm { io }
    }

    /// Extends `pcr`'s SHA-256 bank with `digest`.
    pub fn pcr_extend(&mut self, pcr: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
        self.transact(Command::PcrExtend, &extend_command(pcr, digest))
            .map(drop)
    }

    /// The SHA-256 bank's value of `pcr`.
    pub fn pcr_read(&mut self, pcr: u32) -> Result<[u8; 32], TpmError> {
        let command = Command::PcrRead;
        let body = self.transact(command, &read_command(pcr))?;
        parse_read(pcr, &body).map_err(|what| TpmError::Malformed { command, what })
    }

    /// Sends one command and returns the response after its header, or the
    /// response code when it is not success. A TPM that did not start the
    /// command (`TPM_RC_RETRY`, `TPM_RC_YIELDED`, `TPM_RC_TESTING`; swtpm
    /// answers a quote with `TPM_RC_RETRY` now and then) gets it again, ten
    /// times at most.
    pub fn transact(&mut self, command: Command, bytes: &[u8]) -> Result<Vec<u8>, TpmError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.transact_once(command, bytes) {
                Err(TpmError::Rc { rc, .. })
                    if tries < 10 && matches!(rc.0, 0x922 | 0x908 | 0x90a) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    fn transact_once(&mut self, command: Command, bytes: &[u8]) -> Result<Vec<u8>, TpmError> {
        let io_err = |source| TpmError::Io { command, source };
        let malformed = |what| TpmError::Malformed { command, what };
        self.io.write_all(bytes).map_err(io_err)?;
        self.io.flush().map_err(io_err)?;
        // The device answers in one read; a socket may need several.
        let mut buf = vec![0u8; MAX_RESPONSE];
        let mut have = 0;
        let mut want = HEADER;
        while have < want {
            let n = self.io.read(&mut buf[have..]).map_err(io_err)?;
            if n == 0 {
                return Err(malformed("truncated"));
            }
            have += n;
            if want == HEADER && have >= HEADER {
                want = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
                if want < HEADER {
                    return Err(malformed("size shorter than the header"));
                }
                if want > MAX_RESPONSE {
                    return Err(malformed("oversized"));
                }
            }
        }
        if have > want {
            return Err(malformed("longer than its size"));
        }
        let rc = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]);
        if rc != 0 {
            return Err(TpmError::Rc {
                command,
                rc: ResponseCode(rc),
            });
        }
        buf.truncate(want);
        Ok(buf.split_off(HEADER))
    }
}

/// The digest of `pcr` in a `TPM2_PCR_Read` response body: the update
/// counter, the selection read (one SHA-256 selection, with `pcr` in it),
/// one 32-byte digest.
fn parse_read(pcr: u32, body: &[u8]) -> Result<[u8; 32], &'static str> {
    let mut r = Reader(body);
    r.take(4)?; // pcrUpdateCounter
    let selections = r.u32()?;
    if selections != 1 {
        return Err("the PCR is not in the SHA-256 bank");
    }
    if r.u16()? != TPM_ALG_SHA256 {
        return Err("another bank than SHA-256");
    }
    let size = r.take(1)?[0] as usize;
    let select = r.take(size)?;
    let selected = select
        .get((pcr / 8) as usize)
        .is_some_and(|b| b & (1 << (pcr % 8)) != 0);
    if !selected {
        return Err("the PCR is not in the SHA-256 bank");
    }
    if r.u32()? != 1 {
        return Err("not one digest");
    }
    if r.u16()? != 32 {
        return Err("a digest that is not 32 bytes");
    }
    let d = r.take(32)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(d);
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(out)
}

pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    pub(crate) fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A fake TPM: records the command, answers `response`.
    struct Canned {
        sent: Vec<u8>,
        response: Cursor<Vec<u8>>,
    }
    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // One byte at a time: the reader must loop like on a socket.
            let n = buf.len().min(1);
            self.response.read(&mut buf[..n])
        }
    }
    impl Write for Canned {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    fn tpm(response: Vec<u8>) -> Tpm<Canned> {
        Tpm::new(Canned {
            sent: Vec::new(),
            response: Cursor::new(response),
        })
    }
    fn header(tag: u16, size: u32, rc: u32) -> Vec<u8> {
        let mut v = tag.to_be_bytes().to_vec();
        v.extend_from_slice(&size.to_be_bytes());
        v.extend_from_slice(&rc.to_be_bytes());
        v
    }

    #[test]
    fn the_extend_command_is_the_65_bytes_of_the_specification() {
        let c = extend_command(16, &[0xaa; 32]);
        assert_eq!(c.len(), 65);
        assert_eq!(
            hex::encode(&c[..33]),
            "80020000004100000182000000100000000940000009000000000000000001000b"
        );
        assert_eq!(&c[33..], &[0xaa; 32]);
    }

    #[test]
    fn the_read_command_selects_one_pcr() {
        assert_eq!(
            hex::encode(read_command(23)),
            "8001000000140000017e00000001000b03000080"
        );
        assert_eq!(hex::encode(&read_command(0)[17..]), "010000");
    }

    #[test]
    fn a_read_response_gives_the_digest() {
        let mut r = header(0x8001, 0, 0);
        r.extend_from_slice(&7u32.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 1, 0x00, 0x0b, 3, 0, 0, 0x80]);
        r.extend_from_slice(&[0, 0, 0, 1, 0, 32]);
        r.extend_from_slice(&[0x5a; 32]);
        let len = r.len() as u32;
        r[2..6].copy_from_slice(&len.to_be_bytes());
        let mut t = tpm(r);
        assert_eq!(t.pcr_read(23).expect("read"), [0x5a; 32]);
        assert_eq!(t.io.sent, read_command(23));
    }

    #[test]
    fn an_error_response_names_the_command_and_the_code() {
        let mut t = tpm(header(0x8001, 10, 0x98e));
        let e = t.pcr_extend(23, &[0; 32]).expect_err("auth fail");
        assert_eq!(
            e.to_string(),
            "TPM2_PCR_Extend: the TPM answered 0x0000098e TPM_RC_AUTH_FAIL (session 1)"
        );
        let mut t = tpm(header(0x8001, 10, 0x100));
        let e = t.pcr_read(23).expect_err("not started");
        assert_eq!(
            e.to_string(),
            "TPM2_PCR_Read: the TPM answered 0x00000100 TPM_RC_INITIALIZE"
        );
    }

    #[test]
    fn response_codes_have_names_and_subjects() {
        let s = |rc| ResponseCode(rc).to_string();
        assert_eq!(s(0x18b), "0x0000018b TPM_RC_HANDLE (handle 1)");
        assert_eq!(s(0x1c4), "0x000001c4 TPM_RC_VALUE (parameter 1)");
        assert_eq!(s(0x2c4), "0x000002c4 TPM_RC_VALUE (parameter 2)");
        assert_eq!(s(0x922), "0x00000922 TPM_RC_RETRY");
        assert_eq!(s(0x921), "0x00000921 TPM_RC_LOCKOUT");
        assert_eq!(s(0x143), "0x00000143 TPM_RC_COMMAND_CODE");
        assert_eq!(s(0x0b0143), "0x000b0143");
        assert_eq!(s(0x17f), "0x0000017f");
    }

    #[test]
    fn truncated_and_oversized_responses_are_refused() {
        let cases = [
            (header(0x8001, 10, 0)[..6].to_vec(), "truncated"),
            (header(0x8001, 5000, 0), "oversized"),
            (header(0x8001, 4, 0), "size shorter than the header"),
            (header(0x8001, 40, 0), "truncated"),
        ];
        for (bytes, what) in cases {
            let e = tpm(bytes).pcr_read(23).expect_err(what);
            assert_eq!(
                e.to_string(),
                format!("TPM2_PCR_Read: malformed response: {what}")
            );
        }
        let mut empty = header(0x8001, 0, 0);
        empty.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let len = empty.len() as u32;
        empty[2..6].copy_from_slice(&len.to_be_bytes());
        let e = tpm(empty).pcr_read(23).expect_err("no bank");
        assert!(e.to_string().contains("not in the SHA-256 bank"), "{e}");
    }
}
