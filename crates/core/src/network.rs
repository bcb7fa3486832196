//! The network a profile with validators describes: the services chainctl generates for
//! it (one consensus node per validator, its built-in execution clients) and the files
//! they read (execution genesis, consensus genesis, validator keys, per-validator config).

use std::path::PathBuf;

use alloy_primitives::{Address, U256};
use anyhow::{Context as _, Result};
use serde_json::{json, Value as Json};

use crate::layout::Layout;
use crate::profile::{ExecutionKind, Fork, Profile, ValidatorKeys, Validators};

/// The documented development mnemonic (the one Hardhat, Anvil and Foundry use).
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";
/// Balance of each development account: 1,000,000 ETH.
pub const DEV_BALANCE_WEI: u128 = 1_000_000 * 1_000_000_000_000_000_000;

/// Service name of validator `i`.
pub fn validator_name(i: u32) -> String {
    format!("val-{i}")
}

/// Service name of execution client `j` of validator `i`.
pub fn el_name(i: u32, j: usize) -> String {
    format!("val-{i}-el-{j}")
}

/// Whether `name` is one chainctl generates for the validators.
pub fn is_generated_name(name: &str, v: &Validators) -> bool {
    (0..v.count).any(|i| {
        name == validator_name(i) || (0..v.execution.of(i).len()).any(|j| name == el_name(i, j))
    })
}

/// The execution clients of validator `i`, with their service names.
pub fn els_of(v: &Validators, i: u32) -> Vec<(String, ExecutionKind)> {
    v.execution
        .of(i)
        .iter()
        .enumerate()
        .map(|(j, k)| (el_name(i, j), *k))
        .collect()
}

/// The image of chainctl's own services: `chainctl:<version>` (`chainctl image build`).
pub fn chainctl_image() -> String {
    format!("chainctl:{}", env!("CARGO_PKG_VERSION"))
}

/// The network files of a state dir.
pub fn network_dir(layout: &Layout) -> PathBuf {
    layout.root.join("network")
}

/// Execution genesis (go-ethereum format) every EL of the network starts from.
pub fn el_genesis_path(layout: &Layout) -> PathBuf {
    network_dir(layout).join("genesis.json")
}

/// Consensus genesis: validator set and execution genesis hash.
pub fn consensus_genesis_path(layout: &Layout) -> PathBuf {
    network_dir(layout).join("consensus-genesis.json")
}

/// A validator's key file.
pub fn key_path(layout: &Layout, i: u32) -> PathBuf {
    layout
        .secrets_dir()
        .join("validators")
        .join(format!("{}.key", validator_name(i)))
}

/// The secret files validator `i` reads besides its Engine API secrets: its key (generated
/// or the profile's) and its control token.
pub fn validator_secrets(p: &Profile, layout: &Layout, i: u32) -> Vec<PathBuf> {
    let key = match &p.validators.keys {
        ValidatorKeys::Files(files) => files
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| key_path(layout, i)),
        ValidatorKeys::Generate => key_path(layout, i),
    };
    vec![key, control_token_path(layout, i)]
}

/// A validator's control-endpoint token.
pub fn control_token_path(layout: &Layout, i: u32) -> PathBuf {
    layout
        .secrets_dir()
        .join("validators")
        .join(format!("{}.control", validator_name(i)))
}

/// Addresses of the development accounts.
pub fn dev_accounts(n: u32) -> Result<Vec<Address>> {
    Ok(dev_signers(DEV_MNEMONIC, 0, n)?
        .iter()
        .map(|s| s.address())
        .collect())
}

/// The signer of a key file: the 32-byte secp256k1 private key in hex (`0x` optional,
/// surrounding whitespace ignored), in a file only its owner can read or write.
pub fn key_file_signer(
    path: &std::path::Path,
) -> Result<alloy_signer_local::PrivateKeySigner, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown}: mode {mode:04o} lets others read or change a private key: `chmod 600 {shown}`"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    let bytes = alloy_primitives::hex::decode(hex)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| {
            format!("{shown}: not a private key (expected 64 hex digits, `0x` optional)")
        })?;
    alloy_signer_local::PrivateKeySigner::from_slice(&bytes)
        .map_err(|e| format!("{shown}: not a valid secp256k1 private key: {e}"))
}

