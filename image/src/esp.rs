//! What goes on the EFI System Partition: the boot loaders (shim, which
//! starts Debian-signed systemd-boot, or systemd-boot alone for
//! `--no-secure-boot`), `loader.conf` and one entry per mode (from the
//! templates in the repository's `esp/`), the kernel, the stage-1
//! initramfs and a GRUB fallback config.
//!
//! Templates may use `@KERNEL@`, `@INITRD@` (ESP paths of the kernel and
//! initramfs), `@KVER@` (kernel release), `@DEFAULT_MODE@` and
//! `@CMDLINE_EXTRA@` (extra kernel parameters, usually empty); any other
//! `@NAME@` is an error, so a typo cannot reach a boot menu.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The boot modes, one loader entry each.
pub const MODES: [&str; 3] = ["internet", "local", "private"];

/// ESP path of the kernel.
pub const KERNEL_PATH: &str = "phase/vmlinuz";
/// ESP path of the stage-1 initramfs.
pub const INITRD_PATH: &str = "phase/initramfs.img";
/// ESP path of the first loader (the UEFI removable-media default for
/// x86_64): shim, or systemd-boot without Secure Boot.
pub const LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// ESP path of the loader shim starts (shim's default second stage, beside
/// itself): Debian-signed systemd-boot.
pub const SHIM_NEXT_PATH: &str = "EFI/BOOT/grubx64.efi";
/// ESP path of shim's MOK manager (shim starts it to enrol a key).
pub const MOK_MANAGER_PATH: &str = "EFI/BOOT/mmx64.efi";
/// ESP path of the GRUB fallback config.
pub const GRUB_CFG_PATH: &str = "boot/grub/grub.cfg";

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown default mode {0:?} (expected internet, local or private)")]
    BadMode(String),
    #[error("template {path} uses unknown placeholder {placeholder}")]
    UnknownPlaceholder { path: PathBuf, placeholder: String },
}

/// Inputs of the ESP.
#[derive(Debug, Clone)]
pub struct EspSpec {
    /// The repository's `esp/` directory (templates).
    pub templates: PathBuf,
    /// The boot loaders.
    pub loaders: Loaders,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The kernel release (for `@KVER@`).
    pub kernel_release: String,
    /// The compressed stage-1 initramfs.
    pub initramfs: Vec<u8>,
    /// Which entry `loader.conf` boots by default.
    pub default_mode: String,
    /// Words appended to every entry's kernel command line (`@CMDLINE_EXTRA@`).
    pub cmdline_extra: String,
}

/// The boot loaders an ESP carries.
#[derive(Debug, Clone)]
pub enum Loaders {
    /// For every UEFI PC: Microsoft-signed shim as the removable-media
    /// loader, its MOK manager, and Debian-signed systemd-boot as shim's
    /// second stage. Boots with Secure Boot on (stock keys) and off.
    SecureBoot(crate::signed::SignedLoaders),
    /// systemd-boot alone as the removable-media loader (any build, e.g.
    /// unsigned): boots only with Secure Boot off.
    Plain {
        /// `systemd-bootx64.efi`.
        systemd_boot: PathBuf,
    },
}

