//! Egress members and their health.
//!
//! A member is one way out with its own client: a local source address that
//! sockets bind to, an HTTP CONNECT forward proxy, or (only when configured
//! explicitly) a direct connection. A request that fails to connect is
//! blamed on the member only if the member's own probe fails too (the source
//! address cannot be bound, or the proxy does not accept a connection), so a
//! dead destination does not take healthy members out of service. After
//! `failure_threshold` such failures in a row the member is skipped, and it
//! is tried again after a back-off that doubles up to a minute.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use crate::metrics::{FAILURES, HEALTHY, IN_FLIGHT, REQUESTS};

/// The maximum time an unhealthy member is skipped before it is tried again.
const MAX_SKIP: Duration = Duration::from_secs(60);
/// Time allowed for a probe's connection to a proxy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A configured member, as written in `ATTACHE_EGRESS_MEMBERS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberSpec {
    /// `local:203.0.113.10`: bind outbound sockets to this address.
    Local(IpAddr),
    /// `proxy:http://egress-1.internal:3128`: send through this forward
    /// proxy (CONNECT for https).
    Proxy(Url),
}

impl FromStr for MemberSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "write `local:<source IP>` or `proxy:http://<host>:<port>`";
        if let Some(address) = text.strip_prefix("local:") {
            let ip = address.parse().map_err(|_| {
                format!("egress member `{text}` has an invalid IP address: {usage}")
            })?;
            return Ok(Self::Local(ip));
        }
        if let Some(proxy) = text.strip_prefix("proxy:") {
            let url = Url::parse(proxy).map_err(|error| {
                format!("egress member `{text}` has an invalid proxy URL ({error}): {usage}")
            })?;
            if url.scheme() != "http"
                || url.host_str().is_none()
                || url.port_or_known_default().is_none()
            {
                return Err(format!(
                    "egress member `{text}` must name an http:// proxy with a host: {usage}"
                ));
            }
            return Ok(Self::Proxy(url));
        }
        Err(format!("egress member `{text}` has no known kind: {usage}"))
    }
}

impl MemberSpec {
    /// The name recorded on rows and in metrics. A proxy's credentials are
    /// left out.
    pub fn name(&self) -> String {
        match self {
            Self::Local(ip) => format!("local:{ip}"),
            Self::Proxy(url) => format!(
                "proxy:{}:{}",
                url.host_str().unwrap_or_default(),
                url.port_or_known_default().unwrap_or_default()
            ),
        }
    }
}

/// Settings of the member health check.
#[derive(Clone, Copy, Debug)]
pub struct HealthSettings {
    /// Member failures in a row before the member is skipped.
    pub failure_threshold: u32,
    /// How long a member is first skipped; doubles per further failure.
    pub skip_for: Duration,
}

/// The kind of a member.
#[derive(Clone, Debug)]
pub(crate) enum MemberKind {
    Direct,
    Local(IpAddr),
    Proxy { host: String, port: u16 },
}

/// One member with its client and health.
pub(crate) struct Member {
    pub name: String,
    pub kind: MemberKind,
    pub client: reqwest::Client,
    consecutive_failures: AtomicU32,
    skip_until: Mutex<Option<Instant>>,
    in_flight: AtomicUsize,
}

/// A snapshot of one member, for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    pub healthy: bool,
    pub in_flight: usize,
    pub consecutive_failures: u32,
}