/// Signers of accounts `first..first + n` of `mnemonic` (BIP-44 path m/44'/60'/0'/0/i,
/// as Foundry, Hardhat and go-ethereum's tools derive them). The seed is stretched once.
pub fn dev_signers(
    mnemonic: &str,
    first: u32,
    n: u32,
) -> Result<Vec<alloy_signer_local::PrivateKeySigner>> {
    let parent =
        alloy_signer_local::MnemonicBuilder::<alloy_signer_local::coins_bip39::English>::default()
            .phrase(mnemonic)
            .build_parent_key()
            .context("not a valid BIP-39 English mnemonic")?;
    parent
        .children_from(first)
        .take(n as usize)
        .map(|s| s.context("deriving a development account"))
        .collect()
}

fn parse_balance(b: &str) -> Result<U256> {
    let b = b.trim();
    Ok(match b.strip_prefix("0x") {
        Some(h) => U256::from_str_radix(h, 16)?,
        None => U256::from_str_radix(b, 10)?,
    })
}

/// Render the execution genesis: every fork through Osaka (or Prague) active at 0, the
/// system contracts, the deposit contract address, dev accounts and the profile's alloc.
pub fn render_el_genesis(p: &Profile, timestamp: u64) -> Result<Json> {
    use alloy_eips::{eip2935, eip4788, eip7002, eip7251};
    let mut alloc = serde_json::Map::new();
    for (addr, code) in [
        (eip4788::BEACON_ROOTS_ADDRESS, &eip4788::BEACON_ROOTS_CODE),
        (
            eip2935::HISTORY_STORAGE_ADDRESS,
            &eip2935::HISTORY_STORAGE_CODE,
        ),
        (
            eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS,
            &eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_CODE,
        ),
        (
            eip7251::CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS,
            &eip7251::CONSOLIDATION_REQUEST_PREDEPLOY_CODE,
        ),
    ] {
        alloc.insert(
            format!("{addr:#x}"),
            json!({"balance": "0x0", "nonce": "0x1", "code": code}),
        );
    }
    for a in dev_accounts(p.chain.dev_accounts)? {
        alloc.insert(
            format!("{a:#x}"),
            json!({"balance": format!("{:#x}", U256::from(DEV_BALANCE_WEI))}),
        );
    }
    for (addr, acct) in &p.chain.alloc {
        let a: Address = addr
            .parse()
            .with_context(|| format!("chain.alloc.{addr}: not an address"))?;
        let b =
            parse_balance(&acct.balance).with_context(|| format!("chain.alloc.{addr}.balance"))?;
        alloc.insert(format!("{a:#x}"), json!({"balance": format!("{b:#x}")}));
    }
    let mut config = json!({
        "chainId": p.chain.chain_id,
        "homesteadBlock": 0, "eip150Block": 0, "eip155Block": 0, "eip158Block": 0,
        "byzantiumBlock": 0, "constantinopleBlock": 0, "petersburgBlock": 0,
        "istanbulBlock": 0, "berlinBlock": 0, "londonBlock": 0, "mergeNetsplitBlock": 0,
        "terminalTotalDifficulty": 0, "terminalTotalDifficultyPassed": true,
        "depositContractAddress": "0x00000000219ab540356cbb839cbe05303d7705fa",
    });
    // Every fork up to the profile's at genesis; later ones stay off.
    for (fork, key) in [
        (Fork::Shanghai, "shanghaiTime"),
        (Fork::Cancun, "cancunTime"),
        (Fork::Prague, "pragueTime"),
        (Fork::Osaka, "osakaTime"),
    ] {
        if p.chain.fork >= fork {
            config[key] = json!(0);
        }
    }
    let mut genesis = json!({
        "config": config,
        "nonce": "0x0",
        "timestamp": format!("{timestamp:#x}"),
        "extraData": "0x",
        "gasLimit": "0x3938700",
        "difficulty": "0x0",
        "mixHash": "0x0000000000000000000000000000000000000000000000000000000000000000",
        "coinbase": "0x0000000000000000000000000000000000000000",
        "baseFeePerGas": "0x3b9aca00",
        "number": "0x0",
        "gasUsed": "0x0",
        "parentHash": "0x0000000000000000000000000000000000000000000000000000000000000000",
        "alloc": alloc,
    });
    complete_blob_schedule(&mut genesis);
    Ok(genesis)
}

