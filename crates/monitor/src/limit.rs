//! Per-address token buckets: the gateway's and the API's rate limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses kept before idle ones are forgotten (a client silent for 10 s has a full
/// bucket again anyway).
const KEPT: usize = 10_000;

/// `rate` calls per second per client address, in bursts of one second's worth; 0: no
/// limit.
pub struct Buckets {
    rate: f64,
    map: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Buckets {
    pub fn new(rate: u32) -> Buckets {
        Buckets {
            rate: rate as f64,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `calls` tokens from `ip`'s bucket; false when it has not that many.
    pub fn admit(&self, ip: IpAddr, calls: usize) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut b = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > KEPT {
            b.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(10));
        }
        let (tokens, at) = b.entry(ip).or_insert((self.rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.rate);
        *at = now;
        if *tokens >= calls as f64 {
            *tokens -= calls as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let b = Buckets::new(10);
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert!((0..10).all(|_| b.admit(ip, 1)));
        assert!(!b.admit(ip, 1));
        // Another address has its own bucket.
        assert!(b.admit([10, 0, 0, 2].into(), 10));
        std::thread::sleep(Duration::from_millis(250));
        assert!(b.admit(ip, 2));
        assert!(Buckets::new(0).admit(ip, 1_000_000));
    }
}
