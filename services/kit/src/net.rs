//! What an IP address says about where it is. Two services need the same answer: payments'
//! fraud rules (an address shared by every customer — a proxy, a local run — says nothing
//! of any one of them) and notifications' webhooks (a request from inside the cluster must
//! not reach what the Internet cannot). `std`'s `IpAddr::is_global` is not stable yet.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use ipnet::IpNet;

/// The private address ranges a cluster's pods use (RFC 1918, and IPv6 unique local).
macro_rules! private_ranges {
    () => {
        "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    };
}

/// The private address ranges a cluster's pods use (RFC 1918, and IPv6 unique local): what the
/// operator trusts in front of a shop's gateway.
pub const PRIVATE_RANGES: &str = private_ranges!();

/// Where a service's gateway may be (`TRUSTED_PROXIES`' default): loopback (a local run) and
/// the private ranges pods get their addresses from.
pub const DEFAULT_TRUSTED_PROXIES: &str = concat!("127.0.0.0/8,::1/128,", private_ranges!());

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918, IPv6 unique
/// local), link-local (cloud metadata at 169.254.169.254 among them), shared (carrier-grade
/// NAT, 100.64/10), "this network" (0/8), IETF protocol assignments (192.0.0/24), multicast,
/// broadcast or unspecified. IPv4-mapped IPv6 addresses are judged as their IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(v4.into()),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses a list of CIDRs or addresses, comma-separated (`GATEWAY_TRUSTED_PROXIES`,
    /// `TRUSTED_PROXIES`).
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "trusted proxies: {s:?} is not a CIDR (e.g. 10.0.0.0/8) or address"
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address is judged as its IPv4
    /// address).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that reached a service: the peer, unless it is a trusted proxy
    /// (the gateway) — then the address the gateway judged (`X-Real-IP`, which it always sets
    /// and never passes on from a client), else the right-most `X-Forwarded-For` hop. An
    /// IPv4-mapped IPv6 address is its IPv4 address, so one client is one key.
    pub fn client_of_service(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let real_ip = headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        real_ip
            .or_else(|| forwarded_for(headers).last())
            .unwrap_or(peer)
            .to_canonical()
    }

    /// The client: the peer, unless it is a trusted proxy — then the nearest address in
    /// `X-Forwarded-For` that is not a trusted proxy (the right-most untrusted hop; entries
    /// further left were written by the client and prove nothing).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = forwarded_for(headers).map(|ip| ip.to_canonical()).collect();
        hops.iter()
            .rev()
            .copied()
            .find(|ip| !self.trusts(*ip))
            .or_else(|| hops.first().copied())
            .unwrap_or(peer)
    }
}

/// The well-formed addresses in `X-Forwarded-For`, client-most first.
fn forwarded_for(headers: &HeaderMap) -> impl Iterator<Item = IpAddr> + '_ {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse::<IpAddr>().ok())
}

/// The address of the client a request comes from, as [`TrustedProxies::client_of_service`]
/// judges it with the service's `TRUSTED_PROXIES` (an extractor; [`crate::Application`] puts the
/// proxies in every request's extensions). Key per-client limits on this, never on the peer:
/// behind the gateway every peer is the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let ip = match parts.extensions.get::<std::sync::Arc<TrustedProxies>>() {
            Some(proxies) => proxies.client_of_service(peer, &parts.headers),
            None => peer.to_canonical(),
        };
        Ok(Self(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_service_believes_the_gateways_word_only_from_a_trusted_proxy() {
        let proxies = TrustedProxies::parse(DEFAULT_TRUSTED_PROXIES).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-real-ip", "203.0.113.7".parse().unwrap());
        headers.insert("x-forwarded-for", "198.51.100.1, 10.1.2.3".parse().unwrap());
        assert_eq!(
            proxies.client_of_service(ip("10.0.0.5"), &headers),
            ip("203.0.113.7")
        );
        assert_eq!(
            proxies.client_of_service(ip("::ffff:127.0.0.1"), &headers),
            ip("203.0.113.7")
        );
        assert_eq!(
            proxies.client_of_service(ip("198.51.100.9"), &headers),
            ip("198.51.100.9"),
            "a client on the internet names no other address"
        );
        headers.remove("x-real-ip");
        assert_eq!(
            proxies.client_of_service(ip("10.0.0.5"), &headers),
            ip("10.1.2.3")
        );
        headers.remove("x-forwarded-for");
        assert_eq!(
            proxies.client_of_service(ip("10.0.0.5"), &headers),
            ip("10.0.0.5")
        );
        let none = TrustedProxies::parse("").unwrap();
        headers.insert("x-real-ip", "203.0.113.7".parse().unwrap());
        assert_eq!(
            none.client_of_service(ip("127.0.0.1"), &headers),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let none = TrustedProxies::parse("").unwrap();
        let headers = HeaderMap::new();
        assert_eq!(
            none.client_ip(ip("::ffff:203.0.113.7"), &headers),
            ip("203.0.113.7")
        );
        assert_eq!(
            none.client_of_service(ip("::ffff:203.0.113.7"), &headers),
            ip("203.0.113.7")
        );
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "::ffff:203.0.113.7".parse().unwrap());
        assert!(proxies.trusts(ip("::ffff:10.0.0.1")));
        assert_eq!(
            proxies.client_ip(ip("::ffff:10.0.0.1"), &headers),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.20.1.1",
            "192.168.0.10",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "::1",
            "::",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "203.0.113.7",
            "2606:4700::1111",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
