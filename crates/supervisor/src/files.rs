//! The files of a network, written from the plan before its services start: the
//! execution genesis (kept: it is the chain's identity) and each client's form of it,
//! validator keys, the consensus genesis (which names the execution genesis hash, computed
//! by the built-in engine exactly as Reth computes it), node keys and static peers of the
//! external clients, and each validator's `config.json`.

use std::collections::BTreeMap;

use alloy_primitives::Address;
use anyhow::{bail, Context as _, Result};
use serde_json::Value as Json;

use chainctl_common::validator::{
    self as vfile, ElConfig, Genesis, GenesisValidator, NodeFile, Timeouts,
};
use chainctl_core::layout::Layout;
use chainctl_core::network::{
    consensus_genesis_path, control_token_path, el_genesis_path, els_of, key_path, network_dir,
    render_el_genesis, validator_name,
};
use chainctl_core::plan::{Plan, Target};
use chainctl_core::profile::{ExecutionKind, Profile, ValidatorKeys};

/// Write every file the validators and their ELs read. Keys and the execution genesis are
/// made once and kept (the chain's identity); configs follow the current plan and where
/// it runs (`target`: addresses on this host, or service names between containers).
/// Returns, per service, the content of the files it reads only at start beyond its
/// config (the external clients' node ids and peers), for its spec hash.
pub fn write_files(
    p: &Profile,
    layout: &Layout,
    plan: &Plan,
    target: Target,
) -> Result<BTreeMap<String, String>> {
    let v = &p.validators;
    if v.count == 0 {
        return Ok(BTreeMap::new());
    }
    let net = network_dir(layout);
    chainctl_common::fs::private_dir(&net)
        .with_context(|| format!("cannot create {}", net.display()))?;
    let keys_dir = layout.secrets_dir().join("validators");
    chainctl_common::fs::private_dir(&keys_dir)
        .with_context(|| format!("cannot create {}", keys_dir.display()))?;

    // Execution genesis: written once, then checked against the profile.
    let gpath = el_genesis_path(layout);
    if !gpath.exists() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let g = render_el_genesis(p, now)?;
        chainctl_common::fs::write_atomic(&gpath, serde_json::to_string_pretty(&g)?.as_bytes())
            .with_context(|| format!("cannot write {}", gpath.display()))?;
        tracing::info!(path = %gpath.display(), "wrote the execution genesis");
    } else {
        let g: Json = serde_json::from_str(&std::fs::read_to_string(&gpath)?)
            .with_context(|| format!("{}", gpath.display()))?;
        let id = g["config"]["chainId"].as_u64();
        if id != Some(p.chain.chain_id) {
            bail!(
                "{}: this state dir's chain has chain id {:?}, the profile says {}; the chain \
                 cannot change under a running network: use another --state-dir, or delete {} to start a new chain",
                gpath.display(),
                id,
                p.chain.chain_id,
                layout.root.display()
            );
        }
    }
    let (el_hash, genesis_time) = chainctl_evm::genesis_hash(&gpath)?;
    // Each other client reads the same chain in the form it requires.
    let network_genesis: Json = serde_json::from_str(&std::fs::read_to_string(&gpath)?)
        .with_context(|| format!("{}", gpath.display()))?;
    for kind in v.execution.kinds() {
        if kind != ExecutionKind::Builtin {
            let path = net.join(chainctl_core::clients::genesis_file(kind));
            let g = chainctl_core::clients::genesis_for(kind, &network_genesis);
            chainctl_common::fs::write_atomic(&path, serde_json::to_string_pretty(&g)?.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }

    // On this host every service binds and is reached at one address (listen.rpc); in
    // containers each binds all addresses of its own and is reached by its service name.
    let ip = plan
        .services
        .first()
        .map(|s| s.ready_host)
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let port_of = |svc: &str, name: &str| -> Result<u16> {
        plan.service(svc)
            .and_then(|s| s.ports.get(name))
            .map(|a| a.port)
            .ok_or_else(|| anyhow::anyhow!("the plan has no port `{name}` for `{svc}`"))
    };
    // Node keys and static peers of the external execution clients: at the listen
    // address on this host, at their fixed addresses in containers of this host, none on
    // a cluster (keys only).
    let read_at_start = chainctl_core::clients::p2p::write_files(
        p,
        layout,
        |svc| match target {
            Target::Host => Some(ip),
            Target::Container => plan.service(svc).and_then(|s| s.address),
            Target::Cluster => None,
        },
        |svc| port_of(svc, "p2p"),
    )?;

    // Keys.
    let mut keys = Vec::new();
    for i in 0..v.count {
        let path = match &v.keys {
            ValidatorKeys::Files(files) => files[i as usize].clone(),
            ValidatorKeys::Generate => {
                let path = key_path(layout, i);
                if !path.exists() {
                    vfile::write_key(&path, &vfile::generate_key())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    tracing::info!(path = %path.display(), "generated validator key");
                }
                path
            }
        };
        let key = vfile::read_key(&path).map_err(|e| anyhow::anyhow!(e))?;
        keys.push((path, key));
        let tok = control_token_path(layout, i);
        chainctl_common::secrets::ensure(&tok)
            .with_context(|| format!("cannot write {}", tok.display()))?;
    }

    let genesis = Genesis {
        chain_id: p.chain.chain_id,
        execution_genesis_hash: el_hash,
        genesis_time,
        block_time_secs: p.chain.block_time.get().as_secs(),
        forks: Some(
            chainctl_common::validator::ForkTimes::from_genesis_config(&network_genesis["config"])
                .map_err(|e| anyhow::anyhow!("{}: {e}", gpath.display()))?,
        ),
        validators: keys
            .iter()
            .enumerate()
            .map(|(i, (_, k))| GenesisValidator {
                name: validator_name(i as u32),
                public_key: vfile::public_key_hex(k),
                power: 1,
            })
            .collect(),
    };
    let cg = consensus_genesis_path(layout);
    chainctl_common::fs::write_atomic(&cg, serde_json::to_string_pretty(&genesis)?.as_bytes())
        .with_context(|| format!("cannot write {}", cg.display()))?;

    let fee_recipient: Address = match &v.fee_recipient {
        Some(f) => f.parse().context("validators.fee_recipient")?,
        None => Address::ZERO,
    };
    let bind_ip = match target {
        Target::Host => ip,
        Target::Container | Target::Cluster => std::net::IpAddr::from([0, 0, 0, 0]),
    };
    let addr = |svc: &str, name: &str| -> Result<String> {
        let port = port_of(svc, name)?;
        Ok(match target {
            Target::Host => std::net::SocketAddr::new(ip, port).to_string(),
            Target::Container | Target::Cluster => format!("{svc}:{port}"),
        })
    };
    for i in 0..v.count {
        let name = validator_name(i);
        let svc = plan
            .service(&name)
            .ok_or_else(|| anyhow::anyhow!("the plan has no service `{name}`"))?;
        let mut peers = Vec::new();
        let mut peer_status = Vec::new();
        for k in 0..v.count {
            if k != i {
                peers.push(addr(&validator_name(k), "p2p")?);
                peer_status.push(addr(&validator_name(k), "status")?);
            }
        }
        let mut execution = Vec::new();
        for (el, _) in els_of(v, i) {
            let pair = plan
                .jwt_pairs
                .iter()
                .find(|pr| pr.consensus == name && pr.execution == el)
                .ok_or_else(|| anyhow::anyhow!("no JWT pair {name}--{el} in the plan"))?;
            execution.push(ElConfig {
                name: el.clone(),
                engine_url: format!("http://{}", addr(&el, "engine")?),
                jwt_secret: pair.path.clone(),
            });
        }
        let file = NodeFile {
            moniker: name.clone(),
            genesis: cg.clone(),
            key: keys[i as usize].0.clone(),
            p2p_host: bind_ip.to_string(),
            p2p_port: port_of(&name, "p2p")?,
            peers,
            peer_status,
            status_addr: std::net::SocketAddr::new(bind_ip, port_of(&name, "status")?),
            control_token: control_token_path(layout, i),
            fee_recipient,
            execution,
            engine_timeouts: Timeouts::default(),
        };
        chainctl_common::fs::private_dir(&svc.data_dir)
            .with_context(|| format!("cannot create {}", svc.data_dir.display()))?;
        let path = svc.data_dir.join("config.json");
        chainctl_common::fs::write_atomic(&path, serde_json::to_string_pretty(&file)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(read_at_start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn rendered_genesis_matches_the_reth_interop_shape() {
        // Same chain parameters as the Reth fixture's genesis (chain id 7331, one dev
        // account, no extra alloc, timestamp 0) must give the hash Reth computed.
        let dir = std::env::var_os("CHAINCTL_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
            });
        let chain = dir.join("reth-interop/chain.json");
        let text = std::fs::read_to_string(&chain).unwrap_or_else(|e| {
            panic!(
                "the Reth interop fixture is missing at {} ({e}); set CHAINCTL_FIXTURES",
                chain.display()
            )
        });
        let want: Json = serde_json::from_str(&text).unwrap();
        let mut p: Profile =
            serde_yaml::from_str("name: t\nchain: {chain_id: 7331, dev_accounts: 0}\n").unwrap();
        p.chain.alloc.insert(
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into(),
            chainctl_core::profile::GenesisAccount {
                balance: reth_balance(&dir),
            },
        );
        let g = render_el_genesis(&p, 0).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("g.json");
        std::fs::write(&path, serde_json::to_vec(&g).unwrap()).unwrap();
        let (hash, _) = chainctl_evm::genesis_hash(&path).unwrap();
        assert_eq!(
            format!("{hash:#x}"),
            want["genesisHash"].as_str().unwrap().to_lowercase()
        );
    }

    fn reth_balance(dir: &Path) -> String {
        let g: Json = serde_json::from_str(
            &std::fs::read_to_string(dir.join("reth-interop/genesis.json")).unwrap(),
        )
        .unwrap();
        g["alloc"]["f39fd6e51aad88f6f4ce6ab8827279cfffb92266"]["balance"]
            .as_str()
            .unwrap()
            .to_string()
    }
}
