//! Values parsed once at the edge (a TOML file, a JSON body, a command-line argument) into
//! types that cannot hold a bad value, each with the one error text every caller shows.
use std::{fmt, str::FromStr};

use dataplane_common::{
    packet::{parse_mac, Mac},
    rules::MacMatch,
    MAX_VNI,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Implements `Display`, `FromStr` and serde (as a string) for a string-shaped newtype
/// from its `parse` and `fmt`; the serde error is the parse error's text.
macro_rules! string_shaped {
    ($t:ty) => {
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$t>::parse(s)
            }
        }
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Implements, for a newtype over a valid `String`, what lets it stand where a string
/// does: `as_str`, `Display`, `Deref<Target = str>`, `Borrow<str>`, comparison with `str`,
/// and a `Debug` that shows the string as it is, so messages quote it as written.
macro_rules! string_wrapper {
    ($t:ty) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
        string_shaped!($t);
    };
}

/// The name of an environment, host or VM: 1 to 32 characters from `[A-Za-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,32}$")]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Name, String> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Name(s.to_string()))
        } else {
            Err(format!(
                "{s:?} must be 1 to 32 characters from [A-Za-z0-9_-]"
            ))
        }
    }
}

string_wrapper!(Name);

/// A Linux interface name: 1 to 15 bytes without '/', ':' or whitespace.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String)]
pub struct IfName(String);

impl IfName {
    pub fn parse(s: &str) -> Result<IfName, String> {
        if s.is_empty() || s.len() > 15 {
            return Err(format!("{s:?} must be 1 to 15 bytes long"));
        }
        if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
            return Err(format!("{s:?} is not a valid interface name"));
        }
        Ok(IfName(s.to_string()))
    }
}

string_wrapper!(IfName);

/// A VXLAN network identifier (24 bits, 0 reserved): the environment on the wire.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(try_from = "u32", into = "u32")]
#[schema(value_type = u32)]
pub struct Vni(u32);

impl Vni {
    pub fn new(v: u32) -> Result<Vni, String> {
        if v == 0 || v > MAX_VNI {
            Err(format!("{v} is outside 1..={MAX_VNI}"))
        } else {
            Ok(Vni(v))
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = String;
    fn try_from(v: u32) -> Result<Vni, String> {
        Vni::new(v)
    }
}

impl From<Vni> for u32 {
    fn from(v: Vni) -> u32 {
        v.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Vni {
    type Err = String;
    fn from_str(s: &str) -> Result<Vni, String> {
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a number in 1..={MAX_VNI}"))?;
        Vni::new(v)
    }
}

/// A unicast MAC address (not multicast, not all zero): what a VM may own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, example = "02:00:00:00:01:01")]
pub struct UnicastMac([u8; 6]);

impl UnicastMac {
    pub fn parse(s: &str) -> Result<UnicastMac, String> {
        match parse_mac(s) {
            Some(m) => {
                UnicastMac::new(m).ok_or_else(|| format!("{s:?} is not a unicast MAC address"))
            }
            None => Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")),
        }
    }

    pub fn new(m: [u8; 6]) -> Option<UnicastMac> {
        (m[0] & 1 == 0 && m != [0; 6]).then_some(UnicastMac(m))
    }

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for UnicastMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Mac(self.0))
    }
}

string_shaped!(UnicastMac);

const SRC_FORMS: &str = "a MAC, \"not MAC\" or \"any\"";
const DST_FORMS: &str = "a MAC, \"not MAC\", \"any\" or \"none\" (the default rule)";

fn format_match(m: &MacMatch, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match m {
        MacMatch::Exact(a) => write!(f, "{}", Mac(*a)),
        MacMatch::Not(a) => write!(f, "not {}", Mac(*a)),
        MacMatch::Any => f.write_str("any"),
        MacMatch::None => f.write_str("none"),
    }
}

/// A forwarding rule's source: a MAC, `not MAC` or `any`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, example = "any")]
pub struct SrcMatch(pub MacMatch);

impl SrcMatch {
    pub fn parse(s: &str) -> Result<SrcMatch, String> {
        MacMatch::parse(s, false)
            .map(SrcMatch)
            .ok_or_else(|| format!("{s:?} is not {SRC_FORMS}"))
    }
}

impl fmt::Display for SrcMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_match(&self.0, f)
    }
}

string_shaped!(SrcMatch);

