//! Outbound HTTP for fetches and callbacks: the static egress pool and the
//! destination guard.
//!
//! Every non-S3 fetch and every callback goes through [`Egress::get`],
//! [`Egress::get_with_headers`] or [`Egress::post`]. Each request leaves through exactly one pool member
//! ([`member`]), chosen among healthy members by fewest requests in flight;
//! the caller records the member's name on its row. When every member is
//! unhealthy the request fails with [`SendError::Unavailable`], which callers
//! retry; it never falls back to a direct connection. A pool without members
//! is a direct connection and must be configured explicitly.
//!
//! The [`guard`] vets every destination: IP literals in the URL and in every
//! redirect before anything is sent, and host names when they are resolved
//! ([`resolver`]), so the connection goes to the vetted address. Requests
//! through a proxy member are vetted on our own resolution of the host; the
//! proxy resolves it again.
//!
//! Metrics: `attache_egress_requests_total`, `attache_egress_failures_total`,
//! `attache_egress_in_flight` and `attache_egress_member_healthy` per member,
//! and `attache_egress_denied_total` per address class.

pub mod guard;
pub mod member;
mod metrics;
pub mod resolver;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use ipnet::IpNet;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::redirect::Policy;
use tokio::time::Instant;
use url::Url;

use crate::guard::{Denied, DestinationPolicy};
use crate::member::{HealthSettings, Member, MemberKind, MemberSpec, MemberStatus};
use crate::metrics::DENIED;
use crate::resolver::{Family, GuardedResolver, Lookup, SystemLookup};

/// Egress settings shared by the fetch-worker and the callback-worker.
#[derive(Args, Clone, Debug, Default)]
pub struct EgressArgs {
    /// Pool members, comma-separated: `local:<source IP>` binds outbound
    /// sockets to an address this host owns (checked at start),
    /// `proxy:http://<host>:<port>` sends through a forward proxy. Customers
    /// allow-list these addresses.
    #[arg(long, env = "ATTACHE_EGRESS_MEMBERS", value_delimiter = ',')]
    pub egress_members: Vec<MemberSpec>,

    /// Connect directly, from whatever address the host picks, when no
    /// member is configured. For local development only: customers cannot
    /// allow-list such traffic.
    #[arg(long, env = "ATTACHE_EGRESS_ALLOW_DIRECT")]
    pub egress_allow_direct: bool,

    /// Address ranges the destination guard allows in spite of their class,
    /// comma-separated CIDRs such as 127.0.0.0/8 for local development.
    #[arg(long, env = "ATTACHE_EGRESS_ALLOW_CIDRS", value_delimiter = ',', value_parser = attache_config::parse_cidr::<IpNet>)]
    pub egress_allow_cidrs: Vec<IpNet>,

    /// Member failures in a row before a member is skipped.
    #[arg(long, env = "ATTACHE_EGRESS_FAILURE_THRESHOLD", default_value_t = 3)]
    pub egress_failure_threshold: u32,

    /// How long an unhealthy member is first skipped; doubles up to a minute.
    #[arg(long, env = "ATTACHE_EGRESS_SKIP_FOR", default_value = "5s", value_parser = attache_config::parse_duration)]
    pub egress_skip_for: Duration,
}

/// Timeouts, redirects and user agent of one binary's requests.
#[derive(Clone, Debug)]
pub struct EgressSettings {
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Maximum silence while reading a response.
    pub read_timeout: Duration,
    /// Time allowed for a whole request, body included.
    pub total_timeout: Duration,
    /// Redirects followed by [`Egress::get`]; 0 returns the 3xx response.
    pub max_redirects: usize,
    pub user_agent: String,
}

