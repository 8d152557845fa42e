//! The `_phase._tcp` TXT record: what a Phase Boot peer says about itself on
//! the LAN, and the checks a browser applies before believing any of it.
//!
//! TXT values arrive from anyone on the link. They are bounded (count and
//! size), parsed strictly (no "best effort" repair) and only ever used to
//! locate a peer: every byte fetched from that peer is verified against TUF
//! metadata anyway, so a lying TXT record costs at most a wasted connection.
//!
//! Also compiled on its own by the fuzz targets (`fuzz/`, docs/fuzzing.md):
//! it uses only `std`, `hex` and `thiserror`, and no `crate::` item.

use std::fmt;
use std::str::FromStr;

/// The protocol version this crate speaks (`v=1`).
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest peer id accepted (a libp2p Ed25519 peer id in base58 is 52).
pub const MAX_ID_LEN: usize = 64;
/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 32;
/// Most TXT properties a record may carry before it is rejected outright.
pub const MAX_PROPERTIES: usize = 16;
/// Largest sum of key and value bytes accepted over all TXT properties.
pub const MAX_TXT_BYTES: usize = 512;

/// The first 8 bytes (16 hex digits) of the trust root's key fingerprint.
///
/// Fleets with different trust roots share a LAN without mixing: a browser
/// drops every peer whose tag differs from its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootTag([u8; 8]);

impl RootTag {
    /// The tag of a full 32-byte root key fingerprint.
    pub fn from_fingerprint(fingerprint: &[u8; 32]) -> Self {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&fingerprint[..8]);
        Self(tag)
    }

    /// The raw 8 bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for RootTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for RootTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootTag({self})")
    }
}

/// Parses either the 16-hex tag itself or a full 64-hex fingerprint (of which
/// the first 16 digits are taken). Lower or upper case.
impl FromStr for RootTag {
    type Err = TxtError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 && s.len() != 64 {
            return Err(TxtError::Invalid {
                key: "root",
                why: "must be 16 or 64 hex digits",
            });
        }
        // Every byte is checked before any slicing: with a multibyte
        // character, byte 16 need not be a character boundary.
        let not_hex = || TxtError::Invalid {
            key: "root",
            why: "not hex",
        };
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_hex());
        }
        let mut tag = [0u8; 8];
        hex::decode_to_slice(&s.as_bytes()[..16], &mut tag).map_err(|_| not_hex())?;
        Ok(Self(tag))
    }
}

/// Why a TXT record was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxtError {
    /// A required key is absent.
    #[error("TXT key `{0}` is missing")]
    Missing(&'static str),
    /// A key is present but its value is malformed.
    #[error("TXT key `{key}` is invalid: {why}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong with its value.
        why: &'static str,
    },
    /// The peer speaks a protocol version we do not.
    #[error("TXT protocol version {0} is not supported (this node speaks {PROTOCOL_VERSION})")]
    Version(u32),
    /// Too many properties or too many bytes in total.
    #[error("TXT record too large ({properties} properties, {bytes} bytes)")]
    TooLarge {
        /// Property count.
        properties: usize,
        /// Sum of key and value lengths.
        bytes: usize,
    },
}

/// What a Phase Boot peer announces in its TXT record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTxt {
    /// Protocol version (`v`).
    pub version: u32,
    /// Peer id (`id`): 1..=64 of `[A-Za-z0-9._-]`.
    pub id: String,
    /// Trust root tag (`root`).
    pub root: RootTag,
    /// Version of the newest trusted timestamp metadata the peer holds (`ts`).
    pub timestamp_version: u64,
    /// Channel the peer serves (`ch`): 1..=32 of `[a-z0-9._-]`.
    pub channel: String,
    /// HTTP port of the peer's content server (`port`), when it differs from
    /// the SRV port or the SRV record is not trusted for it.
    pub port: Option<u16>,
}

