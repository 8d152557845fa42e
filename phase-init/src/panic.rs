//! PID 1 must not die: a panic is written to the console and `/dev/kmsg`, and
//! the boot loop (in `main.rs`) catches the unwind and drops to the rescue
//! shell. This needs `panic = "unwind"`, which the release profile keeps.

use crate::console::console;

/// Installs the hook that reports a panic on every console sink.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        console().emergency(&format!("PANIC in phase-init{place}: {msg}"));
    }));
}
