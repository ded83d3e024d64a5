//! Outbound HTTP for fetches and callbacks.
//!
//! Callers never build a `reqwest::Client` themselves: they ask an
//! [`Egress`] for a [`Member`] and send through its client, then record the
//! member's name on the attachment or callback row. Today the only member is
//! a direct connection; the static egress pool and its destination guard
//! replace [`Egress::direct`] without changing callers.

use std::time::Duration;

use reqwest::redirect::Policy;

/// How the clients of one egress behave.
#[derive(Clone, Debug)]
pub struct EgressSettings {
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
    /// Time allowed for a whole request, body included.
    pub total_timeout: Duration,
    /// Redirects followed; 0 follows none and returns the 3xx response.
    pub max_redirects: usize,
    pub user_agent: String,
}

/// One way out: a client and the name recorded for audit.
#[derive(Clone, Debug)]
pub struct Member {
    name: String,
    client: reqwest::Client,
}

impl Member {
    /// The name recorded on rows this member carried.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client to send through.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// A client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct EgressError(#[from] reqwest::Error);

/// The set of members requests leave through.
#[derive(Clone, Debug)]
pub struct Egress {
    direct: Member,
}

impl Egress {
    /// An egress with one member that connects directly.
    pub fn direct(settings: &EgressSettings) -> Result<Self, EgressError> {
        let redirect = if settings.max_redirects == 0 {
            Policy::none()
        } else {
            Policy::limited(settings.max_redirects)
        };
        let client = reqwest::Client::builder()
            // Proxy settings in the environment must not reroute traffic
            // that customers allow-list by source address.
            .no_proxy()
            .redirect(redirect)
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .timeout(settings.total_timeout)
            .user_agent(settings.user_agent.clone())
            .build()?;
        Ok(Self {
            direct: Member {
                name: "direct".to_owned(),
                client,
            },
        })
    }

    /// Picks the member for the next request.
    pub fn pick(&self) -> &Member {
        &self.direct
    }
}
