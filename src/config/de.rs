//! Serde helpers for the config's value types: sizes, durations, addresses, port ranges, optional paths.
//!
//! Each helper module has a `deserialize` that accepts what a person writes in TOML or an environment
//! variable, with an error message that says what to write instead, and a `serialize` that writes the
//! value back the way a person would (so `check-config` prints `"1MiB"`, not `1048576`).

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Serializer;

/// Formats a byte count with the largest binary unit that divides it exactly: `1048576` → `"1MiB"`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "PiB"),
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    if bytes == 0 {
        return "0".into();
    }
    for (unit, name) in UNITS {
        if bytes % unit == 0 {
            return format!("{}{name}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Formats a duration as humantime does (`"30s"`, `"10m"`, `"1h 30m"`), `"0s"` for zero.
pub fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(duration).to_string()
}

/// Parses a size such as `"1MiB"`, `"64KiB"`, `"10GB"` or `"0"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::parse_size(text.trim()).map_err(|e| {
        format!("{text:?} is not a size ({e}); write a size such as \"1MiB\", \"64KiB\" or \"0\"")
    })
}

/// Parses a port range such as `"30000-30100"` or a single port `"30000"`.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = |why: &str| {
        format!("{text:?} is not a port range ({why}); write two ports such as \"30000-30100\"")
    };
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| bad(&format!("{:?} is not a port number 1-65535", s.trim())))
    };
    match text.split_once('-') {
        Some((lo, hi)) => Ok(port(lo)?..=port(hi)?),
        None => {
            let p = port(text)?;
            Ok(p..=p)
        }
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not a socket address; write an IP address and a port such as \
             \"127.0.0.1:2121\" or \"[::1]:2121\" (host names are not accepted)"
        )
    })
}

/// A visitor over one string-ish value that maps it through `parse`.
struct StrVisitor<F> {
    expecting: &'static str,
    parse: F,
    /// Whether unsigned integers are accepted as they are (sizes, counts).
    accept_unsigned: bool,
}

impl<'de, T, F> Visitor<'de> for StrVisitor<F>
where
    F: Fn(&str) -> Result<T, String>,
    T: TryFromU64,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        match (self.accept_unsigned, T::try_from_u64(v)) {
            (true, Some(value)) => Ok(value),
            _ => Err(E::invalid_type(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }
}

/// Values that a plain integer in the config can stand for.
trait TryFromU64: Sized {
    fn try_from_u64(v: u64) -> Option<Self>;
}

impl TryFromU64 for u64 {
    fn try_from_u64(v: u64) -> Option<Self> {
        Some(v)
    }
}

impl TryFromU64 for Option<u64> {
    fn try_from_u64(v: u64) -> Option<Self> {
        Some((v != 0).then_some(v))
    }
}

impl TryFromU64 for RangeInclusive<u16> {
    fn try_from_u64(v: u64) -> Option<Self> {
        let p = u16::try_from(v).ok()?;
        Some(p..=p)
    }
}

macro_rules! never_from_u64 {
    ($($t:ty),*) => {$(
        impl TryFromU64 for $t {
            fn try_from_u64(_: u64) -> Option<Self> {
                None
            }
        }
    )*};
}
never_from_u64!(Duration, SocketAddr, Option<SocketAddr>, Option<PathBuf>);

/// Sizes: `"1MiB"` or a plain number of bytes.
pub mod size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(StrVisitor {
            expecting: "a size such as \"1MiB\"",
            parse: parse_size,
            accept_unsigned: true,
        })
    }
}

/// Optional limits (quotas, bandwidth): a size, where `"0"` (or leaving the key out) means no limit.
pub mod opt_size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(v.unwrap_or(0)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(StrVisitor {
            expecting: "a size such as \"10GiB\", or \"0\" for no limit",
            parse: |s: &str| parse_size(s).map(|v| (v != 0).then_some(v)),
            accept_unsigned: true,
        })
    }
}

/// Optional counts (file quota): a number, where `0` (or leaving the key out) means no limit.
pub mod opt_count {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(StrVisitor {
            expecting: "a whole number such as 100000, or 0 for no limit",
            parse: |s: &str| {
                s.trim()
                    .replace('_', "")
                    .parse::<u64>()
                    .map(|v| (v != 0).then_some(v))
                    .map_err(|_| {
                        format!("{s:?} is not a whole number; write a count such as 100000, or 0 for no limit")
                    })
            },
            accept_unsigned: true,
        })
    }
}