/// The pool could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no egress member is configured: set ATTACHE_EGRESS_MEMBERS to the addresses or proxies customers allow-list, or ATTACHE_EGRESS_ALLOW_DIRECT=true for local development"
    )]
    NoMembers,
    #[error(
        "ATTACHE_EGRESS_MEMBERS lists local:{address}, but binding a socket to {address} failed ({source}): assign the address to an interface of this host, or list an address it has"
    )]
    LocalAddress {
        address: IpAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client of egress member {member}: {source}")]
    Client {
        member: String,
        source: reqwest::Error,
    },
}

/// The reason a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The guard denied the destination; final.
    #[error(transparent)]
    Forbidden(Denied),
    /// Every member is unhealthy; retry later.
    #[error("no egress member is available; the request was not sent")]
    Unavailable,
    /// A redirect could not be followed.
    #[error("{0}")]
    Redirect(String),
    /// The request failed on its way or at the destination.
    #[error(transparent)]
    Http(reqwest::Error),
}

/// A request's result and the member that carried it.
pub struct Sent {
    /// The member of the last attempt; `None` if none was picked.
    pub member: Option<String>,
    pub result: Result<reqwest::Response, SendError>,
}

/// The egress pool. Cheap to clone.
#[derive(Clone)]
pub struct Egress {
    inner: Arc<Inner>,
}

struct Inner {
    members: Vec<Member>,
    policy: Arc<DestinationPolicy>,
    lookup: Arc<dyn Lookup>,
    health: HealthSettings,
    max_redirects: usize,
    rotation: AtomicUsize,
}

impl Egress {
    /// Builds the pool with the system resolver.
    pub fn new(args: &EgressArgs, settings: &EgressSettings) -> Result<Self, ConfigError> {
        Self::with_lookup(args, settings, Arc::new(SystemLookup))
    }

