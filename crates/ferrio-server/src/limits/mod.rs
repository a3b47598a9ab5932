//! Limits: connections per node and per client address (behind trusted proxies, the address
//! `X-Forwarded-For` names), new connections per second per address, namespaces per
//! connection, rooms per socket and events per second per socket.

pub mod bodies;
pub mod connections;
pub mod events;
pub mod gate;
pub mod namespaces;

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

pub use connections::ConnectionLimits;
pub use events::{EventLimiter, EventLimits};
pub use gate::Gate;
pub use namespaces::NamespaceSlots;

/// The proxies whose `X-Forwarded-For` header is believed.
#[derive(Debug, Clone, Default)]
pub struct ProxyList(Vec<IpNet>);

impl ProxyList {
    /// An address (`10.0.0.1`) or a CIDR range (`10.0.0.0/8`).
    pub fn parse_one(s: &str) -> Option<IpNet> {
        let s = s.trim();
        s.parse::<IpNet>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
    }

    pub fn new<'a>(entries: impl IntoIterator<Item = &'a str>) -> Self {
        Self(entries.into_iter().filter_map(Self::parse_one).collect())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the last
    /// address in `X-Forwarded-For` that is not one of ours.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &http::HeaderMap) -> IpAddr {
        let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| canonical(p.ip()));
        if self.0.is_empty() || !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // A hop we cannot read: stop at the last one we trust.
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
