//! The stick manifest: what `phase image` wrote onto a stick's ESP that the
//! firmware log of a boot from it shows (`IMG.manifest.json`), and the
//! check of a node's PCR 9 against it (docs/attestation.md, "The stick").
//!
//! The kernel's EFI stub measures into PCR 9 the SHA-256 of the initrd
//! the loader gave it and of the load options (the command line as
//! UTF-16LE with its NUL). A node's quoted PCR 9 replays from its firmware
//! log, so those two digests are the node's: the initrd's must be the
//! stick's initramfs, and the load options' one of the stick's loader
//! entries'. A command line that is not the stick's is shown in words from
//! systemd-boot's PCR 12 record, whose data hashes to the PCR 9 digest.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use measure::{
    load_options_digest, load_options_text, FirmwareLog, INITRD_TAG, LOADER_CMDLINE_PCR,
    LOAD_OPTIONS_TAG, STUB_PCR,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The format version of [`StickManifest`].
pub const STICK_VERSION: u32 = 1;

/// The largest manifest read (three entries take about 1 KiB).
const MAX_MANIFEST: u64 = 1 << 20;

/// The ESP files of a stick that a boot from it measures into PCR 9.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickManifest {
    pub version: u32,
    /// The stick image id: [`StickManifest::content_id`].
    pub id: String,
    /// SHA-256 of `phase/initramfs.img` as written to the ESP, hex.
    pub initramfs_sha256: String,
    /// SHA-256 of `phase/vmlinuz` as written to the ESP, hex.
    pub kernel_sha256: String,
    /// One per `loader/entries/*.conf`, in file name order.
    pub entries: Vec<StickEntry>,
}

/// A loader entry and the load options systemd-boot passes for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickEntry {
    /// The entry's file name without `.conf` (`phase-local`).
    pub name: String,
    /// The command line systemd-boot passes ([`image::esp::entry_load_options`]).
    pub cmdline: String,
    /// What the EFI stub measures for it ([`measure::load_options_digest`]), hex.
    pub load_options_sha256: String,
}

/// The stick a node's PCR 9 shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StickMatch {
    /// The stick image id.
    pub image: String,
    /// The loader entry that started the node.
    pub entry: String,
}

impl StickManifest {
    /// The manifest of an ESP's files (ESP path -> contents).
    pub fn of_esp(files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<StickManifest> {
        let file = |path: &str| {
            files
                .get(path)
                .ok_or_else(|| anyhow!("the ESP has no {path}"))
        };
        let initramfs = hex::encode(Sha256::digest(file(image::esp::INITRD_PATH)?));
        let kernel = hex::encode(Sha256::digest(file(image::esp::KERNEL_PATH)?));
        let entries = files
            .iter()
            .filter_map(|(path, text)| {
                let name = path
                    .strip_prefix("loader/entries/")?
                    .strip_suffix(".conf")?;
                let cmdline = image::esp::entry_load_options(&String::from_utf8_lossy(text));
                Some(StickEntry {
                    name: name.to_owned(),
                    load_options_sha256: hex::encode(load_options_digest(&cmdline)),
                    cmdline,
                })
            })
            .collect::<Vec<_>>();
        anyhow::ensure!(!entries.is_empty(), "the ESP has no loader entry");
        let mut m = StickManifest {
            version: STICK_VERSION,
            id: String::new(),
            initramfs_sha256: initramfs,
            kernel_sha256: kernel,
            entries,
        };
        m.id = m.content_id();
        Ok(m)
    }

    /// The stick image id: the first 16 hex digits of SHA-256 over the
    /// lines `phase-stick/v1`, `initramfs <sha256>`, `kernel <sha256>` and
    /// `entry <name> <load options sha256>` per entry, in order, each
    /// ending in `\n`.
    pub fn content_id(&self) -> String {
        let mut text = format!(
            "phase-stick/v1\ninitramfs {}\nkernel {}\n",
            self.initramfs_sha256, self.kernel_sha256
        );
        for e in &self.entries {
            text.push_str(&format!("entry {} {}\n", e.name, e.load_options_sha256));
        }
        hex::encode(Sha256::digest(text.as_bytes()))[..16].to_owned()
    }

    /// Reads and checks a manifest file; one line naming the file and what
    /// is wrong with it.
    pub fn load(path: &Path) -> anyhow::Result<StickManifest> {
        let name = path.display();
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot read the stick manifest {name}"))?;
        let mut bytes = Vec::new();
        f.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the stick manifest {name}"))?;
        anyhow::ensure!(
            bytes.len() as u64 <= MAX_MANIFEST,
            "the stick manifest {name} is larger than {MAX_MANIFEST} bytes"
        );
        let m: StickManifest = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("the stick manifest {name} is not a stick manifest: {e}"))?;
        m.validate()
            .map_err(|why| anyhow!("the stick manifest {name} is not valid: {why}"))?;
        Ok(m)
    }

