//! The one port allocator: every TCP and UDP port of every service, deterministic for a
//! profile, persisted across restarts, never a reserved or host-busy port.

use crate::profile::{Profile, Protocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// One port a service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    /// Service name.
    pub service: String,
    /// Port name within the service (`http`, `p2p`, …).
    pub name: String,
    /// TCP, UDP or both on one number.
    pub protocol: Protocol,
    /// A number the user pinned, if any.
    pub pinned: Option<u16>,
}

/// A port given to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    /// The number.
    pub port: u16,
    /// Its protocol(s).
    pub protocol: Protocol,
}

/// Service → port name → assignment. Sorted, so files and output are stable.
pub type Allocation = BTreeMap<String, BTreeMap<String, Assigned>>;

/// Why an allocation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    /// A pinned port is held by another program.
    #[error("port {port}/{protocol} pinned by services.{service}.ports.{name} is in use{holder}: stop that program, or pin another port, or use `auto`")]
    PinnedBusy {
        /// Service.
        service: String,
        /// Port name.
        name: String,
        /// Number.
        port: u16,
        /// Protocol.
        protocol: Protocol,
        /// " by pid N (comm)" when the OS tells.
        holder: String,
    },
    /// The range has too few free ports.
    #[error("port range {start}-{end} has no free port left for services.{service}.ports.{name} ({needed} ports requested in all): widen ports.start/ports.end")]
    Exhausted {
        /// Range start.
        start: u16,
        /// Range end.
        end: u16,
        /// Service that did not get a port.
        service: String,
        /// Port name.
        name: String,
        /// Total requested.
        needed: usize,
    },
}

/// Tells whether the host already uses a port; implemented over the real host and by tests.
pub trait HostProbe {
    /// `Some(reason)` if binding `port` for `protocol` would fail.
    fn busy(&self, port: u16, protocol: Protocol) -> Option<String>;
    /// The same for a port the user pinned (by default the same check).
    fn busy_pinned(&self, port: u16, protocol: Protocol) -> Option<String> {
        self.busy(port, protocol)
    }
}

/// A probe that finds every port free (for planning without touching the host).
pub struct NoProbe;

impl HostProbe for NoProbe {
    fn busy(&self, _: u16, _: Protocol) -> Option<String> {
        None
    }
}

/// Probes by binding a socket on the wildcard address, which fails if any program holds
/// the port on any local address. A TCP probe sets SO_REUSEADDR as every listener does
/// (std's, tokio's, Reth's, Geth's): connections of an earlier listener left in TIME_WAIT
/// (a network just brought down after traffic) do not stop the listener, so they do not
/// make the port busy; a socket that listens there still does.
pub struct BindProbe;

impl HostProbe for BindProbe {
    fn busy(&self, port: u16, protocol: Protocol) -> Option<String> {
        use socket2::{Domain, Socket, Type};
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        let try_bind = |ty: Type| -> std::io::Result<()> {
            let s = Socket::new(Domain::IPV4, ty, None)?;
            if ty == Type::STREAM {
                s.set_reuse_address(true)?;
            }
            s.bind(&addr.into())?;
            if ty == Type::STREAM {
                // Linux lets two SO_REUSEADDR sockets bind one port while neither listens:
                // only listen(2) tells a listener is already there.
                s.listen(1)?;
            }
            Ok(())
        };
        let mut why = Vec::new();
        if protocol.tcp() {
            if let Err(e) = try_bind(Type::STREAM) {
                why.push(format!("tcp: {e}"));
            }
        }
        if protocol.udp() {
            if let Err(e) = try_bind(Type::DGRAM) {
                why.push(format!("udp: {e}"));
            }
        }
        if why.is_empty() {
            None
        } else {
            let holder = crate::procinfo::port_holder(port, protocol)
                .map(|h| format!(" by {h}"))
                .unwrap_or_default();
            Some(format!("{}{}", why.join(", "), holder))
        }
    }
}

