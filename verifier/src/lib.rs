//! TUF 1.0 trust core for Phase Boot (placeholder until issue 2 lands).
#![forbid(unsafe_code)]
