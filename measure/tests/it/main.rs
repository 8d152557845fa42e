//! Integration tests of the measure crate (one binary, one module per
//! scenario).

mod quote;
mod sample;
mod swtpm;
