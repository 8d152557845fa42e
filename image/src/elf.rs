//! The two facts we read from ELF files: a kernel module's `.modinfo`
//! section and whether an executable is statically linked.
use object::{Object, ObjectSection, ObjectSegment};

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not a readable ELF file")]
    Parse(#[source] object::Error),
    #[error("ELF file has no .modinfo section (not a kernel module?)")]
    NoModinfo,
    #[error("cannot read the .modinfo section")]
    Section(#[source] object::Error),
}

/// The `key=value` pairs of a module's `.modinfo` section, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub fields: Vec<(String, String)>,
}

impl ModInfo {
    /// Parse the raw section: NUL-separated `key=value` strings (NUL padding
    /// between them is allowed; a string without `=` is skipped).
    pub fn parse(section: &[u8]) -> ModInfo {
        let fields = section
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                let s = String::from_utf8_lossy(s);
                let (k, v) = s.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect();
        ModInfo { fields }
    }

    /// Every value of `key`.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The module's own name (`name=`), if recorded.
    pub fn name(&self) -> Option<&str> {
        self.values("name").next()
    }

    /// The hard dependencies (`depends=a,b,c`), empty entries dropped.
    pub fn depends(&self) -> Vec<String> {
        self.values("depends")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Read the `.modinfo` section of a kernel module (uncompressed ELF bytes).
pub fn modinfo(elf: &[u8]) -> Result<ModInfo, ElfError> {
    let file = object::File::parse(elf).map_err(ElfError::Parse)?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or(ElfError::NoModinfo)?;
    let data = section.data().map_err(ElfError::Section)?;
    Ok(ModInfo::parse(data))
}

/// Whether an ELF executable is statically linked (it has no `PT_INTERP`
/// program header, so it runs without a dynamic loader or shared libraries).
pub fn is_static_executable(elf: &[u8]) -> Result<bool, ElfError> {
    let file = object::File::parse(elf).map_err(ElfError::Parse)?;
    // The interpreter segment is the only one whose contents name a path;
    // object exposes segments generically, so look for the ELF type.
    let has_interp = match &file {
        object::File::Elf64(f) => f
            .elf_program_headers()
            .iter()
            .any(|ph| ph.p_type.get(f.endian()) == object::elf::PT_INTERP),
        object::File::Elf32(f) => f
            .elf_program_headers()
            .iter()
            .any(|ph| ph.p_type.get(f.endian()) == object::elf::PT_INTERP),
        _ => file
            .segments()
            .any(|s| s.name().ok().flatten() == Some(".interp")),
    };
    Ok(!has_interp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_fields_and_depends() {
        let raw = b"license=GPL\0\0\0depends=jbd2,mbcache,crc16\0name=ext4\0garbage\0softdep=pre: crypto-crc32c\0";
        let m = ModInfo::parse(raw);
        assert_eq!(m.name(), Some("ext4"));
        assert_eq!(m.depends(), ["jbd2", "mbcache", "crc16"]);
        assert_eq!(
            m.values("softdep").collect::<Vec<_>>(),
            ["pre: crypto-crc32c"]
        );
    }

    #[test]
    fn empty_depends_is_no_dependency() {
        let m = ModInfo::parse(b"depends=\0name=loop\0");
        assert!(m.depends().is_empty());
    }

    #[test]
    fn garbage_is_not_elf() {
        assert!(matches!(modinfo(b"not an elf"), Err(ElfError::Parse(_))));
    }

    #[test]
    fn host_tools_are_classified() {
        // /bin/busybox from busybox-static is static; /bin/ls is dynamic on Debian.
        let busybox =
            std::fs::read("/bin/busybox").expect("busybox-static is installed (make deps)");
        assert!(is_static_executable(&busybox).unwrap());
        let ls = std::fs::read("/bin/ls").expect("/bin/ls exists");
        assert!(!is_static_executable(&ls).unwrap());
    }
}
