//! kernel/config-x86_64 describes the kernel we ship: every option it asks
//! for is set in Debian's config (`=y` built in; `=m` as a module or built
//! in). Both fragments parse and name only CONFIG_ options.
use super::common;

use std::collections::BTreeMap;

fn fragment(name: &str) -> BTreeMap<String, String> {
    let path = common::repo().join("kernel").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}:{}: not KEY=VALUE: {line}", i + 1));
        assert!(k.starts_with("CONFIG_"), "{name}:{}: {k}", i + 1);
        assert!(matches!(v, "y" | "m"), "{name}:{}: {line}", i + 1);
        assert!(
            out.insert(k.to_owned(), v.to_owned()).is_none(),
            "{name}: {k} twice"
        );
    }
    assert!(out.len() > 30, "{name} is suspiciously short");
    out
}

#[test]
fn x86_64_fragment_is_satisfied_by_the_debian_kernel() {
    let kernel = common::kernel();
    let mut missing = Vec::new();
    for (k, want) in fragment("config-x86_64") {
        let have = kernel.config_value(&k).unwrap();
        let ok = matches!(
            (want.as_str(), have.as_deref()),
            ("y", Some("y")) | ("m", Some("y" | "m"))
        );
        if !ok {
            missing.push(format!("{k}: fragment {want}, Debian {have:?}"));
        }
    }
    assert!(missing.is_empty(), "Debian's kernel lacks: {missing:#?}");
}

#[test]
fn arm64_fragment_parses() {
    let f = fragment("config-arm64");
    for k in [
        "CONFIG_EFI_STUB",
        "CONFIG_RD_ZSTD",
        "CONFIG_KEXEC_FILE",
        "CONFIG_SERIAL_AMBA_PL011_CONSOLE",
    ] {
        assert_eq!(f.get(k).map(String::as_str), Some("y"), "{k}");
    }
}
