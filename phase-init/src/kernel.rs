//! What the kernel tells PID 1 about this boot: its release, and its
//! command line as the `cmdline` boot step. The parsing rules are
//! [`crate::cmdline`]'s, a module the fuzz crate compiles on its own (no
//! `crate::` item), so its step lives here.

use crate::cmdline::{self, Config};
use crate::step::Status;

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// The `cmdline` boot step: `/proc/cmdline` parsed; each problem one
/// warning, the defaults where a word is wrong.
pub fn cmdline_step() -> (Config, Status) {
    // Bytes, not text: a boot loader may pass anything, and one non-UTF-8
    // byte must cost only the word it is in (cmdline::parse_bytes).
    match std::fs::read("/proc/cmdline") {
        Ok(bytes) => {
            let parsed = cmdline::parse_bytes(&bytes);
            let problems = parsed.warnings.iter().map(ToString::to_string).collect();
            let detail = parsed.config.summary();
            (parsed.config, Status::with_problems(detail, problems))
        }
        Err(e) => (
            Config::default(),
            Status::fail(format!(
                "cannot read /proc/cmdline: {e}; using the defaults"
            )),
        ),
    }
}