/// The host's sockets read once from `/proc/net/{tcp,tcp6,udp,udp6}`: every socket of
/// this network namespace, listening or bound, whatever its owner. One read, then each
/// lookup is a bit test, so allocating thousands of ports costs microseconds; ports a
/// user pinned are still checked with a real bind ([`BindProbe`]).
pub struct SnapshotProbe {
    tcp: Vec<u64>,
    udp: Vec<u64>,
    /// TCP ports with a socket in LISTEN.
    listening: Vec<u64>,
}

impl SnapshotProbe {
    /// Reads the socket tables now.
    pub fn read() -> Self {
        let mut p = SnapshotProbe {
            tcp: vec![0; 1024],
            udp: vec![0; 1024],
            listening: vec![0; 1024],
        };
        for (file, tcp) in [
            ("/proc/net/tcp", true),
            ("/proc/net/tcp6", true),
            ("/proc/net/udp", false),
            ("/proc/net/udp6", false),
        ] {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                    continue;
                };
                // TIME_WAIT (06) does not stop a server that sets SO_REUSEADDR, as all do.
                if tcp && *state == "06" {
                    continue;
                }
                let Some(port) = local
                    .rsplit_once(':')
                    .and_then(|(_, h)| u16::from_str_radix(h, 16).ok())
                else {
                    continue;
                };
                let bits = if tcp { &mut p.tcp } else { &mut p.udp };
                bits[port as usize / 64] |= 1 << (port % 64);
                if tcp && *state == "0A" {
                    p.listening[port as usize / 64] |= 1 << (port % 64);
                }
            }
        }
        p
    }
}

impl SnapshotProbe {
    /// Why `port` is taken: by any TCP socket, or (`listen_only`) by a listener only.
    fn taken(&self, port: u16, protocol: Protocol, listen_only: bool) -> Option<String> {
        let has = |bits: &[u64]| bits[port as usize / 64] & (1 << (port % 64)) != 0;
        let tcp_bits = if listen_only {
            &self.listening
        } else {
            &self.tcp
        };
        let tcp = protocol.tcp() && has(tcp_bits);
        let udp = protocol.udp() && has(&self.udp);
        if !tcp && !udp {
            return None;
        }
        let what = match (tcp, udp) {
            (true, true) => "tcp and udp in use",
            (true, false) => "tcp in use",
            _ => "udp in use",
        };
        let holder = crate::procinfo::port_holder(port, protocol)
            .map(|h| format!(" by {h}"))
            .unwrap_or_default();
        Some(format!("{what}{holder}"))
    }
}

impl HostProbe for SnapshotProbe {
    fn busy(&self, port: u16, protocol: Protocol) -> Option<String> {
        self.taken(port, protocol, false)
    }
}

/// The probe allocation uses: the socket-table snapshot for new ports, a real bind for
/// pinned ones (where the kernel's own answer is worth the cost).
pub struct HostPorts {
    snapshot: SnapshotProbe,
}

impl HostPorts {
    /// Reads the host's socket tables.
    pub fn read() -> Self {
        HostPorts {
            snapshot: SnapshotProbe::read(),
        }
    }
}

impl HostProbe for HostPorts {
    fn busy(&self, port: u16, protocol: Protocol) -> Option<String> {
        self.snapshot.busy(port, protocol)
    }
    fn busy_pinned(&self, port: u16, protocol: Protocol) -> Option<String> {
        // The kernel's answer for IPv4, and the table's for a listener on IPv6 only. A
        // pinned port is the listener's to take again: only a listener (or a UDP socket)
        // holds it, not the connections an earlier one left closing.
        BindProbe
            .busy(port, protocol)
            .or_else(|| self.snapshot.taken(port, protocol, true))
    }
}

