//! Semantic checks serde cannot do: names, ranges, references, cycles, placeholders.

use crate::placeholders::{self, Segment, Var};
use crate::profile::locate::Index;
use crate::profile::{valid_name, valid_node_name, Problem, Profile, Protocol};
use std::collections::{BTreeMap, BTreeSet};

/// Lowest port a service may use: below it needs root and collides with system services.
pub const MIN_PORT: u64 = 1024;
/// Highest TCP/UDP port.
pub const MAX_PORT: u64 = 65535;

struct Checker<'a> {
    index: &'a Index,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn at(&mut self, field: &str, msg: impl Into<String>) {
        let msg = msg.into();
        self.problems.push(Problem {
            pos: self.index.value(field),
            message: format!("{field}: {msg}"),
        });
    }
    fn at_key(&mut self, field: &str, msg: impl Into<String>) {
        let msg = msg.into();
        self.problems.push(Problem {
            pos: self.index.key(field),
            message: format!("{field}: {msg}"),
        });
    }
}

/// All problems in a parsed profile, empty when it is valid.
pub fn validate(p: &Profile, index: &Index) -> Vec<Problem> {
    let mut c = Checker {
        index,
        problems: Vec::new(),
    };
    if !valid_name(&p.name) {
        c.at(
            "name",
            format!(
                "`{}` is not a valid name: use 1-40 lowercase letters, digits and `-`",
                p.name
            ),
        );
    }
    chain(p, &mut c);
    unsupported(p, &mut c);
    ports(p, &mut c);
    services(p, &mut c);
    supervisor(p, &mut c);
    monitoring(p, &mut c);
    listen(p, &mut c);
    backup(p, &mut c);
    c.problems
}

fn backup(p: &Profile, c: &mut Checker) {
    let Some(b) = &p.backup else { return };
    if b.every.get() < std::time::Duration::from_secs(60) {
        c.at(
            "backup.every",
            format!(
                "{} is shorter than 1m: a backup copies every store; give e.g. `6h`",
                humantime::format_duration(b.every.get())
            ),
        );
    }
    if b.keep == 0 {
        c.at(
            "backup.keep",
            "0 would delete every backup it makes: keep at least 1 (e.g. 7)",
        );
    }
    if p.validators.count == 0 {
        c.at_key(
            "backup",
            "the profile has no validators: chainctl backs up validators and their execution clients; remove `backup`",
        );
    }
    for (i, r) in b.recipients.iter().enumerate() {
        let ok = r.starts_with("age1")
            && r.len() == 62
            && r[4..]
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit());
        if !ok {
            c.at(
                &format!("backup.recipients[{i}]"),
                format!(
                    "`{r}` is not an age X25519 public key (62 characters starting with `age1`, as `age-keygen` prints)"
                ),
            );
        }
    }
}

/// Plain HTTP stays on loopback: an address beyond it is refused unless what listens
/// there speaks TLS, or the profile says `listen.insecure: true`.
fn listen(p: &Profile, c: &mut Checker) {
    if p.listen.insecure {
        return;
    }
    let or_insecure = "or set `listen.insecure: true` to accept plain HTTP beyond loopback";
    let has_services = p.validators.count > 0 || !p.services.is_empty();
    let rpc = p.listen.rpc;
    if has_services && !rpc.is_loopback() {
        c.at(
            "listen.rpc",
            format!(
                "{rpc} is not loopback, and the services' endpoints there (JSON-RPC, Engine API, \
                 metrics) speak plain HTTP: keep `listen.rpc: 127.0.0.1` and open only the \
                 gateway to other hosts (`listen.gateway: {rpc}` with `gateway.tls: {{cert: FILE, \
                 key: FILE}}`), {or_insecure}"
            ),
        );
    }
    let gateway_runs = p.gateway.enabled && p.validators.count > 0;
    let gw = p.listen.gateway();
    if gateway_runs && !gw.is_loopback() && p.gateway.tls.is_none() {
        let field = if p.listen.gateway.is_some() {
            "listen.gateway"
        } else {
            "listen.rpc"
        };
        c.at(
            field,
            format!(
                "the gateway would serve plain HTTP on {gw}, beyond loopback: set \
                 `gateway.tls: {{cert: FILE, key: FILE}}` (HTTPS and WSS), {or_insecure}"
            ),
        );
    }
    let api = p.listen.api;
    if !api.is_loopback() && p.api.tls.is_none() {
        c.at(
            "listen.api",
            format!(
                "the API would serve plain HTTP on {api}, beyond loopback (its bearer token in \
                 clear): set `api.tls: {{cert: FILE, key: FILE}}`, bind it to 127.0.0.1, \
                 {or_insecure}"
            ),
        );
    }
}

