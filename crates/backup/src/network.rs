//! The network a backup is taken of or restored into, as its state dir describes it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy_primitives::B256;
use chainctl_common::validator::Genesis;
use chainctl_core::control::{self, Request, Response};
use chainctl_core::layout::Layout;
use chainctl_core::network as net;
use chainctl_core::profile::{ExecutionKind, Loaded};
use chainctl_core::state::{self, StateFile};
use sha2::{Digest, Sha256};

/// What a service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Validator,
    Execution {
        kind: ExecutionKind,
        /// The validator it serves.
        validator: String,
    },
}

impl Role {
    /// As the manifest names it.
    pub fn label(&self) -> String {
        match self {
            Role::Validator => "validator".into(),
            Role::Execution { kind, .. } => chainctl_core::clients::kind_name(*kind).into(),
        }
    }
}

/// One service whose data a backup holds.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub role: Role,
    /// Its data dir on this host (a container's volume is backed by it).
    pub data_dir: PathBuf,
    /// Where this host reaches its Engine API (execution clients), from the state file.
    pub engine: Option<SocketAddr>,
    /// Its status endpoint (validators), from the state file.
    pub status: Option<SocketAddr>,
    /// The secret files it reads.
    pub secrets: Vec<PathBuf>,
}

/// A profile's network on this host.
pub struct Network {
    pub layout: Layout,
    pub profile: String,
    pub profile_digest: String,
    /// The consensus genesis, when the state dir has one (a new host has none until a
    /// restore writes the backup's).
    pub genesis: Option<Genesis>,
    pub services: Vec<Service>,
    /// Every secret file of the network, with its name in a backup: the secrets dir's
    /// (by their path in the state dir) and those the profile names elsewhere
    /// (validator keys given as files: `external/val-N.key`). A restore writes only
    /// names of this list, to this network's paths.
    pub secret_files: Vec<(PathBuf, String)>,
}

