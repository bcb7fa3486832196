//! Malformed profiles: each must be refused with the file, line and column of the fault,
//! the field, and what is expected — never a panic, never silently accepted.

use crate::util::{text, Env};

/// (name, profile text, expected "line:col: message fragment").
const CASES: &[(&str, &str, &str)] = &[
    ("unknown key", "name: x\nservices:\n  a:\n    comand: [sleep, '1']\n", "4:5: services.a: unknown field `comand`, expected one of `command`"),
    ("wrong type", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    depends_on: yes\n", "5:17: services.a.depends_on: invalid type: string \"yes\", expected a sequence"),
    ("duplicate service name", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n  a:\n    command: [sleep, '2']\n", "5:3: services.a: duplicate key (first defined at line 3)"),
    ("bad duration", "name: x\nchain:\n  block_time: 5 parsecs\nservices:\n  a:\n    command: [sleep, '1']\n", "3:15: chain.block_time: invalid duration `5 parsecs`: expected a number and a unit"),
    ("duration without unit", "name: x\nsupervisor:\n  startup_grace: 30\nservices:\n  a:\n    command: [sleep, '1']\n", "3:18: supervisor.startup_grace: invalid duration `30`: a bare number is ambiguous, add a unit such as 30s"),
    ("port below 1024", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    ports:\n      http: 80\n", "6:13: services.a.ports.http: port 80 is outside 1024-65535"),
    ("port above 65535", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    ports:\n      http: 70000\n", "6:13: services.a.ports.http: port 70000 is outside 1024-65535"),
    ("reserved port pinned", "name: x\nports:\n  reserved: [25000]\nservices:\n  a:\n    command: [sleep, '1']\n    ports:\n      http: 25000\n", "8:13: services.a.ports.http: port 25000 is listed in ports.reserved"),
    ("reserved port out of range", "name: x\nports:\n  reserved: [22, 25000]\nservices:\n  a:\n    command: [sleep, '1']\n", "3:14: ports.reserved[0]: port 22 is outside 1024-65535"),
    ("binary not found", "name: x\nservices:\n  a:\n    command: [no-such-binary-xyz, '1']\n", "4:15: services.a.command[0]: program `no-such-binary-xyz` not found on PATH"),
    ("relative binary not found", "name: x\nservices:\n  a:\n    command: [./bin/missing]\n", "4:15: services.a.command[0]: program `"),
    ("missing name", "services:\n  a:\n    command: [sleep, '1']\n", "1:1: missing field `name`"),
    ("unknown placeholder", "name: x\nservices:\n  a:\n    command: [sleep, '{{prot.http}}']\n", "4:22: services.a.command[1]: unknown placeholder `{{prot.http}}`"),
    ("placeholder for an undeclared port", "name: x\nservices:\n  a:\n    command: [sleep, '{{port.htp}}']\n    ports: {http: auto}\n", "4:22: services.a.command[1]: {{port.htp}} refers to no port of this service"),
    ("dependency cycle", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    depends_on: [b]\n  b:\n    command: [sleep, '1']\n    depends_on: [a]\n", "5:17: services.a.depends_on: dependency cycle: a → b → a"),
    ("unknown dependency", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    depends_on: [zz]\n", "5:18: services.a.depends_on[0]: no service named `zz`; known: a"),
    ("unknown enum value", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    restart:\n      policy: sometimes\n", "6:15: services.a.restart.policy: unknown variant `sometimes`, expected one of `always`, `on-failure`, `never`"),
    ("bad IP address", "name: x\nlisten:\n  rpc: 127.0.0.300\nservices:\n  a:\n    command: [sleep, '1']\n", "3:8: listen.rpc: invalid IP address syntax"),
    ("YAML syntax error", "name: x\nservices:\n  a:\n    command: [sleep, '1'\n", "5:1: did not find expected ',' or ']'"),
    ("range reversed", "name: x\nports:\n  start: 30000\n  end: 20000\nservices:\n  a:\n    command: [sleep, '1']\n", "4:8: ports.end: the range ends (20000) before it starts (30000): swap them"),
    ("same port pinned twice", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    ports: {http: 25001}\n  b:\n    command: [sleep, '1']\n    ports: {rpc: 25001}\n", "8:18: services.b.ports.rpc: port 25001 is already pinned by services.a.ports.http"),
    ("port word", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    ports: {http: automatic}\n", "5:19: services.a.ports.http: invalid port `automatic`: expected `auto`"),
    ("sub-second block time", "name: x\nchain:\n  block_time: 500ms\nservices:\n  a:\n    command: [sleep, '1']\n", "3:15: chain.block_time: `500ms` is not a whole number of seconds"),
    ("bad service name", "name: x\nservices:\n  Web:\n    command: [sleep, '1']\n", "3:3: services.Web: `Web` is not a valid service name"),
    ("jwt_path without a pair", "name: x\nservices:\n  a:\n    command: [sleep, '{{jwt_path}}']\n", "4:22: services.a.command[1]: {{jwt_path}} needs exactly one Engine API pair"),
    ("exit code out of range", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    restart: {prevent_exit_codes: [300]}\n", "5:36: services.a.restart.prevent_exit_codes[0]: exit code 300 is outside 0-255"),
    ("drives unknown service", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    drives: [el]\n", "5:14: services.a.drives[0]: no service named `el`"),
    ("negative port", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    ports: {http: -5}\n", "5:19: services.a.ports.http: port -5 is negative"),
    ("bad alloc address", "name: x\nchain:\n  alloc:\n    '0x1234': {balance: '1'}\nservices:\n  a:\n    command: [sleep, '1']\n", "4:5: chain.alloc.0x1234: not an address"),
    ("absurd duration", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    stop: {grace: 300000000000y}\n", "5:19: services.a.stop.grace: duration `300000000000y` is longer than 365 days"),
    ("missing workdir", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    workdir: /nonexistent/dir\n", "5:14: services.a.workdir: `/nonexistent/dir` is not a directory"),
    ("zero stop grace", "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    stop: {grace: 0s}\n", "5:19: services.a.stop.grace: must be more than 0s"),
    ("empty command", "name: x\nservices:\n  a:\n    command: []\n", "4:14: services.a.command: is empty"),
    ("the Engine API in the gateway's allow-list", "name: x\ngateway:\n  allow: ['eth_*', 'engine_*']\nservices:\n  a:\n    command: [sleep, '1']\n", "3:20: gateway.allow[1]: `engine_*`: the Engine API is never forwarded by the gateway"),
    ("canary key missing", "name: x\nreport:\n  canary_key: /nonexistent/key.hex\nservices:\n  a:\n    command: [sleep, '1']\n", "3:15: report.canary_key: /nonexistent/key.hex: No such file or directory"),
    ("docker service without an image", "name: x\nruntime: docker\nservices:\n  a:\n    command: [sleep, '1']\n", "4:3: services.a: has no `image`, and under `runtime: docker` every service runs from one"),
    ("client flag chainctl sets", "name: x\nvalidators:\n  count: 1\n  execution: [reth]\n  clients:\n    reth: {args: [-vvv, '--http.port=9999']}\n", "6:25: validators.clients.reth.args[1]: `--http.port` is set by chainctl for every reth"),
    ("geth config in args", "name: x\nvalidators:\n  count: 1\n  execution: [geth]\n  clients:\n    geth:\n      args: [--config, /etc/geth.toml]\n", "7:14: validators.clients.geth.args[0]: `--config` is set by chainctl for every geth (ports from its allocation, the pair's JWT, its data dir, node key and peers): remove it from `args`"),
    ("swarm placement of an unknown validator", "name: x\nruntime: swarm\nswarm:\n  placement: {val-7: a}\nvalidators:\n  count: 2\n", "4:15: swarm.placement.val-7: `val-7` is neither a validator nor a service of this profile: use one of val-0, val-1"),
    ("swarm placement of an execution client", "name: x\nruntime: swarm\nswarm:\n  placement: {val-0-el-0: a}\nvalidators:\n  count: 1\n", "4:15: swarm.placement.val-0-el-0: `val-0-el-0` is neither a validator nor a service of this profile (an execution client goes where its validator goes: place the validator)"),
    ("swarm node name", "name: x\nruntime: swarm\nswarm:\n  placement: {val-0: 'node a'}\nvalidators:\n  count: 1\n", "4:22: swarm.placement.val-0: `node a` cannot name a swarm node"),
    ("docker subnet too wide", "name: x\ndocker:\n  subnet: 10.0.0.0/8\nservices:\n  a:\n    command: [sleep, '1']\n", "3:11: docker.subnet: `/8` in `10.0.0.0/8`: the prefix length must be 16 to 28"),
    ("docker subnet with host bits", "name: x\ndocker:\n  subnet: 10.1.2.3/24\nservices:\n  a:\n    command: [sleep, '1']\n", "3:11: docker.subnet: `10.1.2.3/24` has host bits set: its network is `10.1.2.0/24`"),
    ("docker subnet too small", "name: x\ndocker:\n  subnet: 10.1.2.0/28\nvalidators:\n  count: 7\n", "3:11: docker.subnet: `10.1.2.0/28` holds 6 external execution clients and 7 other containers, and this profile has 0 and 14: give a shorter prefix"),
    ("geth under swarm", "name: x\nruntime: swarm\nvalidators:\n  count: 1\n  execution: [geth]\n  clients:\n    geth: {image: 'g:1'}\n", "5:14: validators.execution: `geth` needs its init step (`geth init`) before it starts, which the swarm backend does not run"),
    ("swarm settings without runtime swarm", "name: x\nswarm:\n  placement: {val-0: a}\nvalidators:\n  count: 1\n", "2:1: swarm: only `runtime: swarm` places services on swarm nodes, and this profile has `runtime: process`"),
    ("swarm service without an image", "name: x\nruntime: swarm\nservices:\n  a:\n    command: [sleep, '1']\n", "4:3: services.a: has no `image`, and under `runtime: swarm` every service runs from one"),
    ("services beyond loopback in plain HTTP", "name: x\nlisten:\n  rpc: 0.0.0.0\nvalidators:\n  count: 1\n", "3:8: listen.rpc: 0.0.0.0 is not loopback, and the services' endpoints there (JSON-RPC, Engine API, metrics) speak plain HTTP: keep `listen.rpc: 127.0.0.1` and open only the gateway"),
    ("the gateway beyond loopback without TLS", "name: x\nlisten:\n  gateway: 0.0.0.0\nvalidators:\n  count: 1\n", "3:12: listen.gateway: the gateway would serve plain HTTP on 0.0.0.0, beyond loopback: set `gateway.tls: {cert: FILE, key: FILE}` (HTTPS and WSS), or set `listen.insecure: true`"),
    ("the API beyond loopback without TLS", "name: x\nlisten:\n  api: 10.0.0.1\nservices:\n  a:\n    command: [sleep, '1']\n", "3:8: listen.api: the API would serve plain HTTP on 10.0.0.1, beyond loopback (its bearer token in clear): set `api.tls"),
    ("systemd as a runtime", "name: x\nruntime: systemd\nservices:\n  a:\n    command: [sleep, '1']\n", "2:10: runtime: `up` does not run services through systemd: remove `runtime: systemd` and install the rendered units with `chainctl systemd install`"),
];

#[test]
fn every_malformed_profile_is_refused_with_file_line_column_and_fix() {
    assert!(CASES.len() >= 15);
    let env = Env::new();
    let mut failures = Vec::new();
    for (name, yaml, expected) in CASES {
        env.write_profile(yaml);
        let out = env.run(&["validate"]);
        let stderr = text(&out.stderr);
        let want = format!("{}:{expected}", env.profile().display());
        if out.status.success() || !stderr.contains(&want) || stderr.contains("panicked") {
            failures.push(format!(
                "case `{name}`:\n  expected: {want}\n  got ({}): {stderr}",
                out.status
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn empty_and_missing_profiles_are_named() {
    let env = Env::new();
    env.write_profile("");
    let err = text(&env.run(&["validate"]).stderr);
    assert!(err.contains("profile.yaml: the profile is empty"), "{err}");
    let out = env.run(&["validate", "/nonexistent/p.yaml"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/nonexistent/p.yaml: cannot read the profile"),
        "{err}"
    );
}

#[test]
fn shipped_profiles_are_valid_and_schema_is_json() {
    let env = Env::new();
    let root = env!("CARGO_MANIFEST_DIR");
    for p in [
        "profiles/devnet.yaml",
        "profiles/standins.yaml",
        "profiles/example-full.yaml",
        "profiles/swarm.yaml",
    ] {
        let out = env.run(&["validate", &format!("{root}/{p}")]);
        assert!(out.status.success(), "{p}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(": valid"));
    }
    let schema_text = env.ok(&["schema"]);
    let schema: serde_json::Value = serde_json::from_str(&schema_text).unwrap();
    assert_eq!(schema["title"], "Profile");
    // Descriptions are for users: what a field does, not the project's history.
    for word in ["issue #", "issues #", "arrives with"] {
        assert!(!schema_text.contains(word), "the schema mentions `{word}`");
    }
    assert!(schema["properties"]["services"].is_object());
    assert!(schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "name"));
}
