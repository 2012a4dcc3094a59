//! Who a connection is from: connections not yet upgraded, counted per
//! source address (`server.max_connections_per_ip`), and the trusted
//! proxies whose connections carry many clients (`server.trusted_proxies`).
//!
//! Why: one address filled the node-wide budget of connections in their
//! handshake (1,024 stalled requests locked every other client out). A
//! bound per address keeps one source from taking it all; a proxy's
//! connections are not bounded here (they are many clients: bound them at
//! the proxy).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The address a request or connection is from (the client's, through
/// trusted proxies), as the HTTP layer attaches it to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// An address range: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `a.b.c.d`, `a.b.c.d/n`, an IPv6 address, or one with `/n`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(bits) => bits
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (_, ip) => ip,
        };
        let bits = |ip: IpAddr| -> u128 {
            match ip {
                IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
                IpAddr::V6(v6) => u128::from(v6),
            }
        };
        if self.net.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        // An IPv4 address sits in the top 32 bits: one mask for both.
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        bits(self.net) & mask == bits(ip) & mask
    }
}

/// Connections not yet upgraded, per source address.
pub struct Peers {
    /// At most this many per address; 0: no bound.
    max_per_ip: usize,
    trusted: Vec<Cidr>,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl Peers {
    pub fn new(max_per_ip: usize, trusted: Vec<Cidr>) -> Arc<Peers> {
        Arc::new(Peers {
            max_per_ip,
            trusted,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `ip` is one of `server.trusted_proxies`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// Counts a new connection from `ip`; `None` when that address has
    /// `max_per_ip` already (a trusted proxy is never refused).
    pub fn admit(self: &Arc<Peers>, ip: IpAddr) -> Option<PeerGuard> {
        if self.max_per_ip == 0 || self.is_trusted(ip) {
            return Some(PeerGuard(None));
        }
        let mut counts = self.counts.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(PeerGuard(Some((self.clone(), ip))))
    }

    /// Connections from `ip` counted now.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.counts.lock().get(&ip).copied().unwrap_or(0)
    }

    /// The client a request is from: the peer, or, when the peer is a
    /// trusted proxy, the last address in `X-Forwarded-For` that is not
    /// one (the proxies append; what a client wrote itself comes first and
    /// is not believed).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let Some(list) = forwarded_for else {
            return peer;
        };
        for hop in list.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.is_trusted(ip) => continue,
                Ok(ip) => return ip,
                Err(_) => return peer,
            }
        }
        peer
    }
}

/// One counted connection; uncounted when dropped (at its upgrade or end).
pub struct PeerGuard(Option<(Arc<Peers>, IpAddr)>);

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let Some((peers, ip)) = self.0.take() else {
            return;
        };
        let mut counts = peers.counts.lock();
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_their_addresses() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.9.9")));
        let one = Cidr::parse("192.168.1.7").unwrap();
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn one_address_is_bounded_and_freed() {
        let peers = Peers::new(2, vec![Cidr::parse("10.0.0.1").unwrap()]);
        let a = ip("127.0.0.2");
        let first = peers.admit(a).unwrap();
        let _second = peers.admit(a).unwrap();
        assert!(peers.admit(a).is_none(), "a third is refused");
        assert!(peers.admit(ip("127.0.0.3")).is_some(), "others are not");
        drop(first);
        assert!(peers.admit(a).is_some(), "freed with its connection");
        let proxy = ip("10.0.0.1");
        let held: Vec<_> = (0..5).map(|_| peers.admit(proxy).unwrap()).collect();
        assert_eq!(
            (held.len(), peers.count(proxy)),
            (5, 0),
            "a proxy is not bounded"
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peers = Peers::new(0, vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        let xff = Some("6.6.6.6, 1.2.3.4, 10.0.0.9");
        // From the proxy: the last hop it did not add itself.
        assert_eq!(peers.client(ip("10.0.0.1"), xff), ip("1.2.3.4"));
        // From anyone else: the header is the client's own words.
        assert_eq!(peers.client(ip("5.5.5.5"), xff), ip("5.5.5.5"));
        assert_eq!(peers.client(ip("10.0.0.1"), None), ip("10.0.0.1"));
        assert_eq!(peers.client(ip("10.0.0.1"), Some("junk")), ip("10.0.0.1"));
    }
}
