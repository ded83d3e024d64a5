//! The destination guard: which addresses outbound requests may reach.
//!
//! Everything that is not public unicast is denied: loopback, private,
//! carrier-grade NAT, link-local (which covers the cloud metadata address
//! 169.254.169.254), unspecified, broadcast, multicast, documentation,
//! benchmarking and reserved ranges, and their IPv6 counterparts. IPv6 forms
//! that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 and 6to4)
//! are judged by the address they embed, because the standard library's
//! predicates miss them. Operators may allow ranges explicitly; the default
//! allows none.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// The class that makes an address non-public.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressClass {
    Unspecified,
    Loopback,
    Private,
    CarrierGradeNat,
    LinkLocal,
    Broadcast,
    Multicast,
    Documentation,
    Benchmarking,
    Reserved,
    UniqueLocal,
    SiteLocal,
}

impl AddressClass {
    /// Every class, for metrics that start each series at zero.
    pub const ALL: [AddressClass; 12] = [
        Self::Unspecified,
        Self::Loopback,
        Self::Private,
        Self::CarrierGradeNat,
        Self::LinkLocal,
        Self::Broadcast,
        Self::Multicast,
        Self::Documentation,
        Self::Benchmarking,
        Self::Reserved,
        Self::UniqueLocal,
        Self::SiteLocal,
    ];

    /// Returns a short label, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::CarrierGradeNat => "carrier-grade NAT",
            Self::LinkLocal => "link-local",
            Self::Broadcast => "broadcast",
            Self::Multicast => "multicast",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Reserved => "reserved",
            Self::UniqueLocal => "unique local",
            Self::SiteLocal => "site-local",
        }
    }

    /// Returns the indefinite article that goes before [`Self::as_str`].
    pub fn article(self) -> &'static str {
        match self {
            Self::Unspecified => "an",
            _ => "a",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request was rejected because its destination is not allowed. The
/// message names the host as the customer wrote it and the address class,
/// never an address the customer did not send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the destination `{host}` is {} {class} address, which Attaché does not connect to", class.article())]
pub struct Denied {
    pub host: String,
    pub class: AddressClass,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> (Ipv4Addr, u8) {
    (Ipv4Addr::new(a, b, c, d), prefix)
}

/// IPv4 ranges that are not public, most specific first.
const DENIED_V4: &[((Ipv4Addr, u8), AddressClass)] = &[
    (v4(255, 255, 255, 255, 32), AddressClass::Broadcast),
    (v4(0, 0, 0, 0, 8), AddressClass::Unspecified),
    (v4(10, 0, 0, 0, 8), AddressClass::Private),
    (v4(100, 64, 0, 0, 10), AddressClass::CarrierGradeNat),
    (v4(127, 0, 0, 0, 8), AddressClass::Loopback),
    (v4(169, 254, 0, 0, 16), AddressClass::LinkLocal),
    (v4(172, 16, 0, 0, 12), AddressClass::Private),
    (v4(192, 0, 0, 0, 24), AddressClass::Reserved),
    (v4(192, 0, 2, 0, 24), AddressClass::Documentation),
    (v4(192, 88, 99, 0, 24), AddressClass::Reserved),
    (v4(192, 168, 0, 0, 16), AddressClass::Private),
    (v4(198, 18, 0, 0, 15), AddressClass::Benchmarking),
    (v4(198, 51, 100, 0, 24), AddressClass::Documentation),
    (v4(203, 0, 113, 0, 24), AddressClass::Documentation),
    (v4(224, 0, 0, 0, 4), AddressClass::Multicast),
    (v4(240, 0, 0, 0, 4), AddressClass::Reserved),
];

/// IPv6 ranges that are not public, checked after the forms that embed an
/// IPv4 address. Anything outside 2000::/3 (global unicast) is reserved.
const DENIED_V6: &[(&str, AddressClass)] = &[
    ("64:ff9b:1::/48", AddressClass::Reserved),
    ("100::/64", AddressClass::Reserved),
    ("2001:db8::/32", AddressClass::Documentation),
    ("2001::/23", AddressClass::Reserved),
    ("3fff::/20", AddressClass::Documentation),
    ("fc00::/7", AddressClass::UniqueLocal),
    ("fe80::/10", AddressClass::LinkLocal),
    ("fec0::/10", AddressClass::SiteLocal),
    ("ff00::/8", AddressClass::Multicast),
];

/// Classifies an address; `None` means public.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    DENIED_V4
        .iter()
        .find(|((network, prefix), _)| {
            Ipv4Net::new(*network, *prefix)
                .expect("the table contains only valid prefixes")
                .contains(&ip)
        })
        .map(|(_, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    if let Some(embedded) = embedded_v4(ip) {
        return classify_v4(embedded);
    }
    let denied = DENIED_V6.iter().find(|(network, _)| {
        network
            .parse::<Ipv6Net>()
            .expect("the table contains only valid prefixes")
            .contains(&ip)
    });
    if let Some((_, class)) = denied {
        return Some(*class);
    }
    let global_unicast: Ipv6Net = "2000::/3".parse().expect("a valid prefix");
    (!global_unicast.contains(&ip)).then_some(AddressClass::Reserved)
}

/// Returns the IPv4 address an IPv6 address embeds: IPv4-mapped
/// (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96) and 6to4
/// (2002::/16).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let octets = ip.octets();
    let last_four = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match segments {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(last_four),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last_four),
        [0x2002, ..] => Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5])),
        _ => None,
    }
}

/// The guard's configuration: ranges allowed in spite of their class.
#[derive(Clone, Debug, Default)]
pub struct DestinationPolicy {
    allowed: Vec<IpNet>,
}

impl DestinationPolicy {
    /// Creates a policy that allows `allowed` ranges and every public address.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Decides whether `ip` may be connected to.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressClass> {
        let canonical = ip.to_canonical();
        if self.allowed.iter().any(|net| net.contains(&canonical)) {
            return Ok(());
        }
        match classify(ip) {
            Some(class) => Err(class),
            None => Ok(()),
        }
    }

    /// Decides on every address a host name resolved to: one denied
    /// address denies the name, so a name mixing public and internal answers
    /// cannot be used to reach the internal one.
    pub fn check_all(&self, host: &str, answers: &[IpAddr]) -> Result<(), Denied> {
        for ip in answers {
            self.check(*ip).map_err(|class| Denied {
                host: host.to_owned(),
                class,
            })?;
        }
        Ok(())
    }

    /// Decides on a URL whose host is an IP literal, which no resolver is asked about.
    /// A host name passes here and is judged when it is resolved.
    pub fn check_literal(&self, url: &Url) -> Result<(), Denied> {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(_)) | None => return Ok(()),
        };
        self.check(ip).map_err(|class| Denied {
            host: url.host_str().unwrap_or_default().to_owned(),
            class,
        })
    }
}