/// A forwarding rule's destination: a MAC, `not MAC`, `any` or `none` (the default rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, example = "02:00:00:00:01:01")]
pub struct DstMatch(pub MacMatch);

impl DstMatch {
    pub fn parse(s: &str) -> Result<DstMatch, String> {
        MacMatch::parse(s, true)
            .map(DstMatch)
            .ok_or_else(|| format!("{s:?} is not {DST_FORMS}"))
    }
}

impl fmt::Display for DstMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_match(&self.0, f)
    }
}

string_shaped!(DstMatch);

/// A sustained rate in Mbit/s, in (0, 1000000].
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "f64", into = "f64")]
#[schema(value_type = f64)]
pub struct RateMbit(f64);

impl RateMbit {
    pub fn new(v: f64) -> Result<RateMbit, String> {
        if v > 0.0 && v <= 1e6 {
            Ok(RateMbit(v))
        } else {
            Err(format!("{v} is outside (0, 1000000]"))
        }
    }

    pub const fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for RateMbit {
    type Error = String;
    fn try_from(v: f64) -> Result<RateMbit, String> {
        RateMbit::new(v)
    }
}

impl From<RateMbit> for f64 {
    fn from(v: RateMbit) -> f64 {
        v.0
    }
}

impl fmt::Display for RateMbit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A bound's burst in KiB: how much may pass at once after a quiet spell (positive; 64 by
/// default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "u32", into = "u32")]
#[schema(value_type = u32)]
pub struct BurstKib(u32);

impl BurstKib {
    pub fn new(v: u32) -> Result<BurstKib, String> {
        if v == 0 {
            Err("must be positive".into())
        } else {
            Ok(BurstKib(v))
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for BurstKib {
    fn default() -> BurstKib {
        BurstKib(64)
    }
}

impl TryFrom<u32> for BurstKib {
    type Error = String;
    fn try_from(v: u32) -> Result<BurstKib, String> {
        BurstKib::new(v)
    }
}

impl From<BurstKib> for u32 {
    fn from(v: BurstKib) -> u32 {
        v.0
    }
}

impl fmt::Display for BurstKib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A traffic bound on one VM pair and direction.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub rate_mbit: RateMbit,
    #[serde(default)]
    pub burst_kib: BurstKib,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_rejects_with_its_one_text() {
        assert_eq!(
            Name::parse("a b").unwrap_err(),
            "\"a b\" must be 1 to 32 characters from [A-Za-z0-9_-]"
        );
        assert!(Name::parse(&"x".repeat(33)).is_err());
        assert_eq!(Name::parse("h1-a_2").unwrap().as_str(), "h1-a_2");
        assert_eq!(
            Vni::new(16777216).unwrap_err(),
            "16777216 is outside 1..=16777215"
        );
        assert!(Vni::new(0).is_err());
        assert_eq!(Vni::new(7).unwrap().get(), 7);
        assert_eq!(
            UnicastMac::parse("01:00:00:00:00:01").unwrap_err(),
            "\"01:00:00:00:00:01\" is not a unicast MAC address"
        );
        assert!(UnicastMac::parse("00:00:00:00:00:00").is_err());
        assert!(UnicastMac::parse("02:00:00")
            .unwrap_err()
            .contains("is not a MAC address"));
        assert_eq!(
            IfName::parse("a/b").unwrap_err(),
            "\"a/b\" is not a valid interface name"
        );
        assert!(IfName::parse("abcdefghijklmnop").is_err());
        assert!(SrcMatch::parse("none").unwrap_err().contains("\"any\""));
        assert_eq!(DstMatch::parse("none").unwrap().0, MacMatch::None);
        assert!(RateMbit::new(0.0).is_err());
        assert_eq!(BurstKib::new(0).unwrap_err(), "must be positive");
    }

    #[test]
    fn they_round_trip_through_their_text() {
        let m = UnicastMac::parse("02:AA:00:00:00:01").unwrap();
        assert_eq!(m.to_string(), "02:aa:00:00:00:01");
        for s in ["not 02:00:00:00:00:01", "any", "02:00:00:00:00:02"] {
            assert_eq!(SrcMatch::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(DstMatch::parse("none").unwrap().to_string(), "none");
        let json = serde_json::to_string(&(Vni::new(5).unwrap(), m)).unwrap();
        assert_eq!(json, r#"[5,"02:aa:00:00:00:01"]"#);
        let back: Result<Vni, _> = serde_json::from_str("0");
        assert!(back.unwrap_err().to_string().contains("outside"));
    }
}
