//! The containers' network (`docker.subnet`): an IPv4 subnet in whose lower half the
//! external execution clients of a container plan have fixed addresses, while Docker
//! gives every other container one from the upper half (`ip_range`), so the two never
//! meet. Execution clients' static peers are enode URLs, which Reth resolves once when it
//! starts (a name not yet in Docker's DNS is dropped for an hour) and Geth reads from its
//! config: a fixed address is right whenever and in whatever order the containers start.

use std::net::Ipv4Addr;

/// An IPv4 subnet: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: Ipv4Addr,
    prefix: u8,
}

/// The prefix lengths a profile may ask for: a /16 at most (a bridge network that large
/// is almost surely a mistake), a /28 at least (14 addresses).
const PREFIXES: std::ops::RangeInclusive<u8> = 16..=28;

impl Subnet {
    /// Parses `A.B.C.D/N`; the message says what is wrong and what is wanted.
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (ip, len) = s.split_once('/').ok_or_else(|| {
            format!("`{s}` is not an IPv4 subnet: write it as ADDRESS/PREFIX, e.g. `10.213.8.0/22`")
        })?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("`{ip}` in `{s}` is not an IPv4 address (IPv6 networks are not supported): e.g. `10.213.8.0/22`"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| PREFIXES.contains(p))
            .ok_or_else(|| {
                format!(
                    "`/{len}` in `{s}`: the prefix length must be {} to {}",
                    PREFIXES.start(),
                    PREFIXES.end()
                )
            })?;
        let net = Subnet { base: ip, prefix };
        if net.network() != ip {
            return Err(format!(
                "`{s}` has host bits set: its network is `{}/{prefix}`",
                net.network()
            ));
        }
        Ok(net)
    }

    /// The default of profile `name`: a /22 in 10.200.0.0–10.249.255.255, from a hash of
    /// the name (stable across runs and machines).
    pub fn default_for(name: &str) -> Subnet {
        // FNV-1a: small, stable, no dependency.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        let second = 200 + (h % 50) as u8;
        let third = (((h >> 8) % 64) as u8) * 4;
        Subnet {
            base: Ipv4Addr::new(10, second, third, 0),
            prefix: 22,
        }
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) & self.mask())
    }

    fn size(&self) -> usize {
        1usize << (32 - self.prefix)
    }

    /// How many fixed addresses its lower half holds: all but the network's own and the
    /// gateway's (the first, which Docker takes).
    pub fn capacity(&self) -> usize {
        self.size() / 2 - 2
    }

    /// How many containers Docker can give addresses to (the upper half, but for the
    /// broadcast address).
    pub fn dynamic_capacity(&self) -> usize {
        self.size() / 2 - 1
    }

    /// The gateway Docker gives the network: its first address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }

    /// The `i`-th fixed address (from 0), if the lower half holds it.
    pub fn address(&self, i: usize) -> Option<Ipv4Addr> {
        (i < self.capacity()).then(|| Ipv4Addr::from(u32::from(self.network()) + 2 + i as u32))
    }

    /// The upper half, where Docker gives the other containers their addresses.
    pub fn dynamic_range(&self) -> String {
        let upper = Ipv4Addr::from(u32::from(self.network()) + (self.size() / 2) as u32);
        format!("{upper}/{}", self.prefix + 1)
    }
}

impl Subnet {
    /// The first route of this host (the text of `/proc/net/route`) whose network
    /// overlaps this subnet, as (interface, `ADDRESS/PREFIX`): Docker does not check a
    /// subnet it is given against the host's own networks, and containers on an
    /// overlapping one would cut this host off from that network. Default routes and
    /// Docker's own bridges are not networks of the host.
    pub fn overlapping_route(&self, routes: &str) -> Option<(String, String)> {
        let (mine, my_mask) = (u32::from(self.network()), self.mask());
        routes.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, mask) = (*f.first()?, *f.get(1)?, *f.get(7)?);
            if iface == "docker0" || iface == "docker_gwbridge" || iface.starts_with("br-") {
                return None;
            }
            // The kernel prints each address as the hex of its bytes read as a
            // little-endian number.
            let dest = u32::from_str_radix(dest, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(mask, 16).ok()?.swap_bytes();
            if mask == 0 {
                return None;
            }
            let both = my_mask & mask;
            (mine & both == dest & both).then(|| {
                (
                    iface.to_string(),
                    format!("{}/{}", Ipv4Addr::from(dest & mask), mask.count_ones()),
                )
            })
        })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// The subnet of a profile, if its containers need one: `docker.subnet`, else, when it