    /// Builds the pool with the given resolver.
    pub fn with_lookup(
        args: &EgressArgs,
        settings: &EgressSettings,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Self, ConfigError> {
        let policy = Arc::new(DestinationPolicy::new(args.egress_allow_cidrs.clone()));
        for class in guard::AddressClass::ALL {
            DENIED.with_label_values(&[class.as_str()]).inc_by(0);
        }
        let mut members = Vec::new();
        for spec in &args.egress_members {
            // Every request through a member whose address this host lacks
            // would fail, so the start fails instead.
            if let MemberSpec::Local(ip) = spec {
                member::bind_source(*ip).map_err(|source| ConfigError::LocalAddress {
                    address: *ip,
                    source,
                })?;
            }
            let (kind, family) = match spec {
                MemberSpec::Local(ip) => (
                    MemberKind::Local(*ip),
                    if ip.is_ipv4() { Family::V4 } else { Family::V6 },
                ),
                MemberSpec::Proxy(url) => (
                    MemberKind::Proxy {
                        host: url.host_str().unwrap_or_default().to_owned(),
                        port: url.port_or_known_default().unwrap_or(80),
                    },
                    Family::Any,
                ),
            };
            let client =
                build_client(spec, family, settings, &lookup, &policy).map_err(|source| {
                    ConfigError::Client {
                        member: spec.name(),
                        source,
                    }
                })?;
            members.push(Member::new(spec.name(), kind, client));
        }
        if members.is_empty() {
            if !args.egress_allow_direct {
                return Err(ConfigError::NoMembers);
            }
            tracing::warn!(
                "no egress member is configured: requests leave directly from this host's addresses, which customers cannot allow-list"
            );
            let client = build_client_direct(settings, &lookup, &policy).map_err(|source| {
                ConfigError::Client {
                    member: "direct".to_owned(),
                    source,
                }
            })?;
            members.push(Member::new("direct".to_owned(), MemberKind::Direct, client));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                members,
                policy,
                lookup,
                health: HealthSettings {
                    failure_threshold: args.egress_failure_threshold.max(1),
                    skip_for: args.egress_skip_for,
                },
                max_redirects: settings.max_redirects,
                rotation: AtomicUsize::new(0),
            }),
        })
    }

    /// Returns each member's state.
    pub fn members(&self) -> Vec<MemberStatus> {
        let now = Instant::now();
        self.inner
            .members
            .iter()
            .map(|member| member.status(now))
            .collect()
    }

    /// Sends a GET, following up to the configured number of redirects,
    /// each vetted like the first URL. A redirect to a URL with a user name
    /// or password is rejected, not followed.
    pub async fn get(&self, url: Url) -> Sent {
        self.get_with_headers(url, HeaderMap::new()).await
    }

    /// Sends a GET with `headers`, such as an `Authorization` bearer token,
    /// following redirects like [`Egress::get`]. The headers go only to the
    /// first URL's origin (scheme, host and port): a hop to another origin
    /// is sent without them, so a redirect cannot leak a credential.
    pub async fn get_with_headers(&self, url: Url, headers: HeaderMap) -> Sent {
        let origin = url.origin();
        let mut url = url;
        let mut hops = 0;
        let mut previous_member = None;
        loop {
            let hop_headers = if url.origin() == origin {
                headers.clone()
            } else {
                HeaderMap::new()
            };
            let mut sent = self
                .send(&url, |client| {
                    client.get(url.clone()).headers(hop_headers.clone())
                })
                .await;
            // A hop refused before sending is recorded on the member that
            // carried the redirect to it.
            if sent.member.is_none() {
                sent.member = previous_member.take();
            }
            let Ok(response) = &sent.result else {
                return sent;
            };
            if !response.status().is_redirection() || self.inner.max_redirects == 0 {
                return sent;
            }
            let Some(location) = response.headers().get(LOCATION) else {
                return sent;
            };
            hops += 1;
            if hops > self.inner.max_redirects {
                let limit = self.inner.max_redirects;
                return Sent {
                    member: sent.member,
                    result: Err(SendError::Redirect(format!(
                        "the source redirected more than {limit} times"
                    ))),
                };
            }
            match next_hop(&url, location) {
                Ok(next) => {
                    url = next;
                    previous_member = sent.member;
                }
                Err(message) => {
                    return Sent {
                        member: sent.member,
                        result: Err(SendError::Redirect(message)),
                    };
                }
            }
        }
    }

    /// Sends a POST. Redirects are never followed: the 3xx response is
    /// returned.
    pub async fn post(&self, url: Url, headers: HeaderMap, body: Bytes) -> Sent {
        self.send(&url, |client| {
            client
                .post(url.clone())
                .headers(headers.clone())
                .body(body.clone())
        })
        .await
    }

    /// Sends one request through one member, moving to another member when
    /// the first proves unusable.
    async fn send(
        &self,
        url: &Url,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Sent {
        if let Err(denied) = self.inner.policy.check_literal(url) {
            return forbidden(None, denied);
        }
        let mut last_member = None;
        for _ in 0..self.inner.members.len() {
            let Some(member) = self.pick() else { break };
            last_member = Some(member.name.clone());
            if let MemberKind::Proxy { .. } = member.kind
                && let Err(denied) = self.vet_for_proxy(url).await
            {
                return forbidden(last_member, denied);
            }

            let response = {
                let _in_flight = member.enter();
                build(&member.client).send().await
            };
            match response {
                Ok(response) => {
                    member.succeeded();
                    return Sent {
                        member: last_member,
                        result: Ok(response),
                    };
                }
                Err(error) => {
                    if let Some(denied) = find_denied(&error) {
                        return forbidden(last_member, denied);
                    }
                    if !error.is_connect() || member.probe().await {
                        return Sent {
                            member: last_member,
                            result: Err(SendError::Http(error)),
                        };
                    }
                    tracing::warn!(egress_member = member.name, error = %error.without_url(), "egress member failed; trying another");
                    member.failed(&self.inner.health);
                }
            }
        }
        Sent {
            member: last_member,
            result: Err(SendError::Unavailable),
        }
    }

    /// Picks the usable member with the fewest requests in flight, starting
    /// the scan at a rotating offset so ties spread evenly.
    fn pick(&self) -> Option<&Member> {
        let members = &self.inner.members;
        let now = Instant::now();
        let offset = self.inner.rotation.fetch_add(1, Ordering::Relaxed);
        (0..members.len())
            .map(|index| &members[(offset + index) % members.len()])
            .filter(|member| member.usable(now))
            .min_by_key(|member| member.in_flight())
    }

    /// Resolves and vets a host name that a proxy will resolve again.
    async fn vet_for_proxy(&self, url: &Url) -> Result<(), Denied> {
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        match GuardedResolver::resolve_vetted(
            &*self.inner.lookup,
            &self.inner.policy,
            Family::Any,
            host,
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(error) => match error.downcast::<Denied>() {
                Ok(denied) => Err(*denied),
                // Resolution failed: let the proxy report it.
                Err(_) => Ok(()),
            },
        }
    }
}