fn monitoring(p: &Profile, c: &mut Checker) {
    let h = &p.health;
    if h.interval.get() < std::time::Duration::from_millis(100) {
        c.at(
            "health.interval",
            "probe at most every 100ms: use `100ms` or more",
        );
    }
    if h.failures == 0 {
        c.at("health.failures", "must be at least 1");
    }
    if h.successes == 0 {
        c.at("health.successes", "must be at least 1");
    }
    for (field, v) in [
        ("health.disk_warn_percent", h.disk_warn_percent),
        ("health.disk_critical_percent", h.disk_critical_percent),
    ] {
        if !(v > 0.0 && v <= 100.0) {
            c.at(field, format!("{v} is not a percentage in (0, 100]"));
        }
    }
    if h.disk_warn_percent > h.disk_critical_percent {
        c.at(
            "health.disk_warn_percent",
            format!(
                "the warning threshold ({}) is above the critical one ({}): swap them",
                h.disk_warn_percent, h.disk_critical_percent
            ),
        );
    }
    let g = &p.gateway;
    if g.max_batch == 0 {
        c.at("gateway.max_batch", "must be at least 1");
    }
    if g.max_body_bytes < 1024 {
        c.at("gateway.max_body_bytes", "must be at least 1024 bytes");
    }
    if g.timeout.get().is_zero() {
        c.at("gateway.timeout", "must be more than 0s");
    }
    for (i, entry) in g.allow.iter().enumerate() {
        if let Some(why) = crate::methods::entry_problem(entry) {
            c.at(&format!("gateway.allow[{i}]"), why);
        }
    }
}

fn chain(p: &Profile, c: &mut Checker) {
    if p.chain.chain_id == 0 {
        c.at(
            "chain.chain_id",
            "must be greater than 0 (EIP-155 reserves 0)",
        );
    }
    let bt = p.chain.block_time.get();
    if bt.as_secs() == 0 || bt.subsec_nanos() != 0 {
        c.at(
            "chain.block_time",
            format!(
                "`{}` is not a whole number of seconds: Engine API timestamps are whole seconds, so use 1s or more",
                p.chain.block_time
            ),
        );
    }
    for (addr, acct) in &p.chain.alloc {
        let field = format!("chain.alloc.{addr}");
        let hex = addr.strip_prefix("0x").unwrap_or("");
        if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            c.at_key(
                &field,
                "not an address: expected 0x followed by 40 hex digits",
            );
        }
        let b = acct.balance.trim();
        let ok = match b.strip_prefix("0x") {
            Some(h) => !h.is_empty() && h.len() <= 64 && h.bytes().all(|x| x.is_ascii_hexdigit()),
            None => b.parse::<u128>().is_ok(),
        };
        if !ok {
            c.at(
                &format!("{field}.balance"),
                format!("`{b}` is not a balance: write wei in decimal or 0x-hex"),
            );
        }
    }
}

