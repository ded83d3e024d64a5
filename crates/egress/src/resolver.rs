//! Name resolution that the guard vets.
//!
//! reqwest calls [`GuardedResolver`] for every host name it connects to,
//! including redirect targets, and connects only to the addresses returned.
//! Each answer set is vetted as a whole before it is returned, so a
//! connection can only go to a vetted address, and a name whose answer
//! changes between two lookups (DNS rebinding) is vetted again each time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::guard::DestinationPolicy;
use crate::metrics::DENIED;

/// Resolves host names to addresses.
pub trait Lookup: Send + Sync {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver.
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let answers = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(answers.map(|address| address.ip()).collect())
        })
    }
}

/// The address family a member can connect from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Any,
    V4,
    V6,
}

/// Resolves with a [`Lookup`], then vets every address with the policy.
pub struct GuardedResolver {
    pub lookup: Arc<dyn Lookup>,
    pub policy: Arc<DestinationPolicy>,
    /// A member bound to an IPv4 source address cannot reach IPv6 addresses,
    /// and the reverse; they are dropped before vetting.
    pub family: Family,
}

impl GuardedResolver {
    /// Resolves `host` and returns its vetted addresses.
    pub async fn resolve_vetted(
        lookup: &dyn Lookup,
        policy: &DestinationPolicy,
        family: Family,
        host: &str,
    ) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let answers: Vec<IpAddr> = lookup
            .lookup(host.to_owned())
            .await?
            .into_iter()
            .filter(|ip| match family {
                Family::Any => true,
                Family::V4 => ip.is_ipv4(),
                Family::V6 => ip.is_ipv6(),
            })
            .collect();
        if let Err(denied) = policy.check_all(host, &answers) {
            DENIED.with_label_values(&[denied.class.as_str()]).inc();
            return Err(Box::new(denied));
        }
        if answers.is_empty() {
            return Err(format!("`{host}` has no address this egress member can reach").into());
        }
        Ok(answers)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup.clone();
        let policy = self.policy.clone();
        let family = self.family;
        Box::pin(async move {
            let answers = Self::resolve_vetted(&*lookup, &policy, family, name.as_str()).await?;
            let addresses: Addrs = Box::new(answers.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addresses)
        })
    }
}