    /// The fields' forms, each entry's digest and the id.
    fn validate(&self) -> Result<(), String> {
        if self.version != STICK_VERSION {
            return Err(format!(
                "format version {}, this verifier reads {STICK_VERSION}",
                self.version
            ));
        }
        let sha = |field: &str, v: &str| {
            let ok = v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if ok {
                Ok(())
            } else {
                Err(format!("{field} {v:?} is not a SHA-256 in lowercase hex"))
            }
        };
        sha("initramfs_sha256", &self.initramfs_sha256)?;
        sha("kernel_sha256", &self.kernel_sha256)?;
        if self.entries.is_empty() {
            return Err("it lists no loader entry".into());
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.name.is_empty() || e.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("entry {i} has the name {:?}", e.name));
            }
            if self.entries[..i].iter().any(|o| o.name == e.name) {
                return Err(format!("entry {} is listed twice", e.name));
            }
            sha(
                &format!("entry {}'s load_options_sha256", e.name),
                &e.load_options_sha256,
            )?;
            let digest = hex::encode(load_options_digest(&e.cmdline));
            if digest != e.load_options_sha256 {
                return Err(format!(
                    "entry {}'s load_options_sha256 is {}, its cmdline's is {digest}",
                    e.name, e.load_options_sha256
                ));
            }
        }
        let id = self.content_id();
        if self.id != id {
            return Err(format!("its id {:?} is not its content's ({id})", self.id));
        }
        Ok(())
    }

    /// Checks the EFI stub's PCR 9 records of `log` (which replayed to the
    /// quoted PCR 9): every initrd digest must be the stick's initramfs,
    /// every load options digest one of its entries'. The error names PCR 9
    /// and every difference, in one line.
    pub fn check(&self, log: &FirmwareLog) -> anyhow::Result<StickMatch> {
        let initrds = log.tagged(STUB_PCR, INITRD_TAG);
        let options = log.tagged(STUB_PCR, LOAD_OPTIONS_TAG);
        for (records, what) in [(&initrds, "initrd"), (&options, "load options")] {
            if records.is_empty() {
                bail!(
                    "PCR 9 cannot be checked against stick image {}: the firmware log has no {what} record of the kernel's EFI stub",
                    self.id
                );
            }
        }
        let mut differences = Vec::new();
        if let Some(d) = initrds
            .iter()
            .find(|d| hex::encode(d) != self.initramfs_sha256)
        {
            differences.push(format!(
                "the initramfs is sha256 {} on the node, {} on the stick",
                hex::encode(d),
                self.initramfs_sha256
            ));
        }
        let mut entry = None;
        for d in &options {
            let hex = hex::encode(d);
            match self.entries.iter().find(|e| e.load_options_sha256 == hex) {
                Some(e) => entry = Some(e.name.clone()),
                None => {
                    differences.push(self.command_line_difference(log, d));
                    break;
                }
            }
        }
        if !differences.is_empty() {
            bail!(
                "PCR 9 is not a boot of stick image {}: {}",
                self.id,
                differences.join("; ")
            );
        }
        Ok(StickMatch {
            image: self.id.clone(),
            // `options` is not empty and each of its digests found an entry.
            entry: entry.unwrap_or_default(),
        })
    }

    /// The node's load options `digest`, which no entry has, in words: its
    /// text from the PCR 12 record that hashes to it, beside the stick's
    /// entry that shares the longest beginning with it.
    fn command_line_difference(&self, log: &FirmwareLog, digest: &[u8; 32]) -> String {
        let Some(data) = log.ipl_with_digest(LOADER_CMDLINE_PCR, digest) else {
            return format!(
                "the load options are sha256 {} on the node, no entry of the stick's, and no PCR 12 record holds their text",
                hex::encode(digest)
            );
        };
        let text = load_options_text(data);
        let shared = |e: &&StickEntry| {
            e.cmdline
                .chars()
                .zip(text.chars())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let Some(closest) = self.entries.iter().rev().max_by_key(shared) else {
            return format!("the command line is {} on the node", quoted(&text));
        };
        format!(
            "the command line is {} on the node, the stick's entry {} has {}",
            quoted(&text),
            closest.name,
            quoted(&closest.cmdline)
        )
    }
}