/// Sections whose engines are not in this build yet: refuse them clearly rather than
/// pretending to run them.
fn unsupported(p: &Profile, c: &mut Checker) {
    let v = &p.validators;
    if v.count > 0 {
        if let crate::profile::ExecutionSpec::PerValidator(lists) = &v.execution {
            if lists.len() != v.count as usize {
                c.at(
                    "validators.execution",
                    format!(
                        "lists execution clients for {} validators, and validators.count is {}: give one list per validator, or one list for all",
                        lists.len(),
                        v.count
                    ),
                );
            }
        }
        for i in 0..v.count {
            let els = v.execution.of(i);
            if els.is_empty() {
                let field = match &v.execution {
                    crate::profile::ExecutionSpec::Same(_) => "validators.execution".to_string(),
                    crate::profile::ExecutionSpec::PerValidator(_) => {
                        format!("validators.execution[{i}]")
                    }
                };
                c.at(
                    &field,
                    "is empty: each validator needs at least one execution client, e.g. [builtin, builtin]",
                );
                break;
            }
        }
        for kind in v.execution.kinds() {
            let name = crate::clients::kind_name(kind);
            let settings = v.clients.of(kind);
            if let Some(b) = settings.and_then(|s| s.binary.as_deref()) {
                if b.contains('/') && !b.starts_with('/') {
                    c.at(
                        &format!("validators.clients.{name}.binary"),
                        format!("`{b}` is a relative path, and the client runs in its data dir: give an absolute path, or a name on PATH"),
                    );
                }
            }
            if kind != crate::profile::ExecutionKind::Builtin {
                let managed = crate::clients::managed_flags(kind);
                for (j, a) in settings
                    .map(|s| s.args.as_slice())
                    .unwrap_or(&[])
                    .iter()
                    .enumerate()
                {
                    let flag = a.split('=').next().unwrap_or(a);
                    if managed.contains(flag) {
                        c.at(
                            &format!("validators.clients.{name}.args[{j}]"),
                            format!("`{flag}` is set by chainctl for every {name} (ports from its allocation, the pair's JWT, its data dir, node key and peers): remove it from `args`; `chainctl validate --output json` shows the command line chainctl renders"),
                        );
                    }
                }
            }
            if p.runtime.containers() && kind != crate::profile::ExecutionKind::Builtin {
                if crate::clients::needs_init(kind)
                    && p.runtime == crate::profile::RuntimeKind::Swarm
                {
                    c.at(
                        "validators.execution",
                        format!(
                            "`{name}` needs its init step (`{name} init`) before it starts, which the swarm backend does not run: use `runtime: docker` (one host) or `runtime: process`, or reth/builtin under `runtime: swarm`"
                        ),
                    );
                } else if settings.and_then(|s| s.image.as_ref()).is_none() {
                    c.at(
                        "validators.execution",
                        format!(
                            "`{name}` under `runtime: {}` needs its image: set `validators.clients.{name}.image` (chainctl never pulls: load it first)",
                            p.runtime.name()
                        ),
                    );
                }
            }
        }
        if v.count > 100 {
            c.at("validators.count", "at most 100 validators run on one host");
        }
        if let crate::profile::ValidatorKeys::Files(files) = &v.keys {
            if files.len() != v.count as usize {
                c.at(
                    "validators.keys",
                    format!(
                        "lists {} key files for {} validators: give one per validator, or `generate`",
                        files.len(),
                        v.count
                    ),
                );
            }
        }
        if let Some(f) = &v.fee_recipient {
            if f.parse::<alloy_primitives::Address>().is_err() {
                c.at(
                    "validators.fee_recipient",
                    format!("`{f}` is not an address: expected 0x followed by 40 hex digits"),
                );
            }
        }
        for name in p.services.keys() {
            if name == crate::ports::CHAINCTL {
                c.at_key(
                    &format!("services.{name}"),
                    "this name is taken by chainctl's own endpoints (API, gateway); rename it",
                );
            }
            if crate::network::is_generated_name(name, v) {
                c.at_key(
                    &format!("services.{name}"),
                    "this name is taken by a service chainctl generates for the validators (val-I, val-I-el-J); rename it",
                );
            }
        }
    }
    for (name, el) in &p.execution {
        c.at(
            &format!("execution.{name}.kind"),
            format!(
                "named execution clients (`{}`) outside a validator are not in this build: declare the \
                 clients each validator drives with `validators.execution: [reth, builtin]` (builtin, reth, \
                 geth, erigon), or run a client as a service under `services:`",
                serde_json::to_value(el.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
            ),
        );
    }
    match p.runtime {
        crate::profile::RuntimeKind::Process => {}
        crate::profile::RuntimeKind::Docker | crate::profile::RuntimeKind::Swarm => {
            for (name, s) in &p.services {
                if s.image.is_none() {
                    c.at_key(
                        &format!("services.{name}"),
                        format!("has no `image`, and under `runtime: {}` every service runs from one: add e.g. `image: ghcr.io/paradigmxyz/reth:v1.9.3` (chainctl never pulls: load or build it first)", p.runtime.name()),
                    );
                }
            }
        }
        crate::profile::RuntimeKind::Systemd => c.at(
            "runtime",
            "`up` does not run services through systemd: remove `runtime: systemd` and install the rendered units with `chainctl systemd install` (see docs/render.md)",
        ),
    }
    swarm(p, c);
    docker(p, c);
}

/// `docker.subnet`: a subnet whose halves hold the external clients' fixed addresses
/// and every other container (validators and their clients are not expanded yet).
fn docker(p: &Profile, c: &mut Checker) {
    let Some(text) = &p.docker.subnet else {
        return;
    };
    let els: usize = (0..p.validators.count)
        .map(|i| crate::network::els_of(&p.validators, i).len())
        .sum();
    let fixed = crate::clients::p2p::external_els(p).len();
    let others = p.services.len() + p.validators.count as usize + els - fixed;
    match crate::subnet::Subnet::parse(text) {
        Err(e) => c.at("docker.subnet", e),
        Ok(net) if net.capacity() < fixed || net.dynamic_capacity() < others => c.at(
            "docker.subnet",
            format!(
                "`{net}` holds {} external execution clients and {} other containers, and this profile has {fixed} and {others}: give a shorter prefix",
                net.capacity(),
                net.dynamic_capacity(),
            ),
        ),
        Ok(_) => {}
    }
}

/// `swarm.placement`: each key a validator or service of this profile, each value a node
/// name a `chainctl.node` label can hold.
fn swarm(p: &Profile, c: &mut Checker) {
    let s = &p.swarm;
    if p.runtime != crate::profile::RuntimeKind::Swarm {
        if !s.placement.is_empty() {
            c.at_key(
                "swarm",
                format!("only `runtime: swarm` places services on swarm nodes, and this profile has `runtime: {}`: remove `swarm` or set `runtime: swarm`", p.runtime.name()),
            );
        }
        return;
    }
    let validators = (0..p.validators.count).map(crate::network::validator_name);
    let known: Vec<String> = validators.chain(p.services.keys().cloned()).collect();
    for (who, node) in &s.placement {
        let field = format!("swarm.placement.{who}");
        if !known.contains(who) {
            let hint = if crate::network::is_generated_name(who, &p.validators) {
                " (an execution client goes where its validator goes: place the validator)"
            } else {
                ""
            };
            c.at_key(
                &field,
                format!("`{who}` is neither a validator nor a service of this profile{hint}: use one of {}", known.join(", ")),
            );
        }
        if !valid_node_name(node) {
            c.at(
                &field,
                format!("`{node}` cannot name a swarm node: use 1-63 letters, digits, `-`, `_` or `.` (the value of the node's `chainctl.node` label, set with `chainctl swarm label NAME --node NODE`)"),
            );
        }
    }
}

fn ports(p: &Profile, c: &mut Checker) {
    let r = &p.ports;
    for (field, v) in [("ports.start", r.start), ("ports.end", r.end)] {
        if !(MIN_PORT..=MAX_PORT).contains(&v) {
            c.at(field, format!("port {v} is outside {MIN_PORT}-{MAX_PORT}"));
        }
    }
    if r.start > r.end {
        c.at(
            "ports.end",
            format!(
                "the range ends ({}) before it starts ({}): swap them",
                r.end, r.start
            ),
        );
    }
    for (i, v) in r.reserved.iter().enumerate() {
        if !(MIN_PORT..=MAX_PORT).contains(v) {
            c.at(
                &format!("ports.reserved[{i}]"),
                format!("port {v} is outside {MIN_PORT}-{MAX_PORT}"),
            );
        }
    }
    let reserved: BTreeSet<u64> = r.reserved.iter().copied().collect();
    let mut pinned: BTreeMap<u64, Vec<(String, Protocol)>> = BTreeMap::new();
    let mut pins = |c: &mut Checker,
                    prefix: String,
                    ports: &BTreeMap<String, crate::profile::PortSpec>| {
        for (pname, spec) in ports {
            // chainctl's own ports are one field each (`api.port`, `gateway.port`).
            let field = if prefix.is_empty() {
                pname.clone()
            } else {
                format!("{prefix}.ports.{pname}")
            };
            if !prefix.is_empty() && !valid_name(pname) {
                c.at_key(&field, "port names use lowercase letters, digits and `-`");
            }
            let Some(n) = spec.port else { continue };
            if !(MIN_PORT..=MAX_PORT).contains(&n) {
                c.at(&field, format!("port {n} is outside {MIN_PORT}-{MAX_PORT}: pick one in that range or `auto`"));
                continue;
            }
            if reserved.contains(&n) {
                c.at(
                    &field,
                    format!("port {n} is listed in ports.reserved: pick another or use `auto`"),
                );
            }
            let entry = pinned.entry(n).or_default();
            if let Some((other, _)) = entry
                .iter()
                .find(|(_, proto)| proto.overlaps(spec.protocol))
            {
                c.at(
                    &field,
                    format!(
                        "port {n} is already pinned by {other}: each port belongs to one service"
                    ),
                );
            }
            entry.push((field, spec.protocol));
        }
    };
    let own: BTreeMap<String, crate::profile::PortSpec> = crate::ports::chainctl_ports(p)
        .into_iter()
        .map(|(name, spec)| (format!("{name}.port"), spec))
        .collect();
    pins(c, String::new(), &own);
    for (name, s) in &p.services {
        pins(c, format!("services.{name}"), &s.ports);
    }
    for (name, e) in &p.execution {
        pins(c, format!("execution.{name}"), &e.ports);
    }
}

fn services(p: &Profile, c: &mut Checker) {
    if p.services.is_empty() && p.execution.is_empty() && p.validators.count == 0 {
        c.at(
            "services",
            "the profile declares no service: add one under `services:`",
        );
    }
    for name in p.execution.keys() {
        if p.services.contains_key(name) {
            c.at_key(
                &format!("execution.{name}"),
                "this name is also used under `services:`; names must be unique",
            );
        }
    }
    // Who drives whom, for JWT pairs.
    let mut driven_by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, s) in &p.services {
        for el in &s.drives {
            driven_by
                .entry(el.as_str())
                .or_default()
                .push(name.as_str());
        }
    }
    for (name, s) in &p.services {
        let base = format!("services.{name}");
        if !valid_name(name) {
            c.at_key(&base, format!("`{name}` is not a valid service name: use 1-40 lowercase letters, digits and `-`"));
        }
        if s.command.is_empty() || s.command[0].trim().is_empty() {
            c.at(
                &format!("{base}.command"),
                "is empty: give the program and its arguments, e.g. [\"/usr/bin/reth\", \"node\"]",
            );
        }
        for (i, d) in s.depends_on.iter().enumerate() {
            if d == name {
                c.at(
                    &format!("{base}.depends_on[{i}]"),
                    "a service cannot depend on itself",
                );
            } else if !p.services.contains_key(d) {
                c.at(
                    &format!("{base}.depends_on[{i}]"),
                    format!("no service named `{d}`; known: {}", known(p)),
                );
            }
        }
        for (i, d) in s.drives.iter().enumerate() {
            let f = format!("{base}.drives[{i}]");
            if d == name {
                c.at(&f, "a service cannot drive itself");
            } else if !p.services.contains_key(d) {
                c.at(&f, format!("no service named `{d}`; known: {}", known(p)));
            } else if driven_by
                .get(d.as_str())
                .is_some_and(|v| v.len() > 1 && v[0] != name)
            {
                c.at(
                    &f,
                    format!("`{d}` is already driven by `{}`: an execution client follows exactly one consensus client", driven_by[d.as_str()][0]),
                );
            }
        }
        if let Some(ready) = &s.ready_ports {
            for (i, r) in ready.iter().enumerate() {
                match s.ports.get(r) {
                    None => c.at(
                        &format!("{base}.ready_ports[{i}]"),
                        format!("no port named `{r}` in {base}.ports"),
                    ),
                    Some(spec) if !spec.protocol.tcp() => c.at(
                        &format!("{base}.ready_ports[{i}]"),
                        format!("port `{r}` is UDP only: readiness is a TCP connect"),
                    ),
                    _ => {}
                }
            }
        }
        for (field, codes) in [
            ("success_exit_codes", &s.restart.success_exit_codes),
            ("prevent_exit_codes", &s.restart.prevent_exit_codes),
        ] {
            for (i, code) in codes.iter().enumerate() {
                if !(0..=255).contains(code) {
                    c.at(
                        &format!("{base}.restart.{field}[{i}]"),
                        format!("exit code {code} is outside 0-255"),
                    );
                }
            }
        }
        // Placeholders in argv and env.
        let pairs: Vec<&str> = s
            .drives
            .iter()
            .map(String::as_str)
            .chain(driven_by.get(name.as_str()).into_iter().flatten().copied())
            .collect();
        let templates = s
            .command
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{base}.command[{i}]"), t))
            .chain(s.env.iter().map(|(k, v)| (format!("{base}.env.{k}"), v)));
        for (field, t) in templates {
            match placeholders::parse(t) {
                Err(e) => c.at(&field, e),
                Ok(segs) => {
                    for seg in segs {
                        if let Segment::Var(v) = seg {
                            if let Some(why) = check_var(p, name, &pairs, &v) {
                                c.at(&field, why);
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(p) {
        let first = cycle[0].clone();
        c.at(
            &format!("services.{first}.depends_on"),
            format!("dependency cycle: {}; remove one edge", cycle.join(" → ")),
        );
    }
}

fn check_var(p: &Profile, me: &str, pairs: &[&str], v: &Var) -> Option<String> {
    let svc = &p.services[me];
    match v {
        Var::Port(port) if !svc.ports.contains_key(port) => {
            Some(format!("{v} refers to no port of this service: declare `{port}` under services.{me}.ports"))
        }
        Var::OtherPort(other, port) => match p.services.get(other) {
            None => Some(format!("{v}: no service named `{other}`")),
            Some(o) if !o.ports.contains_key(port) => Some(format!("{v}: service `{other}` has no port `{port}`")),
            _ => None,
        },
        Var::Host(other) if !p.services.contains_key(other) => Some(format!("{v}: no service named `{other}`")),
        Var::JwtPath if pairs.len() != 1 => Some(format!(
            "{v} needs exactly one Engine API pair, but `{me}` is in {} pair(s): use {{{{jwt_path.SERVICE}}}} or `drives:`",
            pairs.len()
        )),
        Var::JwtPathWith(other) if !pairs.contains(&other.as_str()) => Some(format!(
            "{v}: `{me}` and `{other}` are not an Engine API pair; add `{other}` to services.{me}.drives (or the reverse)"
        )),
        _ => None,
    }
}

fn known(p: &Profile) -> String {
    let names: Vec<&str> = p.services.keys().map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A dependency cycle (`depends_on` and `drives` edges), as the list of names around it.
fn find_cycle(p: &Profile) -> Option<Vec<String>> {
    fn edges<'a>(p: &'a Profile, n: &str) -> impl Iterator<Item = &'a String> {
        p.services
            .get(n)
            .into_iter()
            .flat_map(|s| s.depends_on.iter().chain(s.drives.iter()))
    }
    fn visit(
        p: &Profile,
        n: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) || !p.services.contains_key(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in edges(p, n) {
            if let Some(c) = visit(p, next, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in p.services.keys() {
        if let Some(c) = visit(p, n, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn supervisor(p: &Profile, c: &mut Checker) {
    let s = &p.supervisor;
    let b = &s.backoff;
    if b.initial.get().is_zero() {
        c.at(
            "supervisor.backoff.initial",
            "must be more than 0s, or a crashing service spins the CPU",
        );
    }
    if b.max < b.initial {
        c.at(
            "supervisor.backoff.max",
            format!("{} is less than backoff.initial ({})", b.max, b.initial),
        );
    }
    if !(b.factor >= 1.0 && b.factor <= 100.0) {
        c.at(
            "supervisor.backoff.factor",
            format!("{} is outside 1.0-100.0", b.factor),
        );
    }
    if !(0.0..1.0).contains(&b.jitter) {
        c.at(
            "supervisor.backoff.jitter",
            format!("{} is outside 0.0-0.99 (a fraction of the delay)", b.jitter),
        );
    }
    // 0 would mean "no limit" to systemd (TimeoutStopSec=0, StartLimitIntervalSec=0).
    let positive = [
        ("supervisor.give_up.window", s.give_up.window),
        ("supervisor.stop_grace.command", s.stop_grace.command),
        ("supervisor.stop_grace.execution", s.stop_grace.execution),
        ("supervisor.stop_grace.consensus", s.stop_grace.consensus),
        ("supervisor.startup_grace", s.startup_grace),
    ];
    let per_service = p.services.iter().flat_map(|(n, svc)| {
        [
            (
                format!("services.{n}.stop.grace"),
                svc.stop.as_ref().and_then(|st| st.grace),
            ),
            (format!("services.{n}.startup_grace"), svc.startup_grace),
        ]
    });
    for (field, d) in positive
        .iter()
        .map(|(f, d)| (f.to_string(), Some(*d)))
        .chain(per_service)
    {
        if d.is_some_and(|d| d.get().is_zero()) {
            c.at(&field, "must be more than 0s");
        }
    }
    if s.give_up.failures == 0 {
        c.at("supervisor.give_up.failures", "must be at least 1");
    }
    if s.logs.max_bytes < 4096 {
        c.at(
            "supervisor.logs.max_bytes",
            format!(
                "{} bytes is too small to hold a log line; use 4096 or more",
                s.logs.max_bytes
            ),
        );
    }
    if s.logs.keep == 0 {
        c.at(
            "supervisor.logs.keep",
            "must be at least 1, or rotation would delete the log",
        );
    }
    if p.health.failures == 0 || p.health.successes == 0 {
        c.at("health", "failures and successes must both be at least 1");
    }
    if p.health.interval.get().is_zero() {
        c.at("health.interval", "must be more than 0s");
    }
}