/// Durations: `"30s"`, `"10m"`, `"1h 30m"` (humantime).
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(StrVisitor {
            expecting: "a duration such as \"30s\", \"10m\" or \"1h\"",
            parse: |s: &str| {
                humantime::parse_duration(s.trim()).map_err(|e| {
                    format!("{s:?} is not a duration ({e}); write a duration such as \"30s\", \"10m\" or \"1h\"")
                })
            },
            accept_unsigned: false,
        })
    }
}

/// Socket addresses: `"127.0.0.1:2121"`.
pub mod addr {
    use super::*;

    pub fn serialize<S: Serializer>(v: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        d.deserialize_any(StrVisitor {
            expecting: "a socket address such as \"127.0.0.1:2121\"",
            parse: parse_addr,
            accept_unsigned: false,
        })
    }
}

/// Optional socket addresses, where `""` means off.
pub mod opt_addr {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(addr) => s.serialize_str(&addr.to_string()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        d.deserialize_any(StrVisitor {
            expecting: "a socket address such as \"127.0.0.1:990\", or \"\" for off",
            parse: |s: &str| match s.trim() {
                "" => Ok(None),
                _ => parse_addr(s).map(Some),
            },
            accept_unsigned: false,
        })
    }
}

/// Port ranges: `"30000-30100"`.
pub mod port_range {
    use super::*;

    pub fn serialize<S: Serializer>(v: &RangeInclusive<u16>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}-{}", v.start(), v.end()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RangeInclusive<u16>, D::Error> {
        d.deserialize_any(StrVisitor {
            expecting: "a port range such as \"30000-30100\"",
            parse: parse_port_range,
            accept_unsigned: true,
        })
    }
}

/// Parses an address range such as `"10.0.0.0/24"`, or one address (`"192.0.2.7"`, a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let t = text.trim();
    t.parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!(
                "{text:?} is not an address or an address range; write one such as \"10.0.0.5\", \
                 \"10.0.0.0/24\" or \"2001:db8::/64\""
            )
        })
}

/// Lists of address ranges: `["10.0.0.0/24", "192.0.2.7"]`.
pub mod cidrs {
    use super::*;
    use serde::Deserialize;

    pub fn serialize<S: Serializer>(v: &[ipnet::IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|n| n.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| parse_cidr(t).map_err(de::Error::custom))
            .collect()
    }
}

/// Optional file paths, where `""` means none.
pub mod opt_path {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(path) => s.serialize_str(&path.to_string_lossy()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        d.deserialize_any(StrVisitor {
            expecting: "a file path, or \"\" for none",
            parse: |s: &str| Ok((!s.is_empty()).then(|| PathBuf::from(s))),
            accept_unsigned: false,
        })
    }
}

/// Free-form text (names, passwords, prefixes). Also accepts a number or a boolean and keeps its text,
/// because an environment variable such as `FILEGATE__MQTT__PASSWORD=1234` arrives as a number.
pub mod text {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size(" 10GiB "), Ok(10 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert!(parse_size("1 MeB").unwrap_err().contains("\"1MiB\""));
        assert!(parse_size("").is_err());
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(64 << 10), "64KiB");
        assert_eq!(format_size(10 << 30), "10GiB");
        assert_eq!(format_size(1000), "1000");
        for n in [0, 1, 1000, 1 << 20, 3 << 30, 12345 << 10] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
    }

    #[test]
    fn durations_format_round_trip() {
        for (text, secs) in [
            ("30s", 30),
            ("10m", 600),
            ("5m", 300),
            ("1h", 3600),
            ("0s", 0),
        ] {
            let d = humantime::parse_duration(text).unwrap();
            assert_eq!(d, Duration::from_secs(secs));
            assert_eq!(format_duration(d), text);
        }
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("30000-30100"), Ok(30000..=30100));
        assert_eq!(parse_port_range(" 30000 - 30100 "), Ok(30000..=30100));
        assert_eq!(parse_port_range("2000"), Ok(2000..=2000));
        // Order and zero are checked by validation, which can name the fix.
        let backwards = parse_port_range("200-100").unwrap();
        assert_eq!((*backwards.start(), *backwards.end()), (200, 100));
        assert!(parse_port_range("a-b").is_err());
        assert!(parse_port_range("1-70000").is_err());
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_addr("127.0.0.1:2121").unwrap().port(), 2121);
        assert!(parse_addr("[::1]:22").is_ok());
        assert!(parse_addr("localhost:22")
            .unwrap_err()
            .contains("127.0.0.1:2121"));
    }
}