fn forbidden(member: Option<String>, denied: Denied) -> Sent {
    DENIED.with_label_values(&[denied.class.as_str()]).inc();
    Sent {
        member,
        result: Err(SendError::Forbidden(denied)),
    }
}

/// Finds a guard denial in an error's chain of causes.
fn find_denied(error: &reqwest::Error) -> Option<Denied> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(denied) = cause.downcast_ref::<Denied>() {
            return Some(denied.clone());
        }
        source = cause.source();
    }
    None
}

/// Resolves a redirect's Location against the URL that returned it.
/// Returns the message for the customer when the target is not http(s) or
/// has a user name or password.
fn next_hop(current: &Url, location: &reqwest::header::HeaderValue) -> Result<Url, String> {
    let location = location
        .to_str()
        .map_err(|_| "the source redirected to a Location that is not text".to_owned())?;
    let next = current
        .join(location)
        .map_err(|_| "the source redirected to an invalid URL".to_owned())?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(format!(
            "the source redirected to a {} URL; only http and https are followed",
            next.scheme()
        ));
    }
    // reqwest would send a user name and password in the URL as Basic
    // authorization, to a host the customer did not submit.
    if !next.username().is_empty() || next.password().is_some() {
        return Err(
            "the source redirected to a URL with a user name or password, which is not followed so that no credentials are sent: give the final URL, such as a pre-signed URL, without credentials"
                .to_owned(),
        );
    }
    Ok(next)
}

fn client_builder(settings: &EgressSettings) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        // Redirects are followed by `Egress::get`, which vets every hop.
        .redirect(Policy::none())
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .timeout(settings.total_timeout)
        .user_agent(settings.user_agent.clone())
}

fn guarded(
    lookup: &Arc<dyn Lookup>,
    policy: &Arc<DestinationPolicy>,
    family: Family,
) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver {
        lookup: lookup.clone(),
        policy: policy.clone(),
        family,
    })
}

fn build_client(
    spec: &MemberSpec,
    family: Family,
    settings: &EgressSettings,
    lookup: &Arc<dyn Lookup>,
    policy: &Arc<DestinationPolicy>,
) -> Result<reqwest::Client, reqwest::Error> {
    match spec {
        MemberSpec::Local(ip) => client_builder(settings)
            // Proxy settings in the environment must not reroute traffic
            // that customers allow-list by source address.
            .no_proxy()
            .local_address(*ip)
            .dns_resolver(guarded(lookup, policy, family))
            .build(),
        // reqwest resolves only the proxy's own host here; the target is
        // vetted before sending, in `Egress::vet_for_proxy`.
        MemberSpec::Proxy(url) => client_builder(settings)
            .proxy(reqwest::Proxy::all(url.as_str())?)
            .build(),
    }
}

fn build_client_direct(
    settings: &EgressSettings,
    lookup: &Arc<dyn Lookup>,
    policy: &Arc<DestinationPolicy>,
) -> Result<reqwest::Client, reqwest::Error> {
    client_builder(settings)
        .no_proxy()
        .dns_resolver(guarded(lookup, policy, Family::Any))
        .build()
}

#[cfg(test)]
mod tests;