impl PeerTxt {
    /// Checks every field the way [`PeerTxt::parse`] would.
    pub fn validate(&self) -> Result<(), TxtError> {
        if self.version != PROTOCOL_VERSION {
            return Err(TxtError::Version(self.version));
        }
        validate_id(&self.id)?;
        validate_channel(&self.channel)?;
        if self.port == Some(0) {
            return Err(TxtError::Invalid {
                key: "port",
                why: "must be 1..=65535",
            });
        }
        Ok(())
    }

    /// The properties to publish, in a stable order.
    pub fn to_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![
            ("v".to_owned(), self.version.to_string()),
            ("id".to_owned(), self.id.clone()),
            ("root".to_owned(), self.root.to_string()),
            ("ts".to_owned(), self.timestamp_version.to_string()),
            ("ch".to_owned(), self.channel.clone()),
        ];
        if let Some(port) = self.port {
            props.push(("port".to_owned(), port.to_string()));
        }
        props
    }

    /// Parses and validates raw TXT properties (key, value-if-any). Unknown
    /// keys are ignored (forward compatibility), so is every occurrence of a
    /// key after its first (RFC 6763 6.4); an oversized record or any
    /// malformed known value rejects the record.
    pub fn parse<'a, I>(props: I) -> Result<Self, TxtError>
    where
        I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    {
        let mut count = 0usize;
        let mut bytes = 0usize;
        let mut fields: [Option<&'a [u8]>; 6] = [None; 6];
        const KEYS: [&str; 6] = ["v", "id", "root", "ts", "ch", "port"];
        for (key, value) in props {
            count += 1;
            bytes += key.len() + value.map_or(0, <[u8]>::len);
            if count > MAX_PROPERTIES || bytes > MAX_TXT_BYTES {
                return Err(TxtError::TooLarge {
                    properties: count,
                    bytes,
                });
            }
            // RFC 6763 6.4: keys compare case-insensitively.
            let Some(slot) = KEYS.iter().position(|k| k.eq_ignore_ascii_case(key)) else {
                continue;
            };
            // RFC 6763 6.4: a repeated key is ignored after its first occurrence.
            if fields[slot].is_some() {
                continue;
            }
            let key = KEYS[slot];
            fields[slot] = Some(value.ok_or(TxtError::Invalid {
                key,
                why: "has no value",
            })?);
        }
        let [v, id, root, ts, ch, port] = fields;

        let version = parse_decimal(v.ok_or(TxtError::Missing("v"))?, "v", 9)?;
        let version = u32::try_from(version).map_err(|_| TxtError::Invalid {
            key: "v",
            why: "out of range",
        })?;
        if version != PROTOCOL_VERSION {
            return Err(TxtError::Version(version));
        }
        let id = ascii(id.ok_or(TxtError::Missing("id"))?, "id")?;
        validate_id(id)?;
        let root: RootTag = ascii(root.ok_or(TxtError::Missing("root"))?, "root")?.parse()?;
        let timestamp_version = parse_decimal(ts.ok_or(TxtError::Missing("ts"))?, "ts", 20)?;
        let channel = ascii(ch.ok_or(TxtError::Missing("ch"))?, "ch")?;
        validate_channel(channel)?;
        let port = match port {
            None => None,
            Some(raw) => {
                let p = parse_decimal(raw, "port", 5)?;
                match u16::try_from(p) {
                    Ok(p) if p != 0 => Some(p),
                    _ => {
                        return Err(TxtError::Invalid {
                            key: "port",
                            why: "must be 1..=65535",
                        })
                    }
                }
            }
        };
        Ok(Self {
            version,
            id: id.to_owned(),
            root,
            timestamp_version,
            channel: channel.to_owned(),
            port,
        })
    }
}

fn ascii<'a>(raw: &'a [u8], key: &'static str) -> Result<&'a str, TxtError> {
    if !raw.is_ascii() {
        return Err(TxtError::Invalid {
            key,
            why: "not ASCII",
        });
    }
    std::str::from_utf8(raw).map_err(|_| TxtError::Invalid {
        key,
        why: "not ASCII",
    })
}