/// Fill in the blob parameters of every active fork from Cancun on that `blobSchedule`
/// lacks, with those of EIP-4844 (Cancun) and EIP-7691 (Prague, Osaka): since 1.15.1 Geth
/// refuses a genesis without them (`missing entry for fork "cancun" in blobSchedule`).
pub fn complete_blob_schedule(g: &mut Json) {
    let Some(config) = g.get_mut("config").and_then(Json::as_object_mut) else {
        return;
    };
    let active: Vec<&str> = [
        ("cancunTime", "cancun"),
        ("pragueTime", "prague"),
        ("osakaTime", "osaka"),
    ]
    .iter()
    .filter(|(t, _)| config.get(*t).is_some_and(|v| !v.is_null()))
    .map(|(_, f)| *f)
    .collect();
    if active.is_empty() {
        return;
    }
    let schedule = config
        .entry("blobSchedule")
        .or_insert_with(|| Json::Object(Default::default()));
    let Some(schedule) = schedule.as_object_mut() else {
        return;
    };
    for fork in active {
        schedule.entry(fork).or_insert_with(|| match fork {
            "cancun" => {
                serde_json::json!({"target": 3, "max": 6, "baseFeeUpdateFraction": 3338477})
            }
            _ => serde_json::json!({"target": 6, "max": 9, "baseFeeUpdateFraction": 5007716}),
        });
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_key_file_must_be_private_and_hold_one_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canary.hex");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        // Account 0 of the development mnemonic.
        let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        write(&format!("{key}\n"), 0o600);
        assert_eq!(
            key_file_signer(&path).unwrap().address(),
            dev_accounts(1).unwrap()[0]
        );
        write(key, 0o644);
        let e = key_file_signer(&path).unwrap_err();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        write("0x1234", 0o600);
        let e = key_file_signer(&path).unwrap_err();
        assert!(e.contains("not a private key"), "{e}");
    }
    use super::*;

    /// `chain.fork` switches on every fork up to it at genesis and none after, with blob
    /// parameters exactly for the active blob forks.
    #[test]
    fn the_genesis_activates_every_fork_up_to_the_profiles_and_none_after() {
        let keys = ["shanghaiTime", "cancunTime", "pragueTime", "osakaTime"];
        for (n, fork) in ["paris", "shanghai", "cancun", "prague", "osaka"]
            .iter()
            .enumerate()
        {
            let p: Profile =
                serde_yaml::from_str(&format!("name: t\nchain: {{fork: {fork}}}\n")).unwrap();
            let g = render_el_genesis(&p, 1).unwrap();
            let c = &g["config"];
            for (i, k) in keys.iter().enumerate() {
                let want = if i < n { json!(0) } else { Json::Null };
                assert_eq!(c[k], want, "{k} under {fork}");
            }
            let blobs: Vec<&String> = c["blobSchedule"]
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            assert_eq!(blobs.len(), n.saturating_sub(1), "{fork}: {blobs:?}");
            assert_eq!(c["terminalTotalDifficulty"], 0, "{fork}");
        }
        let e = serde_yaml::from_str::<Profile>("name: t\nchain: {fork: london}\n").unwrap_err();
        assert!(e.to_string().contains("paris"), "{e}");
    }

    #[test]
    fn dev_accounts_are_the_documented_ones() {
        let a = dev_accounts(2).unwrap();
        assert_eq!(
            a[0],
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
                .parse::<Address>()
                .unwrap()
        );
        assert_eq!(
            a[1],
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse::<Address>()
                .unwrap()
        );
    }
}