/// Every port request of a profile, in a stable order (service, then port name).
pub fn requests(profile: &Profile) -> Vec<PortRequest> {
    let mut out = Vec::new();
    for (svc, s) in &profile.services {
        for (name, spec) in &s.ports {
            out.push(PortRequest {
                service: svc.clone(),
                name: name.clone(),
                protocol: spec.protocol,
                pinned: spec.port.and_then(|p| u16::try_from(p).ok()),
            });
        }
    }
    // chainctl's own last, so they never move the services' ports.
    for (name, spec) in chainctl_ports(profile) {
        out.push(PortRequest {
            service: CHAINCTL.into(),
            name: name.into(),
            protocol: spec.protocol,
            pinned: spec.port.and_then(|p| u16::try_from(p).ok()),
        });
    }
    out
}

/// The pseudo-service that owns the ports of chainctl's own endpoints.
pub const CHAINCTL: &str = "chainctl";

/// chainctl's own ports: the API always, the gateway when the profile has validators.
pub fn chainctl_ports(profile: &Profile) -> Vec<(&'static str, crate::profile::PortSpec)> {
    let mut out = vec![("api", profile.api.port.clone())];
    if profile.gateway.enabled && profile.validators.count > 0 {
        out.push(("gateway", profile.gateway.port.clone()));
    }
    out
}

/// One line of "what the allocator did and why", for logs.
pub type Note = String;

/// A set of port numbers, one bit each.
struct Bits(Vec<u64>);

impl Bits {
    fn new() -> Self {
        Bits(vec![0; 1024])
    }
    fn get(&self, p: u16) -> bool {
        self.0[p as usize / 64] & (1 << (p % 64)) != 0
    }
    fn set(&mut self, p: u16) {
        self.0[p as usize / 64] |= 1 << (p % 64);
    }
}

struct Taken {
    tcp: Bits,
    udp: Bits,
}

impl Taken {
    fn free(&self, p: u16, proto: Protocol) -> bool {
        !((proto.tcp() && self.tcp.get(p)) || (proto.udp() && self.udp.get(p)))
    }
    fn take(&mut self, p: u16, proto: Protocol) {
        if proto.tcp() {
            self.tcp.set(p);
        }
        if proto.udp() {
            self.udp.set(p);
        }
    }
}

/// Inputs besides the requests.
pub struct AllocInput<'a> {
    /// First port of the range.
    pub start: u16,
    /// Last port of the range (inclusive).
    pub end: u16,
    /// Ports never to hand out.
    pub reserved: &'a [u16],
    /// The previous allocation (from the state dir), kept where still valid.
    pub previous: &'a Allocation,
    /// Services whose running process holds its ports now: their ports are not probed.
    pub running: &'a dyn Fn(&str) -> bool,
    /// The host probe.
    pub probe: &'a dyn HostProbe,
}