impl Member {
    pub fn new(name: String, kind: MemberKind, client: reqwest::Client) -> Self {
        // Every series exists from the start, so dashboards show zero rather
        // than no data for a member that has not failed yet.
        HEALTHY.with_label_values(&[&name]).set(1);
        REQUESTS.with_label_values(&[&name]).inc_by(0);
        FAILURES.with_label_values(&[&name]).inc_by(0);
        IN_FLIGHT.with_label_values(&[&name]).set(0);
        Self {
            name,
            kind,
            client,
            consecutive_failures: AtomicU32::new(0),
            skip_until: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Tells whether the member may take a request now: healthy, or
    /// unhealthy with its back-off over (it then gets one more chance).
    pub fn usable(&self, now: Instant) -> bool {
        self.skip_until
            .lock()
            .expect("the health lock is never held across a panic")
            .is_none_or(|until| until <= now)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn enter(&self) -> InFlightGuard<'_> {
        REQUESTS.with_label_values(&[&self.name]).inc();
        IN_FLIGHT.with_label_values(&[&self.name]).inc();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self)
    }

    /// Records a request that reached its destination.
    pub fn succeeded(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let mut skip = self
            .skip_until
            .lock()
            .expect("the health lock is never held across a panic");
        if skip.take().is_some() {
            HEALTHY.with_label_values(&[&self.name]).set(1);
            tracing::info!(egress_member = self.name, "egress member is healthy again");
        }
    }

    /// Records a failure of the member itself.
    pub fn failed(&self, health: &HealthSettings) {
        FAILURES.with_label_values(&[&self.name]).inc();
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < health.failure_threshold {
            return;
        }
        let doublings = (failures - health.failure_threshold).min(8);
        let skip_for = (health.skip_for * 2u32.pow(doublings)).min(MAX_SKIP);
        *self
            .skip_until
            .lock()
            .expect("the health lock is never held across a panic") =
            Some(Instant::now() + skip_for);
        HEALTHY.with_label_values(&[&self.name]).set(0);
        tracing::warn!(egress_member = self.name, failures, skip_for = ?skip_for, "egress member is unhealthy; skipping it");
    }

    /// Checks the member itself, without any destination: a local address
    /// must still be bindable and a proxy must accept a connection.
    pub async fn probe(&self) -> bool {
        match &self.kind {
            MemberKind::Direct => true,
            MemberKind::Local(ip) => bind_source(*ip).is_ok(),
            MemberKind::Proxy { host, port } => {
                let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
                matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, connect).await,
                    Ok(Ok(_))
                )
            }
        }
    }

    pub fn status(&self, now: Instant) -> MemberStatus {
        let skipped = self
            .skip_until
            .lock()
            .expect("the health lock is never held across a panic")
            .is_some_and(|until| until > now);
        MemberStatus {
            name: self.name.clone(),
            healthy: !skipped,
            in_flight: self.in_flight(),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
        }
    }
}

/// Binds a TCP socket to `ip` on a port the system picks, then closes it.
/// Binding sends no traffic. It fails with `AddrNotAvailable` when no
/// interface of this host has the address.
///
/// NOTE: with the Linux sysctl `net.ipv4.ip_nonlocal_bind` (or
/// `net.ipv6.ip_nonlocal_bind`) set to 1, binding succeeds for any address,
/// so this check passes for an address the host does not own.
pub(crate) fn bind_source(ip: IpAddr) -> std::io::Result<()> {
    let socket = if ip.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind((ip, 0).into())
}

/// Counts one request in flight through a member while it lives.
pub(crate) struct InFlightGuard<'a>(&'a Member);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        IN_FLIGHT.with_label_values(&[&self.0.name]).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_specs_parse_and_name_themselves() {
        let local: MemberSpec = "local:127.0.0.11".parse().unwrap();
        assert_eq!(local.name(), "local:127.0.0.11");
        let proxy: MemberSpec = "proxy:http://user:secret@egress-1.internal:3128"
            .parse()
            .unwrap();
        assert_eq!(proxy.name(), "proxy:egress-1.internal:3128");
        let v6: MemberSpec = "local:2001:db8::10".parse().unwrap();
        assert_eq!(v6, MemberSpec::Local("2001:db8::10".parse().unwrap()));
    }

    #[test]
    fn bind_source_accepts_loopback_address() {
        bind_source("127.0.0.11".parse().unwrap()).unwrap();
    }

    #[test]
    fn bind_source_rejects_address_host_lacks() {
        // A documentation address, which no interface of a test host has.
        // Only a bind is attempted, so nothing is sent.
        let error = bind_source("203.0.113.10".parse().unwrap()).unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::AddrNotAvailable,
            "{error}"
        );
    }

    #[test]
    fn malformed_member_specs_are_rejected() {
        for text in [
            "127.0.0.11",
            "local:",
            "local:host.example",
            "proxy:",
            "proxy:socks5://h:1",
            "proxy:http://",
        ] {
            let error = text.parse::<MemberSpec>().unwrap_err();
            assert!(error.contains("local:<source IP>"), "{text}: {error}");
        }
    }
}
