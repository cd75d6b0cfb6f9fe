//! RTP port allocation from `rtp.port_min..=rtp.port_max`.
//!
//! Ports are handed out round-robin (a port just released is the last to be reused, so late
//! packets of an ended call do not reach the next one) and bound at once; a port some other
//! program holds is skipped.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// The pool of RTP ports.
#[derive(Debug)]
pub(crate) struct PortPool {
    min: u16,
    max: u16,
    next: u16,
    used: HashSet<u16>,
}

impl PortPool {
    /// A pool over `min..=max` (an inverted range is treated as empty).
    pub(crate) fn new(min: u16, max: u16) -> PortPool {
        PortPool {
            min,
            max,
            next: min,
            used: HashSet::new(),
        }
    }

    /// How many ports the pool has.
    pub(crate) fn capacity(&self) -> usize {
        if self.max < self.min {
            0
        } else {
            usize::from(self.max - self.min) + 1
        }
    }

    /// Binds the next free port on `ip` (non-blocking); `None` when every port is in use.
    pub(crate) fn bind(&mut self, ip: IpAddr) -> Option<(u16, std::net::UdpSocket)> {
        if self.max < self.min {
            return None;
        }
        let span = u32::from(self.max - self.min) + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if self.next >= self.max {
                self.min
            } else {
                self.next + 1
            };
            if self.used.contains(&port) {
                continue;
            }
            let Ok(std_sock) = std::net::UdpSocket::bind(SocketAddr::new(ip, port)) else {
                continue;
            };
            if std_sock.set_nonblocking(true).is_err() {
                continue;
            }
            self.used.insert(port);
            return Some((port, std_sock));
        }
        None
    }

    /// Returns a port to the pool.
    pub(crate) fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }

    /// Ports in use.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_ports_and_skips_busy_ones() {
        // Find three consecutive free ports, occupy the middle one from outside.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe
            .local_addr()
            .unwrap()
            .port()
            .saturating_sub(3000)
            .max(20000);
        drop(probe);
        let busy = std::net::UdpSocket::bind(("127.0.0.1", base + 1));
        let mut pool = PortPool::new(base, base + 2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut got = Vec::new();
        while let Some((p, s)) = pool.bind(ip) {
            got.push(p);
            std::mem::forget(s);
            if got.len() > 3 {
                break;
            }
        }
        if busy.is_ok() {
            assert!(!got.contains(&(base + 1)));
        }
        assert!(got.len() <= 3);
        let mut dedup = got.clone();
        dedup.dedup();
        assert_eq!(dedup, got);
        assert_eq!(pool.in_use(), got.len());
        pool.release(got[0]);
        assert_eq!(pool.in_use(), got.len() - 1);
    }

    #[test]
    fn inverted_range_is_empty() {
        let mut pool = PortPool::new(30000, 20000);
        assert!(pool.bind("127.0.0.1".parse().unwrap()).is_none());
    }
}