/// Allocates every request. Pinned ports first, then previous assignments that are still
/// valid, then new ports from the bottom of the range in request order.
pub fn allocate(
    reqs: &[PortRequest],
    input: &AllocInput,
) -> Result<(Allocation, Vec<Note>), PortError> {
    let mut taken = Taken {
        tcp: Bits::new(),
        udp: Bits::new(),
    };
    let mut host_busy = Taken {
        tcp: Bits::new(),
        udp: Bits::new(),
    };
    let mut notes = Vec::new();
    let mut out: Allocation = BTreeMap::new();
    for &r in input.reserved {
        taken.take(r, Protocol::Both);
    }
    let assign = |out: &mut Allocation, r: &PortRequest, port: u16| {
        out.entry(r.service.clone()).or_default().insert(
            r.name.clone(),
            Assigned {
                port,
                protocol: r.protocol,
            },
        );
    };
    // 1. Pinned ports (validation already refused duplicates and reserved ones).
    for r in reqs {
        let Some(port) = r.pinned else { continue };
        if !(input.running)(&r.service) {
            if let Some(why) = input.probe.busy_pinned(port, r.protocol) {
                let holder = why
                    .split_once(" by ")
                    .map(|(_, h)| format!(" by {h}"))
                    .unwrap_or_default();
                return Err(PortError::PinnedBusy {
                    service: r.service.clone(),
                    name: r.name.clone(),
                    port,
                    protocol: r.protocol,
                    holder,
                });
            }
        }
        taken.take(port, r.protocol);
        assign(&mut out, r, port);
    }
    // 2. Previous assignments, so ports stay the same across restarts.
    let mut pending = Vec::new();
    for r in reqs.iter().filter(|r| r.pinned.is_none()) {
        let prev = input.previous.get(&r.service).and_then(|m| m.get(&r.name));
        match prev {
            Some(a)
                if a.protocol == r.protocol
                    && (input.start..=input.end).contains(&a.port)
                    && taken.free(a.port, r.protocol) =>
            {
                if !(input.running)(&r.service) {
                    if let Some(why) = input.probe.busy(a.port, r.protocol) {
                        notes.push(format!(
                            "{}.{}: previous port {} is now in use ({why}); moving it",
                            r.service, r.name, a.port
                        ));
                        host_busy.take(a.port, r.protocol);
                        pending.push(r);
                        continue;
                    }
                }
                taken.take(a.port, r.protocol);
                assign(&mut out, r, a.port);
            }
            _ => pending.push(r),
        }
    }
    // 3. New ports, lowest free first. One cursor per protocol: every number below it
    // is taken for that protocol, so allocation stays linear in the range size.
    let (mut cur_tcp, mut cur_udp) = (input.start as u32, input.start as u32);
    for r in pending {
        let mut p = match (r.protocol.tcp(), r.protocol.udp()) {
            (true, true) => cur_tcp.max(cur_udp),
            (true, false) => cur_tcp,
            _ => cur_udp,
        };
        loop {
            if p > input.end as u32 {
                return Err(PortError::Exhausted {
                    start: input.start,
                    end: input.end,
                    service: r.service.clone(),
                    name: r.name.clone(),
                    needed: reqs.len(),
                });
            }
            let port = p as u16;
            if taken.free(port, r.protocol) && host_busy.free(port, r.protocol) {
                match input.probe.busy(port, r.protocol) {
                    None => break,
                    Some(why) => {
                        notes.push(format!(
                            "{}.{}: skipped port {port}, in use on this host ({why})",
                            r.service, r.name
                        ));
                        host_busy.take(port, Protocol::Both);
                    }
                }
            }
            p += 1;
        }
        let port = p as u16;
        taken.take(port, r.protocol);
        assign(&mut out, r, port);
        while cur_tcp <= input.end as u32 && !taken.free(cur_tcp as u16, Protocol::Tcp) {
            cur_tcp += 1;
        }
        while cur_udp <= input.end as u32 && !taken.free(cur_udp as u16, Protocol::Udp) {
            cur_udp += 1;
        }
    }
    Ok((out, notes))
}

/// Benchmark input: `services` services of 5 ports each, as an EL has (http, ws, engine,
/// metrics TCP; p2p TCP and UDP on one number).
pub fn synthetic_requests(services: usize) -> Vec<PortRequest> {
    let mut out = Vec::with_capacity(services * 5);
    for s in 0..services {
        for (name, protocol) in [
            ("http", Protocol::Tcp),
            ("ws", Protocol::Tcp),
            ("engine", Protocol::Tcp),
            ("metrics", Protocol::Tcp),
            ("p2p", Protocol::Both),
        ] {
            out.push(PortRequest {
                service: format!("svc-{s:04}"),
                name: name.into(),
                protocol,
                pinned: None,
            });
        }
    }
    out
}