/// has external execution clients (which need fixed addresses for their peers), its
/// default; none otherwise (Docker picks one, as it avoids the host's own networks).
pub fn of(p: &crate::profile::Profile) -> Result<Option<Subnet>, String> {
    match &p.docker.subnet {
        Some(s) => Subnet::parse(s).map(Some),
        None if !crate::clients::p2p::external_els(p).is_empty() => {
            Ok(Some(Subnet::default_for(&p.name)))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_addresses_and_refuses_with_the_fix() {
        let s = Subnet::parse("10.213.8.0/22").unwrap();
        assert_eq!(s.to_string(), "10.213.8.0/22");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 213, 8, 1));
        assert_eq!(s.address(0), Some(Ipv4Addr::new(10, 213, 8, 2)));
        assert_eq!(s.address(300), Some(Ipv4Addr::new(10, 213, 9, 46)));
        assert_eq!(s.capacity(), 510);
        assert_eq!(s.address(509), Some(Ipv4Addr::new(10, 213, 9, 255)));
        assert_eq!(s.address(510), None, "the upper half is Docker's");
        assert_eq!(s.dynamic_range(), "10.213.10.0/23");
        assert_eq!(s.dynamic_capacity(), 511);
        let small = Subnet::parse("192.168.7.16/28").unwrap();
        assert_eq!(small.capacity(), 6);
        assert_eq!(small.address(5), Some(Ipv4Addr::new(192, 168, 7, 23)));
        assert_eq!(small.dynamic_range(), "192.168.7.24/29");
        for (bad, want) in [
            ("10.0.0.0", "write it as ADDRESS/PREFIX"),
            ("fd00::/64", "not an IPv4 address"),
            ("10.0.0.0/8", "must be 16 to 28"),
            ("10.0.0.0/x", "must be 16 to 28"),
            ("10.0.0.5/24", "its network is `10.0.0.0/24`"),
        ] {
            let e = Subnet::parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn a_route_of_the_host_that_overlaps_is_found_and_docker_bridges_are_not() {
        // As /proc/net/route prints them: little-endian hex.
        let routes =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
br-1a2b\t0000D50A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
wg0\t0008D50A\t00000000\t0001\t0\t0\t0\t00FCFFFF\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let at = |s: &str| Subnet::parse(s).unwrap().overlapping_route(routes);
        assert_eq!(
            at("10.213.8.0/24"),
            Some(("wg0".into(), "10.213.8.0/22".into()))
        );
        assert_eq!(
            at("10.213.0.0/16"),
            Some(("wg0".into(), "10.213.8.0/22".into()))
        );
        assert_eq!(at("10.213.12.0/22"), None, "next to it");
        assert_eq!(
            at("192.0.2.128/25"),
            Some(("eth0".into(), "192.0.2.0/24".into()))
        );
        assert_eq!(at("172.17.5.0/24"), None, "docker0 is Docker's own");
        assert_eq!(at("10.213.100.0/24"), None, "br-… is Docker's own");
        assert_eq!(
            Subnet::parse("10.9.0.0/24").unwrap().overlapping_route(""),
            None
        );
    }

    #[test]
    fn the_default_is_a_stable_22_of_the_name_in_10_200_to_10_249() {
        let a = Subnet::default_for("devnet");
        assert_eq!(a, Subnet::default_for("devnet"));
        assert_ne!(a, Subnet::default_for("devnet2"));
        for name in ["a", "devnet", "reth", "x-y-z", "mixedrun"] {
            let s = Subnet::default_for(name);
            let o = s.network().octets();
            assert!(
                (200..250).contains(&o[1]) && o[2].is_multiple_of(4) && o[3] == 0,
                "{s}"
            );
            assert_eq!(Subnet::parse(&s.to_string()).unwrap(), s);
        }
    }
}