/// A decimal number with at most `max_digits` digits, no sign, no spaces.
fn parse_decimal(raw: &[u8], key: &'static str, max_digits: usize) -> Result<u64, TxtError> {
    if raw.is_empty() || raw.len() > max_digits || !raw.iter().all(u8::is_ascii_digit) {
        return Err(TxtError::Invalid {
            key,
            why: "not a decimal number",
        });
    }
    // Digits only, at most 20 of them: parse can still overflow u64.
    ascii(raw, key)?.parse().map_err(|_| TxtError::Invalid {
        key,
        why: "out of range",
    })
}

/// Peer ids: 1..=64 of `[A-Za-z0-9._-]`, so they are safe in logs, file names
/// and DNS labels.
pub fn validate_id(id: &str) -> Result<(), TxtError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(TxtError::Invalid {
            key: "id",
            why: "must be 1..=64 characters",
        });
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(TxtError::Invalid {
            key: "id",
            why: "only A-Z a-z 0-9 . _ - allowed",
        });
    }
    Ok(())
}

/// Channel names: 1..=32 of `[a-z0-9._-]`.
pub fn validate_channel(ch: &str) -> Result<(), TxtError> {
    if ch.is_empty() || ch.len() > MAX_CHANNEL_LEN {
        return Err(TxtError::Invalid {
            key: "ch",
            why: "must be 1..=32 characters",
        });
    }
    if !ch.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
    }) {
        return Err(TxtError::Invalid {
            key: "ch",
            why: "only a-z 0-9 . _ - allowed",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Vec<(&'static str, Option<&'static [u8]>)> {
        vec![
            ("v", Some(b"1")),
            ("id", Some(b"node-1")),
            ("root", Some(b"0123456789abcdef")),
            ("ts", Some(b"42")),
            ("ch", Some(b"stable")),
            ("port", Some(b"8080")),
        ]
    }

    #[test]
    fn parses_a_good_record() {
        let txt = PeerTxt::parse(good()).unwrap();
        assert_eq!(txt.id, "node-1");
        assert_eq!(txt.root.to_string(), "0123456789abcdef");
        assert_eq!(txt.timestamp_version, 42);
        assert_eq!(txt.channel, "stable");
        assert_eq!(txt.port, Some(8080));
        let round: Vec<_> = txt.to_properties();
        let again =
            PeerTxt::parse(round.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes())))).unwrap();
        assert_eq!(again, txt);
    }

    #[test]
    fn rejects_each_malformed_field() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("v", b"2", "version"),
            ("v", b"", "invalid"),
            ("v", b"1 ", "invalid"),
            ("id", b"", "invalid"),
            ("id", b"a b", "invalid"),
            ("id", "é".as_bytes(), "invalid"),
            ("id", &[b'a'; 65], "invalid"),
            ("root", b"0123456789abcde", "invalid"),
            ("root", b"0123456789abcdeg", "invalid"),
            ("ts", b"-1", "invalid"),
            ("ts", b"99999999999999999999", "invalid"),
            ("ts", b"123456789012345678901", "invalid"),
            ("ch", b"Stable", "invalid"),
            ("ch", b"", "invalid"),
            ("port", b"0", "invalid"),
            ("port", b"65536", "invalid"),
            ("port", b"80a", "invalid"),
        ];
        for (key, value, want) in cases {
            let props: Vec<_> = good()
                .into_iter()
                .map(|(k, v)| if k == *key { (k, Some(*value)) } else { (k, v) })
                .collect();
            let err = PeerTxt::parse(props).unwrap_err();
            let msg = err.to_string();
            match *want {
                "version" => assert!(matches!(err, TxtError::Version(2)), "{key}: {msg}"),
                _ => assert!(msg.contains(&format!("`{key}`")), "{key}={value:?}: {msg}"),
            }
        }
    }

    #[test]
    fn rejects_missing_duplicate_and_oversized() {
        for key in ["v", "id", "root", "ts", "ch"] {
            let props: Vec<_> = good().into_iter().filter(|(k, _)| *k != key).collect();
            assert_eq!(PeerTxt::parse(props).unwrap_err(), TxtError::Missing(key));
        }
        let mut dup = good();
        dup.push(("ID", Some(b"other id")));
        assert_eq!(PeerTxt::parse(dup).unwrap().id, "node-1");
        let mut many = good();
        for _ in 0..MAX_PROPERTIES {
            many.push(("x", Some(b"y")));
        }
        assert!(matches!(
            PeerTxt::parse(many),
            Err(TxtError::TooLarge { .. })
        ));
        let mut big = good();
        big.push(("pad", Some(&[b'z'; 250])));
        big.push(("pad2", Some(&[b'z'; 250])));
        assert!(matches!(
            PeerTxt::parse(big),
            Err(TxtError::TooLarge { .. })
        ));
        let mut flag = good();
        flag[1] = ("id", None);
        assert!(PeerTxt::parse(flag).is_err());
    }

    #[test]
    fn unknown_keys_are_ignored_and_port_is_optional() {
        let mut props: Vec<_> = good().into_iter().filter(|(k, _)| *k != "port").collect();
        props.push(("future", Some(b"whatever")));
        props.push(("flag", None));
        let txt = PeerTxt::parse(props).unwrap();
        assert_eq!(txt.port, None);
    }

    #[test]
    fn root_tag_parses_tag_or_fingerprint() {
        let fp = [0xabu8; 32];
        let tag = RootTag::from_fingerprint(&fp);
        assert_eq!(tag.to_string(), "abababababababab");
        assert_eq!(hex::encode(fp).parse::<RootTag>().unwrap(), tag);
        assert_eq!("ABABABABABABABAB".parse::<RootTag>().unwrap(), tag);
        assert!("abab".parse::<RootTag>().is_err());
        let mut bad = hex::encode(fp);
        bad.replace_range(63.., "x");
        assert!(bad.parse::<RootTag>().is_err());
    }

    proptest::proptest! {
        /// Arbitrary TXT properties never panic the parser, and whatever it
        /// accepts is valid and survives a round trip.
        #[test]
        fn parser_is_total_and_accepts_only_valid(
            props in proptest::collection::vec(
                ("[a-zA-Z]{0,5}", proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..80))),
                0..24,
            )
        ) {
            let it = props.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
            if let Ok(txt) = PeerTxt::parse(it) {
                proptest::prop_assert!(txt.validate().is_ok());
                let round = txt.to_properties();
                let again = PeerTxt::parse(round.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes()))));
                proptest::prop_assert_eq!(again, Ok(txt));
            }
        }

        /// Mutations of a good record: never a panic; an accepted record
        /// always has well-formed fields.
        #[test]
        fn mutated_good_records(pos in 0usize..64, byte in proptest::num::u8::ANY, cut in 0usize..64) {
            let mut raw: Vec<(String, Vec<u8>)> = good()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.unwrap_or_default().to_vec()))
                .collect();
            let total: usize = raw.iter().map(|(_, v)| v.len()).sum();
            let mut at = pos % total.max(1);
            for (_, v) in raw.iter_mut() {
                if at < v.len() {
                    v[at] = byte;
                    v.truncate(v.len().min(at + 1 + cut));
                    break;
                }
                at -= v.len();
            }
            let it = raw.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice())));
            if let Ok(txt) = PeerTxt::parse(it) {
                proptest::prop_assert!(validate_id(&txt.id).is_ok());
                proptest::prop_assert!(validate_channel(&txt.channel).is_ok());
                proptest::prop_assert_eq!(txt.root.to_string().len(), 16);
            }
        }
    }
}