/// Allocates every port of the profile, keeping `previous` assignments where they still
/// fit (what the supervisor does with the state dir's ports.json).
pub fn allocate_from(
    loaded: &crate::profile::Loaded,
    previous: &Allocation,
    running: &[String],
    probe: &dyn HostProbe,
) -> anyhow::Result<Allocation> {
    let p = &loaded.profile;
    let reserved: Vec<u16> = p
        .ports
        .reserved
        .iter()
        .filter_map(|r| u16::try_from(*r).ok())
        .collect();
    let input = AllocInput {
        start: p.ports.start as u16,
        end: p.ports.end as u16,
        reserved: &reserved,
        previous,
        running: &|s| running.iter().any(|r| r == s),
        probe,
    };
    let (alloc, notes) = allocate(&requests(p), &input)
        .map_err(|e| anyhow::anyhow!("{}: {e}", loaded.source.label))?;
    for n in notes {
        tracing::info!("ports: {n}");
    }
    Ok(alloc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    struct Busy(BTreeSet<u16>);
    impl HostProbe for Busy {
        fn busy(&self, port: u16, _: Protocol) -> Option<String> {
            self.0.contains(&port).then(|| "held by a test".to_string())
        }
    }

    fn req(service: &str, name: &str, protocol: Protocol, pinned: Option<u16>) -> PortRequest {
        PortRequest {
            service: service.into(),
            name: name.into(),
            protocol,
            pinned,
        }
    }

    fn run(
        reqs: &[PortRequest],
        reserved: &[u16],
        prev: &Allocation,
        probe: &dyn HostProbe,
    ) -> Result<Allocation, PortError> {
        let input = AllocInput {
            start: 20000,
            end: 20010,
            reserved,
            previous: prev,
            running: &|_| false,
            probe,
        };
        allocate(reqs, &input).map(|(a, _)| a)
    }

    #[test]
    fn skips_reserved_pinned_and_busy_ports() {
        let reqs = vec![
            req("a", "http", Protocol::Tcp, None),
            req("a", "p2p", Protocol::Both, None),
            req("b", "http", Protocol::Tcp, Some(20003)),
            req("b", "ws", Protocol::Tcp, None),
        ];
        let a = run(&reqs, &[20000], &Allocation::new(), &Busy([20002].into())).unwrap();
        assert_eq!(a["a"]["http"].port, 20001);
        assert_eq!(a["a"]["p2p"].port, 20004);
        assert_eq!(a["b"]["http"].port, 20003);
        assert_eq!(a["b"]["ws"].port, 20005);
    }

    #[test]
    fn tcp_and_udp_only_requests_share_a_number_but_both_does_not() {
        let reqs = vec![
            req("a", "rpc", Protocol::Tcp, None),
            req("a", "disc", Protocol::Udp, None),
            req("b", "p2p", Protocol::Both, None),
        ];
        let a = run(&reqs, &[], &Allocation::new(), &NoProbe).unwrap();
        assert_eq!(a["a"]["rpc"].port, 20000);
        assert_eq!(a["a"]["disc"].port, 20000);
        assert_eq!(a["b"]["p2p"].port, 20001);
    }

    #[test]
    fn keeps_previous_ports_and_moves_busy_ones() {
        let reqs = vec![
            req("a", "http", Protocol::Tcp, None),
            req("b", "http", Protocol::Tcp, None),
        ];
        let mut prev = Allocation::new();
        prev.entry("a".into()).or_default().insert(
            "http".into(),
            Assigned {
                port: 20007,
                protocol: Protocol::Tcp,
            },
        );
        prev.entry("b".into()).or_default().insert(
            "http".into(),
            Assigned {
                port: 20008,
                protocol: Protocol::Tcp,
            },
        );
        let a = run(&reqs, &[], &prev, &Busy([20008].into())).unwrap();
        assert_eq!(a["a"]["http"].port, 20007);
        assert_eq!(a["b"]["http"].port, 20000);
    }

    /// `down` then `up` right after traffic: the old listener's connections wait in
    /// TIME_WAIT on its port, which the new listener (SO_REUSEADDR) binds all the same —
    /// so the pinned-port check must find it free; a live listener is still busy.
    #[test]
    fn a_port_left_in_time_wait_is_free_and_a_listener_is_not() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(
            BindProbe.busy(port, Protocol::Tcp).is_some(),
            "a listener holds it"
        );
        assert!(HostPorts::read().busy_pinned(port, Protocol::Tcp).is_some());
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (served, _) = listener.accept().unwrap();
        // The server closes first (as the gateway does at `down`): its end of the
        // connection, on `port`, goes to TIME_WAIT once the client closes too.
        drop(served);
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).unwrap(), 0);
        drop(client);
        drop(listener);
        let time_wait = || {
            std::fs::read_to_string("/proc/net/tcp")
                .unwrap()
                .lines()
                .any(|l| {
                    let c: Vec<&str> = l.split_whitespace().collect();
                    c.get(1)
                        .is_some_and(|a| a.ends_with(&format!(":{port:04X}")))
                        && c.get(3) == Some(&"06")
                })
        };
        for _ in 0..100 {
            if time_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(time_wait(), "port {port} has a connection in TIME_WAIT");
        assert_eq!(BindProbe.busy(port, Protocol::Tcp), None);
        assert_eq!(HostPorts::read().busy_pinned(port, Protocol::Tcp), None);
        // And a real listener binds it (std sets SO_REUSEADDR, as tokio does).
        std::net::TcpListener::bind(("0.0.0.0", port)).expect("the listener binds");
    }

    #[test]
    fn pinned_busy_port_is_an_error_naming_it() {
        let reqs = vec![req("a", "http", Protocol::Tcp, Some(20005))];
        let e = run(&reqs, &[], &Allocation::new(), &Busy([20005].into())).unwrap_err();
        assert!(
            e.to_string()
                .contains("port 20005/tcp pinned by services.a.ports.http is in use"),
            "{e}"
        );
    }

    #[test]
    fn exhausted_range_is_an_error() {
        let reqs: Vec<_> = (0..12)
            .map(|i| req(&format!("s{i:02}"), "p", Protocol::Tcp, None))
            .collect();
        let e = run(&reqs, &[], &Allocation::new(), &NoProbe).unwrap_err();
        assert!(matches!(e, PortError::Exhausted { .. }), "{e}");
        assert!(e.to_string().contains("widen ports.start/ports.end"));
    }
}