/// `text` in double quotes, control characters escaped (a node's text
/// stays on the error's one line).
fn quoted(text: &str) -> String {
    let inner: String = text
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    format!("\"{inner}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use measure::{FirmwareLogWriter, EV_EVENT_TAG, EV_IPL};

    /// A real OVMF + swtpm boot of a stick's `phase-local` entry, with
    /// `phase.peers=http://198.18.0.10:7070` appended (the `boot_wasm`
    /// QEMU test's node).
    const OVMF_LOG: &[u8] = include_bytes!(
        "../../../../measure/tests/data/ovmf-swtpm-secureboot.binary_bios_measurements"
    );
    /// The initrd digest in that log's PCR 9.
    const OVMF_INITRD: &str = "9ced15df23e86805872726533dea750276fcbe89f58e0c30ccc6f484767f62e0";
    const PEERS: &str = "phase.peers=http://198.18.0.10:7070";

    /// The ESP files `phase image` writes, from the repository's entry
    /// templates with `extra` as `--append-cmdline`.
    fn esp(extra: &str, initramfs: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        for mode in image::esp::MODES {
            let path = format!("../esp/loader/entries/phase-{mode}.conf");
            let text = std::fs::read_to_string(&path).expect("entry template");
            let vars = [
                ("KERNEL", "/phase/vmlinuz"),
                ("INITRD", "/phase/initramfs.img"),
                ("KVER", "6.1.0-57-amd64"),
                ("DEFAULT_MODE", "local"),
                ("CMDLINE_EXTRA", extra),
            ];
            let entry = image::esp::render(Path::new(&path), &text, &vars).expect("renders");
            files.insert(
                format!("loader/entries/phase-{mode}.conf"),
                entry.into_bytes(),
            );
        }
        files.insert(
            "loader/loader.conf".into(),
            b"default phase-local.conf\n".to_vec(),
        );
        files.insert(image::esp::KERNEL_PATH.into(), b"kernel".to_vec());
        files.insert(image::esp::INITRD_PATH.into(), initramfs.to_vec());
        files
    }

    /// The manifest of the stick the real log booted from (its initramfs
    /// is known by its digest only).
    fn booted_stick(extra: &str, initramfs: &str) -> StickManifest {
        let mut m = StickManifest::of_esp(&esp(extra, b"initramfs")).expect("manifest");
        m.initramfs_sha256 = initramfs.to_owned();
        m.id = m.content_id();
        m
    }

    fn real_log() -> FirmwareLog {
        FirmwareLog::parse(OVMF_LOG).expect("the real log parses")
    }

    #[test]
    fn the_manifest_lists_each_entry_with_systemd_boots_command_line() {
        let m = StickManifest::of_esp(&esp("", b"initramfs")).expect("manifest");
        assert_eq!(m.version, STICK_VERSION);
        assert_eq!(
            m.initramfs_sha256,
            hex::encode(Sha256::digest(b"initramfs"))
        );
        assert_eq!(m.kernel_sha256, hex::encode(Sha256::digest(b"kernel")));
        let names: Vec<&str> = m.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["phase-internet", "phase-local", "phase-private"]);
        assert_eq!(
            m.entries[1].cmdline,
            "initrd=\\phase\\initramfs.img console=tty0 console=ttyS0,115200 phase.mode=local"
        );
        assert_eq!(m.id.len(), 16);
        m.validate().expect("valid");
        // The id is the content's: one byte of initramfs changes it.
        let again = StickManifest::of_esp(&esp("", b"initramfs")).expect("manifest");
        assert_eq!(again.id, m.id);
        let other = StickManifest::of_esp(&esp("", b"initramfS")).expect("manifest");
        assert_ne!(other.id, m.id);
        let mut files = esp("", b"x");
        files.remove(image::esp::INITRD_PATH);
        let e = StickManifest::of_esp(&files).expect_err("no initramfs");
        assert_eq!(e.to_string(), "the ESP has no phase/initramfs.img");
    }

    #[test]
    fn the_real_boot_is_the_sticks_local_entry_and_initramfs() {
        let m = booted_stick(PEERS, OVMF_INITRD);
        let got = m.check(&real_log()).expect("the stick booted");
        assert_eq!(
            got,
            StickMatch {
                image: m.id.clone(),
                entry: "phase-local".into()
            }
        );
    }

    #[test]
    fn another_initramfs_is_named_with_both_digests() {
        let stick = "11".repeat(32);
        let m = booted_stick(PEERS, &stick);
        let e = m.check(&real_log()).expect_err("another initramfs");
        assert_eq!(
            e.to_string(),
            format!(
                "PCR 9 is not a boot of stick image {}: the initramfs is sha256 {OVMF_INITRD} on the node, {stick} on the stick",
                m.id
            )
        );
    }

    #[test]
    fn an_edited_command_line_is_shown_from_pcr_12_beside_the_sticks_entry() {
        // The stick was built without the word the node's entry has.
        let m = booted_stick("", OVMF_INITRD);
        let e = m.check(&real_log()).expect_err("another command line");
        assert_eq!(
            e.to_string(),
            format!(
                "PCR 9 is not a boot of stick image {}: the command line is \"initrd=\\phase\\initramfs.img console=tty0 console=ttyS0,115200 phase.mode=local {PEERS}\" on the node, the stick's entry phase-local has \"initrd=\\phase\\initramfs.img console=tty0 console=ttyS0,115200 phase.mode=local\"",
                m.id
            )
        );
    }

    #[test]
    fn both_differences_are_one_line() {
        let m = booted_stick("", &"22".repeat(32));
        let e = m.check(&real_log()).expect_err("both differ").to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.starts_with("PCR 9 is not a boot of stick image "), "{e}");
        assert!(
            e.contains(&format!(
                "the initramfs is sha256 {OVMF_INITRD} on the node"
            )),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "{PEERS}\" on the node, the stick's entry phase-local"
            )),
            "{e}"
        );
    }

    /// A log with the stub's records: `initrd` and `cmdline` measured into
    /// PCR 9, and `pcr12` (if any) as systemd-boot's record.
    fn stub_log(initrd: &[u8], cmdline: &str, pcr12: Option<&str>) -> FirmwareLog {
        fn tagged(tag: u32, name: &str) -> Vec<u8> {
            let mut d = tag.to_le_bytes().to_vec();
            d.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
            d.extend_from_slice(name.as_bytes());
            d.push(0);
            d
        }
        let mut w = FirmwareLogWriter::new();
        if let Some(text) = pcr12 {
            let data: Vec<u8> = text
                .encode_utf16()
                .chain([0])
                .flat_map(|u| u.to_le_bytes())
                .collect();
            w.event(LOADER_CMDLINE_PCR, EV_IPL, &data);
        }
        let options = load_options_digest(cmdline);
        let tag = tagged(LOAD_OPTIONS_TAG, "LOADED_IMAGE::LoadOptions");
        w.record(STUB_PCR, EV_EVENT_TAG, &options, &tag);
        let initrd: [u8; 32] = Sha256::digest(initrd).into();
        w.record(
            STUB_PCR,
            EV_EVENT_TAG,
            &initrd,
            &tagged(INITRD_TAG, "Linux initrd"),
        );
        FirmwareLog::parse(&w.finish()).expect("parses")
    }

    #[test]
    fn a_command_line_without_its_text_is_named_by_digest() {
        let m = StickManifest::of_esp(&esp("", b"initramfs")).expect("manifest");
        let private = m.entries[2].cmdline.clone();
        let got = m
            .check(&stub_log(b"initramfs", &private, None))
            .expect("the private entry");
        assert_eq!(got.entry, "phase-private");
        let edited = format!("{private} init=/bin/sh");
        let e = m
            .check(&stub_log(b"initramfs", &edited, None))
            .expect_err("edited")
            .to_string();
        assert!(
            e.ends_with(&format!(
                ": the load options are sha256 {} on the node, no entry of the stick's, and no PCR 12 record holds their text",
                hex::encode(load_options_digest(&edited))
            )),
            "{e}"
        );
        // A PCR 12 record whose data is another text does not count; a
        // control character in the node's text is escaped.
        let e = m
            .check(&stub_log(b"initramfs", &edited, Some("something else")))
            .expect_err("edited")
            .to_string();
        assert!(e.contains("no PCR 12 record holds their text"), "{e}");
        let odd = format!("{private}\nx");
        let e = m
            .check(&stub_log(b"initramfs", &odd, Some(&odd)))
            .expect_err("edited")
            .to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.contains("phase.mode=private\\nx\" on the node, the stick's entry phase-private"),
            "{e}"
        );
    }

    #[test]
    fn a_log_without_the_stubs_records_cannot_be_checked() {
        let m = StickManifest::of_esp(&esp("", b"initramfs")).expect("manifest");
        let mut w = FirmwareLogWriter::new();
        w.event(STUB_PCR, EV_EVENT_TAG, b"Linux initrd");
        let log = FirmwareLog::parse(&w.finish()).expect("parses");
        let e = m.check(&log).expect_err("no records").to_string();
        assert_eq!(
            e,
            format!("PCR 9 cannot be checked against stick image {}: the firmware log has no initrd record of the kernel's EFI stub", m.id)
        );
    }

    #[test]
    fn a_bad_manifest_file_is_one_line_naming_it_and_the_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = StickManifest::of_esp(&esp("", b"initramfs")).expect("manifest");
        let path = dir.path().join("stick.manifest.json");
        let write = |m: &serde_json::Value| {
            std::fs::write(&path, serde_json::to_vec(m).expect("json")).expect("write")
        };
        let value = serde_json::to_value(&good).expect("json");
        write(&value);
        assert_eq!(StickManifest::load(&path).expect("loads"), good);

        let name = path.display().to_string();
        let refused = |what: &str| {
            let e = format!("{:#}", StickManifest::load(&path).expect_err(what));
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(e.contains(&format!("the stick manifest {name}")), "{e}");
            assert!(e.contains(what), "{what}: {e}");
        };
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = value.clone();
            edit(&mut v);
            write(&v);
        };
        with(&|v| v["version"] = 2.into());
        refused("is not valid: format version 2, this verifier reads 1");
        with(&|v| v["initramfs_sha256"] = "ab".into());
        refused("is not valid: initramfs_sha256 \"ab\" is not a SHA-256 in lowercase hex");
        with(&|v| v["entries"][1]["cmdline"] = "init=/bin/sh".into());
        refused("is not valid: entry phase-local's load_options_sha256 is ");
        with(&|v| v["entries"][2]["name"] = "phase-local".into());
        refused("is not valid: entry phase-local is listed twice");
        with(&|v| v["entries"] = serde_json::json!([]));
        refused("is not valid: it lists no loader entry");
        with(&|v| v["kernel_sha256"] = "33".repeat(32).into());
        refused("is not valid: its id ");
        with(&|v| {
            v.as_object_mut().expect("object").remove("entries");
        });
        refused("is not a stick manifest: missing field `entries`");
        std::fs::write(&path, b"{\"version\": 1,").expect("write");
        refused("is not a stick manifest: EOF while parsing");
        std::fs::remove_file(&path).expect("rm");
        refused("cannot read the stick manifest");
    }
}
