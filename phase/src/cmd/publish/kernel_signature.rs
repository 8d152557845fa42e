//! The kernel target's Authenticode signature, read before anything is
//! published. Under Secure Boot the target machine's kernel is locked down
//! and `kexec_file_load` accepts only a kernel whose PE signature one of its
//! keyrings trusts (otherwise ENODATA or ENOKEY), so a kernel without a
//! signature would be published, fetched and verified, and then refused at
//! the very last step of every Secure Boot boot.
//!
//! What this reads is whether a signature is there, not who made it: the
//! machine's keyrings decide that. A file that is not a PE image at all (a
//! bzImage built without the EFI stub, or anything else) cannot carry a
//! signature, so it is reported as such and treated like an unsigned one.
use std::path::Path;

use anyhow::Context;
use image::authenticode::authenticode_signed;

/// What the kernel target carries (`kernel_signature` in `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelSignature {
    /// A PE image with an Authenticode signature.
    Signed,
    /// A PE image without one.
    Unsigned,
    /// Not a PE image: no signature can be there.
    NotPe,
}

/// What [`check`] found, and the warning to print once the kernel is
/// published (none for a signed kernel).
#[derive(Debug)]
pub struct Finding {
    pub signature: KernelSignature,
    pub warning: Option<String>,
}

/// Reads `path`'s signature before anything is published. An unsigned or
/// non-PE kernel is an error with `require` (one line naming the file);
/// without it, a warning the caller prints after publishing (so a publish
/// that fails for another reason still says one thing).
pub fn check(path: &Path, require: bool) -> anyhow::Result<Finding> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {} failed", path.display()))?;
    let (found, problem) = match authenticode_signed(&bytes) {
        Ok(true) => {
            return Ok(Finding {
                signature: KernelSignature::Signed,
                warning: None,
            })
        }
        Ok(false) => (
            KernelSignature::Unsigned,
            format!("kernel {} has no Authenticode signature", path.display()),
        ),
        Err(not_pe) => (
            KernelSignature::NotPe,
            format!(
                "kernel {} cannot be checked for a signature: {not_pe}",
                path.display()
            ),
        ),
    };
    if require {
        anyhow::bail!("{problem} (--require-signed-kernel): nothing published");
    }
    Ok(Finding {
        signature: found,
        warning: Some(format!(
            "{problem}; Secure Boot machines will not kexec it (lockdown), \
             --require-signed-kernel refuses to publish such a kernel"
        )),
    })
}