/// Which processes hold a running network's ports legitimately: each service's process
/// group (for a container, Docker's proxy forwarding to it), and the supervisor itself for
/// chainctl's own ports (API, gateway).
#[derive(Debug, Default)]
pub struct Owners {
    groups: Vec<(String, i32)>,
    supervisor: Option<i32>,
}

/// What holds one allocated port on this host.
#[derive(Debug, PartialEq, Eq)]
pub enum HostUse {
    /// Nothing: the port is free.
    Free,
    /// The service it is allocated to (or the supervisor, for chainctl's ports).
    Ours,
    /// Another program, named as well as the host lets us.
    Conflict(String),
}

impl Owners {
    /// The owners: each service's process group (or swarm instance), and the supervisor.
    pub fn new(groups: Vec<(String, i32)>, supervisor: Option<i32>) -> Owners {
        Owners { groups, supervisor }
    }

    /// Whether `service`'s allocated port `a` is free, held by that service, or taken by
    /// another program.
    pub fn host_use(&self, service: &str, a: &Assigned) -> HostUse {
        let Some(why) = BindProbe.busy(a.port, a.protocol) else {
            return HostUse::Free;
        };
        let holder = match crate::procinfo::port_holder_of(a.port, a.protocol) {
            Some(crate::procinfo::Holder::Pid(pid)) => Some(pid),
            _ => None,
        };
        let mine = |g: i32| self.groups.iter().any(|(n, pg)| n == service && *pg == g);
        let ours = holder.is_some_and(|pid| {
            if service == CHAINCTL {
                return self.supervisor == Some(pid);
            }
            // A container's published port is held by Docker's proxy, forwarding to the
            // same port at one of the service's container addresses (its group is the
            // container's init, in the container's network namespace).
            // A swarm task has no group here (its handle is the instance's number):
            // the proxy of its published port is its own.
            if let Some((ip, port)) = crate::procinfo::docker_proxy_target(pid) {
                return port == a.port
                    && self.groups.iter().any(|(n, g)| {
                        n == service
                            && (*g >= crate::instance::SWARM_HANDLE_BASE
                                || crate::procinfo::netns_local_addrs(*g).contains(&ip))
                    });
            }
            crate::procinfo::pgid(pid).is_some_and(mine)
        });
        if ours {
            HostUse::Ours
        } else {
            HostUse::Conflict(why)
        }
    }
}
