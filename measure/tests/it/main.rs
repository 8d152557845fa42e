//! Integration tests of the measure crate (one binary, one module per
//! scenario).

mod firmware_log;
mod quote;
mod sample;
mod swtpm;
