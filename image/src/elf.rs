//! The facts we read from ELF files: a kernel module's `.modinfo` section,
//! and how an executable is linked (its dynamic loader and the shared
//! libraries it names).
use object::read::elf::{ElfFile, FileHeader, ProgramHeader};
use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not a readable ELF file")]
    Parse(#[source] object::Error),
    #[error("ELF file has no .modinfo section (not a kernel module?)")]
    NoModinfo,
    #[error("cannot read the .modinfo section")]
    Section(#[source] object::Error),
    #[error("not an ELF file (another object format)")]
    NotElf,
    #[error("cannot read the program headers or the dynamic section")]
    Dynamic(#[source] object::Error),
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

/// How an ELF file is loaded: the dynamic loader it names (`PT_INTERP`)
/// and the shared libraries it needs (`DT_NEEDED`, in file order). A static
/// executable has neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linking {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    /// `e_machine` (`object::elf::EM_*`): which multiarch library
    /// directories apply.
    pub machine: u16,
}

impl Linking {
    /// Whether the file runs without a dynamic loader or shared libraries.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

/// Read how an ELF executable or shared library is linked.
pub fn linking(elf: &[u8]) -> Result<Linking, ElfError> {
    match object::File::parse(elf).map_err(ElfError::Parse)? {
        object::File::Elf64(f) => linking_of(&f),
        object::File::Elf32(f) => linking_of(&f),
        _ => Err(ElfError::NotElf),
    }
}

fn linking_of<Elf: FileHeader>(f: &ElfFile<'_, Elf>) -> Result<Linking, ElfError> {
    let endian = f.endian();
    let mut interpreter = None;
    for ph in f.elf_program_headers() {
        if let Some(path) = ph
            .interpreter(endian, f.data())
            .map_err(ElfError::Dynamic)?
        {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    let table = f.elf_dynamic_table().map_err(ElfError::Dynamic)?;
    let mut needed = Vec::new();
    for d in &table {
        if d.tag == object::elf::DT_NEEDED {
            let name = table.string(d).map_err(ElfError::Dynamic)?;
            needed.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(Linking {
        interpreter,
        needed,
        machine: f.elf_header().e_machine(endian),
    })
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
        assert!(linking(&busybox).unwrap().is_static());
        let ls = std::fs::read("/bin/ls").expect("/bin/ls exists");
        assert!(!linking(&ls).unwrap().is_static());
    }

    #[test]
    fn linking_names_the_loader_and_the_needed_libraries() {
        let ls = linking(&std::fs::read("/bin/ls").unwrap()).unwrap();
        assert_eq!(
            ls.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(ls.needed.iter().any(|n| n == "libc.so.6"), "{ls:?}");
        assert_eq!(ls.machine, object::elf::EM_X86_64);
        let libc = linking(&std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap()).unwrap();
        assert_eq!(
            libc.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(libc.needed, ["ld-linux-x86-64.so.2"]);
        let busybox = linking(&std::fs::read("/bin/busybox").unwrap()).unwrap();
        assert!(busybox.is_static(), "{busybox:?}");
    }
}
