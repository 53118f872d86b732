//! The client behind a request, and a rate limit kept per client.
//!
//! [`crate::http::serve`] puts the connection's remote address into every request's extensions
//! as axum's [`ConnectInfo`], so handlers (axum extractors and tonic services alike) can log who
//! called and limit each caller on its own: one noisy client must not use up everybody's
//! allowance.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

pub use axum::extract::ConnectInfo;
use axum::extract::FromRequestParts;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The remote address of the connection a request came in on, when the server recorded one.
pub fn addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// Extractor for axum handlers: the client's address, `None` when the server recorded none
/// (a router driven without [`crate::http::serve`], as in tests). Never rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(addr(&parts.extensions)))
    }
}

/// For logs: the address, or `unknown`.
pub fn display(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string())
}

/// Every this many checks the limiter forgets clients whose allowance is full again, so memory
/// follows the number of recent callers, not of all callers ever.
const FORGET_EVERY: u32 = 1024;

/// A rate limit per client IP address (not per connection: a client could open many). Requests
/// whose address is unknown share one allowance.
pub struct PerPeerLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU32,
}

impl PerPeerLimiter {
    /// Allows each client `per_second` calls a second, with a burst of as many.
    pub fn per_second(per_second: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second)),
            checks: AtomicU32::new(0),
        }
    }

    /// True when `peer` may make one more call now (and counts it).
    pub fn check(&self, peer: Option<SocketAddr>) -> bool {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        let key = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
        self.limiter.check_key(&key).is_ok()
    }

    /// Clients the limiter remembers now.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: [u8; 4], port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from((ip, port)))
    }

    #[test]
    fn each_client_has_its_own_allowance() {
        let limiter = PerPeerLimiter::per_second(NonZeroU32::new(2).unwrap());
        let noisy = peer([10, 0, 0, 1], 40000);
        assert!(limiter.check(noisy));
        assert!(limiter.check(noisy));
        assert!(
            !limiter.check(noisy),
            "a third call within the second is refused"
        );
        assert!(
            limiter.check(peer([10, 0, 0, 2], 40000)),
            "another client is not held back by the noisy one"
        );
    }

    #[test]
    fn the_allowance_is_per_address_not_per_connection() {
        let limiter = PerPeerLimiter::per_second(NonZeroU32::new(1).unwrap());
        assert!(limiter.check(peer([10, 0, 0, 1], 40000)));
        assert!(!limiter.check(peer([10, 0, 0, 1], 40001)));
    }

    #[test]
    fn unknown_clients_share_one_allowance() {
        let limiter = PerPeerLimiter::per_second(NonZeroU32::new(1).unwrap());
        assert!(limiter.check(None));
        assert!(!limiter.check(None));
        assert!(limiter.check(peer([10, 0, 0, 1], 1)));
    }

    #[test]
    fn clients_with_a_full_allowance_are_forgotten() {
        let limiter = PerPeerLimiter::per_second(NonZeroU32::new(1000).unwrap());
        for i in 0..FORGET_EVERY - 1 {
            let [_, _, a, b] = i.to_be_bytes();
            assert!(limiter.check(peer([10, 1, a, b], 1)));
        }
        assert_eq!(limiter.tracked(), (FORGET_EVERY - 1) as usize);
        // The check that reaches FORGET_EVERY sweeps first. Entries refill within milliseconds
        // at 1000/s, so after a short pause every earlier client is forgotten.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(limiter.check(peer([10, 2, 0, 0], 1)));
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn reads_the_address_serve_records() {
        let mut ext = http::Extensions::new();
        assert_eq!(addr(&ext), None);
        assert_eq!(display(None), "unknown");
        let a = SocketAddr::from(([192, 0, 2, 7], 5000));
        ext.insert(ConnectInfo(a));
        assert_eq!(addr(&ext), Some(a));
        assert_eq!(display(Some(a)), "192.0.2.7:5000");
    }
}
