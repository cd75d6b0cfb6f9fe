//! `sip.allow`: CIDR prefixes and the allowlist the SIP socket checks for every datagram.
//!
//! Rules ccedge applies (documented in `deploy/ccedge.toml` too):
//! - `192.0.2.0/24`, `2001:db8::/32`; a bare address (`192.0.2.7`, `::1`) is a host prefix
//!   (`/32`, `/128`).
//! - Host bits set (`192.0.2.1/24`) are an **error**, not silently masked: a typo in an
//!   allowlist should be seen, and the message suggests the network (`192.0.2.0/24`).
//! - IPv4-mapped IPv6 (`::ffff:192.0.2.0/120`) is stored as the IPv4 prefix (`192.0.2.0/24`),
//!   and a peer address `::ffff:192.0.2.7` (what a dual-stack socket reports for an IPv4 peer)
//!   is checked as `192.0.2.7`. So an IPv4 prefix matches an IPv4 peer however the socket
//!   spells it. IPv6 prefixes never match IPv4 peers (`::/0` is "any IPv6", not "anything").

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// An IP prefix: a network address with no host bits set and a prefix length.
///
/// Parse with [`str::parse`]; [`Display`](fmt::Display) gives the canonical form, which parses
/// back to the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(Net);

/// The prefix as the allowlist check needs it: network and mask precomputed, so
/// [`Cidr::contains`] is two integer operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Net {
    V4 { net: u32, mask: u32, len: u8 },
    V6 { net: u128, mask: u128, len: u8 },
}

/// The `::ffff:0:0/96` block that embeds IPv4 addresses in IPv6.
const MAPPED_PREFIX: u128 = 0xffff_u128 << 32;
const MAPPED_MASK: u128 = !0_u128 << 32;

fn mask4(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

/// Why a string is not a [`Cidr`]. Holds the input so its message stands alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` {kind}")]
pub struct CidrError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub kind: CidrErrorKind,
}

/// What is wrong with a CIDR string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrErrorKind {
    /// Not `address/length` with an IPv4 or IPv6 address.
    #[error("is not a CIDR (expected e.g. 192.0.2.0/24)")]
    Syntax,
    /// The prefix length is longer than the address.
    #[error("is not a CIDR: the prefix length is longer than /{max}")]
    PrefixTooLong {
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits below the prefix length are set.
    #[error("has host bits set (did you mean {suggestion}?)")]
    HostBitsSet {
        /// The network the input probably meant.
        suggestion: Cidr,
    },
}

impl Cidr {
    /// The prefix `addr/len`.
    ///
    /// # Errors
    /// [`CidrErrorKind::PrefixTooLong`] when `len` exceeds 32 (IPv4) or 128 (IPv6);
    /// [`CidrErrorKind::HostBitsSet`] when `addr` has bits set below `len`.
    pub fn new(addr: IpAddr, len: u8) -> Result<Cidr, CidrErrorKind> {
        let net = match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Err(CidrErrorKind::PrefixTooLong { max: 32 });
                }
                let mask = mask4(len);
                Net::V4 {
                    net: u32::from(a),
                    mask,
                    len,
                }
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return Err(CidrErrorKind::PrefixTooLong { max: 128 });
                }
                let bits = u128::from(a);
                if len >= 96 && bits & MAPPED_MASK == MAPPED_PREFIX {
                    // An IPv4-mapped prefix is the IPv4 prefix it names.
                    let v4 = (bits & u128::from(u32::MAX)) as u32;
                    let len = len - 96;
                    Net::V4 {
                        net: v4,
                        mask: mask4(len),
                        len,
                    }
                } else {
                    Net::V6 {
                        net: bits,
                        mask: mask6(len),
                        len,
                    }
                }
            }
        };
        let masked = Cidr(net).masked();
        if masked.0 == net {
            Ok(masked)
        } else {
            Err(CidrErrorKind::HostBitsSet { suggestion: masked })
        }
    }

    /// The same prefix with host bits cleared.
    fn masked(self) -> Cidr {
        Cidr(match self.0 {
            Net::V4 { net, mask, len } => Net::V4 {
                net: net & mask,
                mask,
                len,
            },
            Net::V6 { net, mask, len } => Net::V6 {
                net: net & mask,
                mask,
                len,
            },
        })
    }

    /// The network address.
    #[must_use]
    pub fn addr(&self) -> IpAddr {
        match self.0 {
            Net::V4 { net, .. } => IpAddr::V4(Ipv4Addr::from(net)),
            Net::V6 { net, .. } => IpAddr::V6(Ipv6Addr::from(net)),
        }
    }

    /// The prefix length in bits.
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        match self.0 {
            Net::V4 { len, .. } | Net::V6 { len, .. } => len,
        }
    }

    /// Whether `ip` lies in this prefix. An IPv4-mapped IPv6 address is checked as the IPv4
    /// address it carries; IPv4 prefixes match only IPv4 peers, IPv6 prefixes only IPv6 peers.
    #[must_use]
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_canonical(ip.to_canonical())
    }

    /// [`Cidr::contains`] for an address already passed through [`IpAddr::to_canonical`].
    #[inline]
    fn contains_canonical(&self, ip: IpAddr) -> bool {
        match (self.0, ip) {
            (Net::V4 { net, mask, .. }, IpAddr::V4(a)) => u32::from(a) & mask == net,
            (Net::V6 { net, mask, .. }, IpAddr::V6(a)) => u128::from(a) & mask == net,
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = |kind| CidrError {
            input: s.to_owned(),
            kind,
        };
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => {
                // Digits only: `u8::from_str` would also take `+8`.
                if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err(CidrErrorKind::Syntax));
                }
                let len: u16 = len.parse().map_err(|_| err(CidrErrorKind::Syntax))?;
                (addr, Some(len))
            }
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err(CidrErrorKind::Syntax))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => u8::try_from(len)
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| err(CidrErrorKind::PrefixTooLong { max }))?,
        };
        Cidr::new(addr, len).map_err(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// `sip.allow`: the prefixes whose requests the SIP socket handles. Everything else is dropped
/// (or answered 403, per `sip.deny_action`) before parsing. An empty list allows nobody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AllowList(pub Vec<Cidr>);

impl AllowList {
    /// Whether `ip` may send requests. Allocation-free: one canonicalisation, then a linear
    /// scan of masked compares.
    #[must_use]
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|c| c.contains_canonical(ip))
    }

    /// The prefixes in configuration order.
    #[must_use]
    pub fn cidrs(&self) -> &[Cidr] {
        &self.0
    }
}

impl Default for AllowList {
    /// Loopback only: `127.0.0.0/8` and `::1/128`.
    fn default() -> Self {
        AllowList(vec![
            Cidr(Net::V4 {
                net: u32::from(Ipv4Addr::new(127, 0, 0, 0)),
                mask: mask4(8),
                len: 8,
            }),
            Cidr(Net::V6 {
                net: u128::from(Ipv6Addr::LOCALHOST),
                mask: mask6(128),
                len: 128,
            }),
        ])
    }
}
