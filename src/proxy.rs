//! Who the client is behind a reverse proxy: `--trusted-proxies CIDR,…` names the
//! proxies whose `Forwarded` / `X-Forwarded-For` headers are believed. From anyone
//! else those headers are ignored, so a client cannot choose its own address.

use std::net::IpAddr;

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `ADDR` or `ADDR/PREFIX`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (canonical(self.addr), ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the
/// nearest address in the forwarding chain that is not a trusted proxy (`Forwarded`
/// is preferred to `X-Forwarded-For`). `forwarded` and `x_forwarded_for` hold every
/// field of that name, in order.
pub fn client_ip(
    peer: IpAddr,
    trusted: &[Cidr],
    forwarded: &[&str],
    x_forwarded_for: &[&str],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return canonical(peer);
    }
    let chain: Vec<IpAddr> = if !forwarded.is_empty() {
        forwarded
            .iter()
            .flat_map(|f| f.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_node(v.trim()))
                        .flatten()
                })
            })
            .collect()
    } else {
        x_forwarded_for
            .iter()
            .flat_map(|f| f.split(','))
            .filter_map(|a| parse_node(a.trim()))
            .collect()
    };
    // Right to left: each hop was added by the proxy after it.
    let mut client = canonical(peer);
    for ip in chain.into_iter().rev() {
        client = canonical(ip);
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `"[::1]:8080"`, `1.2.3.4:80`.
fn parse_node(v: &str) -> Option<IpAddr> {
    let v = v.trim_matches('"');
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("127.0.0.1").unwrap()];
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(ip("192.0.2.9"), &trusted, &[], &["203.0.113.5"]),
            ip("192.0.2.9")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &trusted, &[], &["203.0.113.5"]),
            ip("203.0.113.5")
        );
        // A client's own (forged) entry on the left does not win.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &trusted, &[], &["6.6.6.6, 203.0.113.5"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                &trusted,
                &["for=\"[2001:db8::1]:4711\";proto=https"],
                &["9.9.9.9"]
            ),
            ip("2001:db8::1")
        );
        // Nothing forwarded: the proxy itself.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &trusted, &[], &[]),
            ip("127.0.0.1")
        );
    }
}
