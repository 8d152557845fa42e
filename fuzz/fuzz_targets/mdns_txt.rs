//! The `_phase._tcp` TXT record (discovery's txt.rs), from anyone on the
//! LAN. Input byte 0 even: a TXT RDATA (length-prefixed `key=value`
//! strings, RFC 6763 section 6) for `PeerTxt::parse`; odd: a root tag or
//! fingerprint string for `RootTag::from_str`. Oracle: no panic; an
//! accepted record validates and round-trips through its properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::mdns_txt::run(data));