/// ESP path -> file contents; directories are implied.
#[derive(Debug, Clone, Default)]
pub struct EspFiles {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl EspFiles {
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|f| f.len() as u64).sum()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, EspError> {
    std::fs::read(path).map_err(|source| EspError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Replace the known placeholders; refuse any other `@NAME@` in the template.
pub fn render(path: &Path, text: &str, vars: &[(&str, &str)]) -> Result<String, EspError> {
    // Every @UPPER_CASE@ token in the template must be a known name.
    let mut rest = text;
    while let Some(start) = rest.find('@') {
        let after = &rest[start + 1..];
        if let Some(end) = after.find('@') {
            let name = &after[..end];
            if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                && !vars.iter().any(|(k, _)| *k == name)
            {
                return Err(EspError::UnknownPlaceholder {
                    path: path.to_path_buf(),
                    placeholder: format!("@{name}@"),
                });
            }
        }
        rest = after;
    }
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("@{k}@"), v);
    }
    // An empty @CMDLINE_EXTRA@ must not leave trailing blanks behind.
    let mut out: String = out
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    Ok(out)
}

/// Assemble the ESP file table.
pub fn assemble(spec: &EspSpec) -> Result<EspFiles, EspError> {
    if !MODES.contains(&spec.default_mode.as_str()) {
        return Err(EspError::BadMode(spec.default_mode.clone()));
    }
    let kernel = format!("/{KERNEL_PATH}");
    let initrd = format!("/{INITRD_PATH}");
    let vars = [
        ("KERNEL", kernel.as_str()),
        ("INITRD", initrd.as_str()),
        ("KVER", spec.kernel_release.as_str()),
        ("DEFAULT_MODE", spec.default_mode.as_str()),
        ("CMDLINE_EXTRA", spec.cmdline_extra.trim()),
    ];
    let template = |rel: &str| -> Result<Vec<u8>, EspError> {
        let path = crate::util::path_join(&spec.templates, rel);
        let bytes = read(&path)?;
        let text = String::from_utf8_lossy(&bytes);
        Ok(render(&path, &text, &vars)?.into_bytes())
    };
    let mut files = BTreeMap::new();
    match &spec.loaders {
        Loaders::SecureBoot(signed) => {
            files.insert(LOADER_PATH.to_owned(), read(&signed.shim)?);
            files.insert(MOK_MANAGER_PATH.to_owned(), read(&signed.mok_manager)?);
            files.insert(SHIM_NEXT_PATH.to_owned(), read(&signed.systemd_boot)?);
        }
        Loaders::Plain { systemd_boot } => {
            files.insert(LOADER_PATH.to_owned(), read(systemd_boot)?);
        }
    }
    files.insert(
        "loader/loader.conf".to_owned(),
        template("loader/loader.conf")?,
    );
    for mode in MODES {
        let rel = format!("loader/entries/phase-{mode}.conf");
        files.insert(rel.clone(), template(&rel)?);
    }
    files.insert(GRUB_CFG_PATH.to_owned(), template("grub/grub.cfg")?);
    files.insert(KERNEL_PATH.to_owned(), read(&spec.kernel)?);
    files.insert(INITRD_PATH.to_owned(), spec.initramfs.clone());
    Ok(EspFiles { files })
}

/// The load options systemd-boot passes to the kernel of a type #1 entry
/// (`entry` is the entry file's text), as a real boot's firmware log shows
/// them: `initrd=<path>` for each `initrd` line (the ESP path with `\`
/// separators), then the values of the `options` lines, joined by single
/// spaces. The kernel's EFI stub measures them into PCR 9
/// (docs/attestation.md, "The stick").
pub fn entry_load_options(entry: &str) -> String {
    let mut initrds = Vec::new();
    let mut options = Vec::new();
    for line in entry.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once([' ', '\t'])
            .map_or((line, ""), |(k, v)| (k, v.trim()));
        match key {
            "initrd" if !value.is_empty() => initrds.push(format!("initrd={}", efi_path(value))),
            "options" if !value.is_empty() => options.push(value.to_owned()),
            _ => {}
        }
    }
    initrds.extend(options);
    initrds.join(" ")
}

/// An ESP path as systemd-boot writes it into a command line: `\`
/// separators, one leading `\`, no empty components.
fn efi_path(path: &str) -> String {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    format!("\\{}", parts.join("\\"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let p = Path::new("t");
        let vars = [("KVER", "6.1"), ("DEFAULT_MODE", "local")];
        assert_eq!(
            render(
                p,
                "default phase-@DEFAULT_MODE@.conf # me@example.org @kver@",
                &vars
            )
            .unwrap(),
            "default phase-local.conf # me@example.org @kver@\n"
        );
        // A value may contain anything, even something that looks like a placeholder.
        let vars = [("CMDLINE_EXTRA", "x=@KERNAL@")];
        assert_eq!(
            render(p, "options a @CMDLINE_EXTRA@", &vars).unwrap(),
            "options a x=@KERNAL@\n"
        );
        let vars = [("CMDLINE_EXTRA", "")];
        assert_eq!(
            render(p, "options a @CMDLINE_EXTRA@", &vars).unwrap(),
            "options a\n"
        );
        let e = render(p, "linux @KERNAL@", &vars).unwrap_err();
        assert!(e.to_string().contains("@KERNAL@"), "{e}");
    }

    #[test]
    fn load_options_are_systemd_boots_for_the_rendered_entry() {
        // The command line the firmware log of a real boot of this entry
        // shows (measure/tests/data: PCR 12's record, whose digest is the
        // EFI stub's LoadOptions record in PCR 9).
        let real = "initrd=\\phase\\initramfs.img console=tty0 console=ttyS0,115200 phase.mode=local phase.peers=http://198.18.0.10:7070";
        let path = Path::new("../esp/loader/entries/phase-local.conf");
        let text = std::fs::read_to_string(path).expect("the local entry template");
        let vars = [
            ("KERNEL", "/phase/vmlinuz"),
            ("INITRD", "/phase/initramfs.img"),
            ("KVER", "6.1.0-57-amd64"),
            ("DEFAULT_MODE", "local"),
            ("CMDLINE_EXTRA", "phase.peers=http://198.18.0.10:7070"),
        ];
        let entry = render(path, &text, &vars).expect("renders");
        assert_eq!(entry_load_options(&entry), real);
        // Two initrd lines, two options lines, tabs and doubled slashes.
        let entry = "title T\ninitrd\t/a//b.img\n# options no\ninitrd c.img\noptions  x=1 \noptions\ty\nlinux /k\n";
        assert_eq!(
            entry_load_options(entry),
            "initrd=\\a\\b.img initrd=\\c.img x=1 y"
        );
        assert_eq!(entry_load_options("title T\n"), "");
    }
}
