//! The `_phase._tcp` TXT record (discovery's txt.rs), from anyone on the
//! LAN. Input byte 0 even: a TXT RDATA (length-prefixed `key=value`
//! strings, RFC 6763 section 6) for `PeerTxt::parse`; odd: a root tag or
//! fingerprint string for `RootTag::from_str`. Oracle: no panic; an
//! accepted record validates and round-trips through its properties.
use crate::txt::{PeerTxt, RootTag};

/// RFC 6763 6.3/6.4: each string is `key` or `key=value`; a string that is
/// not UTF-8 in its key is skipped here (mdns-sd hands keys as text).
fn rdata(mut data: &[u8]) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let n = usize::from(len).min(rest.len());
        let (s, rest) = rest.split_at(n);
        data = rest;
        let (k, v) = match s.iter().position(|b| *b == b'=') {
            Some(i) => (&s[..i], Some(s[i + 1..].to_vec())),
            None => (s, None),
        };
        if let Ok(k) = std::str::from_utf8(k) {
            out.push((k.to_owned(), v));
        }
    }
    out
}

/// One input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        if let Ok(s) = std::str::from_utf8(rest) {
            if let Ok(tag) = s.parse::<RootTag>() {
                assert_eq!(tag.to_string().parse::<RootTag>().ok(), Some(tag));
            }
        }
        return;
    }
    let props = rdata(rest);
    let Ok(txt) = PeerTxt::parse(props.iter().map(|(k, v)| (k.as_str(), v.as_deref()))) else {
        return;
    };
    txt.validate().expect("a parsed record validates");
    let out = txt.to_properties();
    let back = PeerTxt::parse(out.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes()))))
        .expect("its own properties parse");
    assert_eq!(back, txt);
}
