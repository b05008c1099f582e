//! `[ip_filter]`: the built-in IP allow and deny lists, and the check of a client's
//! address against them.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Config;
use super::loader::{Loader, Raw, Section};

/// The built-in IP filter. A deny entry wins over an allow entry; an empty allow list
/// allows every address that is not denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpFilterSettings {
    /// Networks allowed to connect (empty: all).
    pub allow: Vec<IpNet>,
    /// Networks refused even if allowed.
    pub deny: Vec<IpNet>,
}

impl IpFilterSettings {
    /// Whether a client at `address` may connect.
    pub fn allows(&self, address: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket appears as ::ffff:a.b.c.d; the lists
        // are written with plain IPv4 networks.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            IpAddr::V4(_) => address,
        };
        if self.deny.iter().any(|net| net.contains(&address)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&address))
    }
}

/// A network in CIDR notation; a bare address is a network of that one address.
fn network(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not an IP network (e.g. 10.0.0.0/8) or address"))
}

fn networks(raw: Raw) -> Result<Vec<IpNet>, String> {
    raw.list()?.iter().map(|text| network(text)).collect()
}

impl Loader<'_> {
    pub(super) fn ip_filter(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "ip_filter");
        let filter = &mut config.ip_filter;
        self.setting(
            &mut section,
            "allow",
            Some("BTPS_IP_ALLOW"),
            networks,
            &mut filter.allow,
        );
        self.setting(
            &mut section,
            "deny",
            Some("BTPS_IP_DENY"),
            networks,
            &mut filter.deny,
        );
        self.finish(section);
    }
}
