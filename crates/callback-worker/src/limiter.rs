//! Per-host limits on deliveries in flight.
//!
//! Each host gets a semaphore of `per_host` permits, created on first use
//! and dropped when its last permit returns, so the map holds only hosts
//! with deliveries in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits deliveries in flight per host.
pub struct HostLimiter {
    per_host: usize,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// A delivery slot for one host, returned on drop.
pub struct HostPermit {
    host: String,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    permit: Option<OwnedSemaphorePermit>,
    per_host: usize,
}

impl HostLimiter {
    pub fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.max(1),
            hosts: Arc::default(),
        }
    }

    /// Takes a slot for `host`, or returns `None` when the host is at its
    /// limit.
    pub fn try_acquire(&self, host: &str) -> Option<HostPermit> {
        let semaphore = self
            .hosts
            .lock()
            .expect("the limiter lock is never held across a panic")
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone();
        let permit = semaphore.try_acquire_owned().ok()?;
        Some(HostPermit {
            host: host.to_owned(),
            hosts: self.hosts.clone(),
            permit: Some(permit),
            per_host: self.per_host,
        })
    }
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        let mut hosts = self
            .hosts
            .lock()
            .expect("the limiter lock is never held across a panic");
        drop(self.permit.take());
        let idle = hosts
            .get(&self.host)
            .is_some_and(|semaphore| semaphore.available_permits() == self.per_host);
        if idle {
            hosts.remove(&self.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_gets_at_most_its_limit() {
        let limiter = HostLimiter::new(2);
        let first = limiter.try_acquire("slow.example").unwrap();
        let _second = limiter.try_acquire("slow.example").unwrap();
        assert!(limiter.try_acquire("slow.example").is_none());
        assert!(
            limiter.try_acquire("fast.example").is_some(),
            "other hosts are unaffected"
        );
        drop(first);
        assert!(limiter.try_acquire("slow.example").is_some());
    }

    #[test]
    fn idle_hosts_are_forgotten() {
        let limiter = HostLimiter::new(1);
        drop(limiter.try_acquire("a.example").unwrap());
        assert!(limiter.hosts.lock().unwrap().is_empty());
    }
}
