//! Countries from client addresses: an operator-supplied database in
//! MaxMind's format (`[geoip] mmdb`: GeoLite2-Country, DB-IP Lite country,
//! or any with `country.iso_code`), read once at start, and which address is
//! the client's: the socket's peer, or - only when the peer is one of the
//! `[geoip] trusted_proxies` - the last address in `X-Forwarded-For` that is
//! not itself a trusted proxy. The address is looked up and forgotten: only
//! the country code is recorded.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use crate::model::CompactString;

/// An open country database and the proxies whose `X-Forwarded-For` counts.
pub(crate) struct GeoIp {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
    trusted: Vec<IpNet>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
    #[serde(borrow)]
    registered_country: Option<Country<'a>>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

impl GeoIp {
    /// Opens `mmdb` (none: no lookups, only the trusted proxies) and parses
    /// the trusted networks (`10.0.0.0/8`, or a single address).
    pub(crate) fn open(mmdb: Option<&Path>, trusted: &[String]) -> Result<GeoIp, String> {
        let reader = match mmdb {
            None => None,
            Some(path) => Some(
                maxminddb::Reader::open_readfile(path)
                    .map_err(|e| format!("[geoip] mmdb: cannot read {}: {e}", path.display()))?,
            ),
        };
        let trusted = trusted
            .iter()
            .map(|t| {
                t.parse::<IpNet>()
                    .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("[geoip] trusted_proxies: {t:?} is not an address or a network")
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(GeoIp { reader, trusted })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&canonical(ip)))
    }

    /// The client's address: the peer's, unless the peer is a trusted
    /// proxy, then the nearest address in `forwarded_for` (the header's
    /// values, in order) that is not one; an unparsable entry ends the walk.
    pub(crate) fn client(&self, peer: Option<IpAddr>, forwarded_for: &[&str]) -> Option<IpAddr> {
        let mut client = peer?;
        if !self.trusts(client) {
            return Some(client);
        }
        let hops = forwarded_for.iter().flat_map(|h| h.split(',')).rev();
        for hop in hops {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Some(client)
    }

    /// The ISO 3166-1 alpha-2 code of `ip`, when the database has it.
    pub(crate) fn country(&self, ip: IpAddr) -> Option<CompactString> {
        let reader = self.reader.as_ref()?;
        let entry: Entry = reader.lookup(canonical(ip)).ok().flatten()?;
        let code = entry
            .country
            .and_then(|c| c.iso_code)
            .or_else(|| entry.registered_country.and_then(|c| c.iso_code))?;
        crate::model::country_code(code)
    }

    /// [`Self::country`] of [`Self::client`].
    pub(crate) fn country_of(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: &[&str],
    ) -> Option<CompactString> {
        self.country(self.client(peer, forwarded_for)?)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let g = GeoIp::open(None, &["10.0.0.0/8".into(), "192.0.2.7".into()]).unwrap();
        // A peer that is not trusted is the client, whatever it claims.
        assert_eq!(
            g.client(Some(ip("203.0.113.9")), &["198.51.100.1"]),
            Some(ip("203.0.113.9"))
        );
        // Behind trusted proxies: the nearest untrusted hop.
        assert_eq!(
            g.client(
                Some(ip("10.1.2.3")),
                &["198.51.100.1, 203.0.113.5", "192.0.2.7"]
            ),
            Some(ip("203.0.113.5"))
        );
        // A mapped IPv4 peer is trusted as its IPv4.
        assert_eq!(
            g.client(Some(ip("::ffff:10.0.0.1")), &["198.51.100.1"]),
            Some(ip("198.51.100.1"))
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            g.client(Some(ip("10.0.0.1")), &["198.51.100.1, junk, 10.0.0.2"]),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(g.client(Some(ip("10.0.0.1")), &[]), Some(ip("10.0.0.1")));
        assert_eq!(g.client(None, &["198.51.100.1"]), None);
        assert!(GeoIp::open(None, &["not-a-net".into()]).is_err());
        assert!(GeoIp::open(Some(Path::new("/nonexistent.mmdb")), &[]).is_err());
    }
}
