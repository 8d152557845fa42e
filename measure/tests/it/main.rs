//! Integration tests of the measure crate (one binary, one module per
//! scenario).

mod sample;
mod swtpm;
