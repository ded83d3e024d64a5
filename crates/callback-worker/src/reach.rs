//! The address families the egress pool can connect to.
//!
//! A `local:` member binds its sockets to one source address, so it reaches
//! only destinations of that address's family. For a host name, the egress
//! resolver keeps only the addresses a member can reach. An IP literal is not
//! resolved, so a callback URL such as `http://[2001:db8::1]/hook` sent
//! through IPv4-only members fails with a bare connect error. [`Reach`]
//! names the cause before anything is sent.

use std::net::IpAddr;

use attache_egress::member::MemberSpec;
use url::{Host, Url};

/// The address families that at least one egress member connects over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    ipv4: bool,
    ipv6: bool,
}

impl Reach {
    /// Computes the families of `members`. An empty pool is a direct
    /// connection and a proxy member resolves and connects on its own, so
    /// both reach either family.
    pub fn of(members: &[MemberSpec]) -> Self {
        if members.is_empty() {
            return Self {
                ipv4: true,
                ipv6: true,
            };
        }
        let mut reach = Self {
            ipv4: false,
            ipv6: false,
        };
        for member in members {
            match member {
                MemberSpec::Local(IpAddr::V4(_)) => reach.ipv4 = true,
                MemberSpec::Local(IpAddr::V6(_)) => reach.ipv6 = true,
                MemberSpec::Proxy(_) => {
                    reach.ipv4 = true;
                    reach.ipv6 = true;
                }
            }
        }
        reach
    }

    /// Checks that some member can connect to the host of `url` when the
    /// host is an IP literal. Returns the error for the callback's record
    /// when none can. Host names always pass.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        match url.host() {
            Some(Host::Ipv4(ip)) if !self.ipv4 => Err(format!(
                "the callback URL's host {ip} is an IPv4 address, but every egress member connects over IPv6: use a host name or an IPv6 address"
            )),
            Some(Host::Ipv6(ip)) if !self.ipv6 => {
                let hint = match ip.to_ipv4_mapped() {
                    Some(ipv4) => format!("write the address as {ipv4}"),
                    None => "use a host name or an IPv4 address".to_owned(),
                };
                Err(format!(
                    "the callback URL's host [{ip}] is an IPv6 address, but every egress member connects over IPv4: {hint}"
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(members: &[&str]) -> Reach {
        let members: Vec<MemberSpec> = members
            .iter()
            .map(|member| member.parse().unwrap())
            .collect();
        Reach::of(&members)
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn ipv4_members_reject_ipv6_literal() {
        let ipv4_only = reach(&["local:127.0.0.11", "local:127.0.0.12"]);
        let error = ipv4_only
            .check(&url("http://[2001:db8::1]:8080/hook"))
            .unwrap_err();
        assert!(
            error.contains("[2001:db8::1] is an IPv6 address"),
            "{error}"
        );
        assert!(error.contains("connects over IPv4"), "{error}");
        assert!(error.contains("use a host name or an IPv4"), "{error}");
    }

    #[test]
    fn ipv4_mapped_literal_names_ipv4_form() {
        let ipv4_only = reach(&["local:127.0.0.11"]);
        let error = ipv4_only
            .check(&url("http://[::ffff:127.0.0.1]:18491/x"))
            .unwrap_err();
        assert!(error.contains("write the address as 127.0.0.1"), "{error}");
    }

    #[test]
    fn ipv6_members_reject_ipv4_literal() {
        let ipv6_only = reach(&["local:::1"]);
        let error = ipv6_only
            .check(&url("http://127.0.0.1:8080/hook"))
            .unwrap_err();
        assert!(error.contains("127.0.0.1 is an IPv4 address"), "{error}");
        assert!(ipv6_only.check(&url("http://[::1]/hook")).is_ok());
    }

    #[test]
    fn host_names_always_pass() {
        let ipv4_only = reach(&["local:127.0.0.11"]);
        assert!(ipv4_only.check(&url("https://hooks.example/x")).is_ok());
        assert!(ipv4_only.check(&url("http://127.0.0.1/x")).is_ok());
    }

    #[test]
    fn direct_and_proxy_pools_reach_both_families() {
        for pool in [reach(&[]), reach(&["proxy:http://egress.internal:3128"])] {
            assert!(pool.check(&url("http://[2001:db8::1]/x")).is_ok());
            assert!(pool.check(&url("http://192.0.2.1/x")).is_ok());
        }
    }

    #[test]
    fn mixed_pool_reaches_both_families() {
        let mixed = reach(&["local:127.0.0.11", "local:::1"]);
        assert!(mixed.check(&url("http://[2001:db8::1]/x")).is_ok());
        assert!(mixed.check(&url("http://192.0.2.1/x")).is_ok());
    }
}