impl Network {
    /// The network of `loaded` in the state dir `layout`.
    pub fn open(loaded: &Loaded, layout: Layout) -> Result<Network, String> {
        let p = &loaded.profile;
        let st = state::read_json::<StateFile>(&layout.state_file()).map_err(|e| e.to_string())?;
        let ports = state::read_json::<chainctl_core::state::PortsFile>(&layout.ports_file())
            .map_err(|e| e.to_string())?;
        let plan = |name: &str| {
            st.as_ref()
                .and_then(|s| s.services.get(name))
                .map(|r| &r.plan)
        };
        let loopback = |ip: IpAddr| {
            if ip.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                ip
            }
        };
        // Where the supervisor started it (its state file), else where the allocation
        // and `listen.rpc` put it (units systemd runs, with no supervisor's state file).
        let reach = |name: &str, port: &str| -> Option<SocketAddr> {
            if let Some(pl) = plan(name) {
                let a = pl.ports.get(port)?;
                return Some(SocketAddr::new(loopback(pl.ready_host), a.port));
            }
            let a = ports.as_ref()?.services.get(name)?.get(port)?;
            Some(SocketAddr::new(loopback(p.listen.rpc), a.port))
        };
        let mut services = Vec::new();
        let mut secret_files: Vec<(PathBuf, String)> = Vec::new();
        for i in 0..p.validators.count {
            let v = net::validator_name(i);
            let els = net::els_of(&p.validators, i);
            let mut secrets = net::validator_secrets(p, &layout, i);
            for (el, _) in &els {
                secrets.push(layout.jwt_file(&v, el));
            }
            for f in &secrets {
                let name = match f.strip_prefix(&layout.root) {
                    Ok(rel) => rel.to_string_lossy().into_owned(),
                    Err(_) => format!("external/{v}.key"),
                };
                secret_files.push((f.clone(), name));
            }
            services.push(Service {
                data_dir: layout.data_dir(&v),
                status: reach(&v, "status"),
                engine: None,
                role: Role::Validator,
                secrets,
                name: v.clone(),
            });
            for (el, kind) in els {
                let engine = reach(&el, chainctl_core::clients::endpoints(kind).engine);
                services.push(Service {
                    data_dir: layout.data_dir(&el),
                    engine,
                    status: None,
                    role: Role::Execution {
                        kind,
                        validator: v.clone(),
                    },
                    secrets: vec![layout.jwt_file(&v, &el)],
                    name: el,
                });
            }
        }
        // Everything else in the secrets dir (API token, TLS keys, node keys, …).
        let mut stack = vec![layout.secrets_dir()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let path = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(path),
                    Ok(t) if t.is_file() => {
                        let name = relative(&layout, &path);
                        secret_files.push((path, name));
                    }
                    _ => {}
                }
            }
        }
        secret_files.sort();
        secret_files.dedup();
        let genesis_path = net::consensus_genesis_path(&layout);
        let genesis = match std::fs::read_to_string(&genesis_path) {
            Ok(t) => Some(
                serde_json::from_str::<Genesis>(&t)
                    .map_err(|e| format!("{}: {e}", genesis_path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", genesis_path.display())),
        };
        Ok(Network {
            profile: p.name.clone(),
            profile_digest: hex::encode(Sha256::digest(loaded.source.text.as_bytes())),
            genesis,
            services,
            secret_files,
            layout,
        })
    }

    /// The genesis, or the error saying the network was never started here.
    pub fn genesis(&self) -> Result<&Genesis, String> {
        self.genesis.as_ref().ok_or_else(|| {
            format!(
                "{} does not exist: the network of profile `{}` was never started in {} (run `chainctl up` first, or restore a backup into it)",
                net::consensus_genesis_path(&self.layout).display(),
                self.profile,
                self.layout.root.display()
            )
        })
    }

    /// The execution genesis hash and the consensus genesis hash.
    pub fn chain(&self) -> Result<(u64, B256, B256), String> {
        let g = self.genesis()?;
        Ok((g.chain_id, g.execution_genesis_hash, g.hash()))
    }

    /// The name a secret file has in a backup.
    pub fn secret_name(&self, path: &Path) -> Option<&str> {
        self.secret_files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, n)| n.as_str())
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The services named (a validator stands for itself and its execution clients),
    /// all when none is named; an unknown name is an error listing the known ones.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Service>, String> {
        if names.is_empty() {
            return Ok(self.services.iter().collect());
        }
        let mut out: Vec<&Service> = Vec::new();
        for n in names {
            let Some(s) = self.service(n) else {
                let known: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                return Err(format!(
                    "no service named `{n}` in profile `{}`; known: {}",
                    self.profile,
                    known.join(", ")
                ));
            };
            let with: Vec<&Service> = match s.role {
                Role::Validator => self
                    .services
                    .iter()
                    .filter(|o| {
                        o.name == s.name
                            || matches!(&o.role, Role::Execution { validator, .. } if *validator == s.name)
                    })
                    .collect(),
                Role::Execution { .. } => vec![s],
            };
            for w in with {
                if !out.iter().any(|o| o.name == w.name) {
                    out.push(w);
                }
            }
        }
        Ok(out)
    }

    /// Whether a supervisor runs this state dir.
    pub fn supervised(&self) -> bool {
        state::holder(&self.layout.lock_file()).is_some()
    }

    /// Ask the running supervisor.
    pub fn ask(&self, req: Request) -> Result<Response, String> {
        control::call(&self.layout.control_socket(), &req, Duration::from_secs(10)).map_err(|e| {
            format!(
                "the supervisor of {} does not answer on {}: {e}",
                self.layout.root.display(),
                self.layout.control_socket().display()
            )
        })
    }

    /// Each service's state as the supervisor shows it (`ready`, `stopped`, …), or, with
    /// no supervisor, `running` for a process the state file records as alive.
    pub fn states(&self) -> Result<Vec<(String, String)>, String> {
        if self.supervised() {
            let r = self.ask(Request::Status)?;
            let st = r
                .status
                .ok_or_else(|| r.error.unwrap_or_else(|| "no status".into()))?;
            return Ok(st.services.into_iter().map(|s| (s.name, s.state)).collect());
        }
        let st = state::read_json::<StateFile>(&self.layout.state_file())
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        // No supervisor (units systemd runs, a supervisor killed): a process the state
        // file records as alive, or anything answering on the service's own endpoint.
        Ok(self
            .services
            .iter()
            .map(|s| {
                let alive = st
                    .services
                    .get(&s.name)
                    .and_then(|r| r.handle)
                    .is_some_and(|h| chainctl_core::procinfo::same_process(h.pid, h.start_ticks));
                let answering = s.status.or(s.engine).filter(|a| {
                    std::net::TcpStream::connect_timeout(a, Duration::from_millis(300)).is_ok()
                });
                let state = match (alive, answering) {
                    (true, _) => "running".to_string(),
                    (false, Some(a)) => format!("running (it answers on {a})"),
                    (false, None) => "stopped".to_string(),
                };
                (s.name.clone(), state)
            })
            .collect())
    }

    /// The height each other validator is working on, from its status endpoint (those
    /// that answer).
    pub fn peer_heights(&self, except: &str) -> Vec<(String, u64)> {
        self.services
            .iter()
            .filter(|s| s.role == Role::Validator && s.name != except)
            .filter_map(|s| {
                let v = chainctl_common::http::get_json(s.status?, "/status").ok()?;
                Some((s.name.clone(), v["height"].as_u64()?))
            })
            .collect()
    }
}

/// Files of the network every service reads (genesis files, the port allocation): kept
/// in each backup so a new host can be given the same network.
pub fn network_files(layout: &Layout) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(net::network_dir(layout)) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                out.push(e.path());
            }
        }
    }
    out.push(layout.ports_file());
    out.retain(|p| p.exists());
    out.sort();
    out
}

/// `path` relative to the state dir when inside it (as stored in a backup).
pub fn relative(layout: &Layout, path: &Path) -> String {
    path.strip_prefix(&layout.root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}
