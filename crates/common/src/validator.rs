//! The files a validator reads, shared by the consensus node that reads them and the
//! supervisor that writes them: `config.json` ([`NodeFile`]), the network's consensus
//! genesis ([`Genesis`]) and the ed25519 key file. Plain data: no Malachite here, so the
//! monitor and the planner read these without linking the consensus engine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy_primitives::{keccak256, Address as EthAddress, B256};
use serde::{Deserialize, Serialize};

/// Timeouts of the Engine API calls.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(with = "millis")]
    pub forkchoice: Duration,
    #[serde(with = "millis")]
    pub get_payload: Duration,
    #[serde(with = "millis")]
    pub new_payload: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            forkchoice: Duration::from_secs(8),
            get_payload: Duration::from_secs(1),
            new_payload: Duration::from_secs(8),
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// How a validator reaches one of its ELs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElConfig {
    /// Service name of the EL.
    pub name: String,
    /// Engine API URL (authenticated port).
    pub engine_url: String,
    /// The JWT secret shared with this EL (mode 0600).
    pub jwt_secret: PathBuf,
}

/// `config.json` of one validator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct NodeFile {
    /// Name shown in logs and status.
    pub moniker: String,
    /// The network's consensus genesis (validator set, execution genesis hash).
    pub genesis: PathBuf,
    /// This validator's ed25519 key (hex, mode 0600).
    pub key: PathBuf,
    /// P2P listen address and port.
    pub p2p_host: String,
    pub p2p_port: u16,
    /// The other validators' P2P addresses (`host:port`).
    pub peers: Vec<String>,
    /// The other validators' status endpoints (`host:port`), for the isolation watchdog.
    #[serde(default)]
    pub peer_status: Vec<String>,
    /// Status and control endpoint.
    pub status_addr: SocketAddr,
    /// Token file for the control endpoint (mode 0600).
    pub control_token: PathBuf,
    /// Fee recipient of the blocks this validator proposes.
    pub fee_recipient: EthAddress,
    /// Execution clients, the first one active.
    pub execution: Vec<ElConfig>,
    /// Engine API call timeouts (ms).
    #[serde(default)]
    pub engine_timeouts: Timeouts,
}

impl NodeFile {
    /// Read and check a config file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let f: NodeFile =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if f.execution.is_empty() {
            return Err(format!(
                "{}: execution: a validator needs at least one execution client",
                path.display()
            ));
        }
        Ok(f)
    }
}

/// The network's consensus genesis: the validator set and the execution genesis it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Genesis {
    /// EIP-155 chain id of the execution chain.
    pub chain_id: u64,
    /// Hash of the execution genesis block every EL must have.
    pub execution_genesis_hash: B256,
    /// Timestamp of the execution genesis block.
    pub genesis_time: u64,
    /// Target block time in seconds.
    pub block_time_secs: u64,
    /// Validators in proposer order.
    pub validators: Vec<GenesisValidator>,
    /// When the execution chain's post-merge forks activate, as its genesis `config`
    /// says: every Engine API call's version follows from the block's timestamp. A file
    /// without it (written before chainctl ran chains older than Prague) means every fork
    /// through Osaka at genesis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forks: Option<ForkTimes>,
}

/// Activation times (unix seconds) of the time-activated forks after the merge; `None`
/// never. Paris (the merge itself) is active from genesis on every chain chainctl runs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForkTimes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shanghai: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancun: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prague: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osaka: Option<u64>,
}

/// The post-merge forks, each with its own Engine API method versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EngineFork {
    Paris,
    Shanghai,
    Cancun,
    Prague,
    Osaka,
}

impl std::fmt::Display for EngineFork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl ForkTimes {
    /// Every fork through Osaka at genesis.
    pub const ALL_AT_GENESIS: ForkTimes = ForkTimes {
        shanghai: Some(0),
        cancun: Some(0),
        prague: Some(0),
        osaka: Some(0),
    };

    /// The schedule in a go-ethereum genesis `config` (`shanghaiTime`, …). Refuses a
    /// schedule out of order or with a gap (a fork set while an earlier one is not), which
    /// no client runs.
    pub fn from_genesis_config(config: &serde_json::Value) -> Result<ForkTimes, String> {
        let keys = ["shanghaiTime", "cancunTime", "pragueTime", "osakaTime"];
        let mut at = [None; 4];
        for (i, k) in keys.iter().enumerate() {
            at[i] = match config.get(*k) {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(v.as_u64().ok_or_else(|| {
                    format!("config.{k} is {v}: a fork time is a whole number of seconds")
                })?),
            };
            if let (Some(t), Some(j)) = (at[i], i.checked_sub(1)) {
                match at[j] {
                    None => {
                        return Err(format!(
                            "config.{} is set but config.{} is not: forks activate in order",
                            keys[i], keys[j]
                        ))
                    }
                    Some(p) if p > t => {
                        return Err(format!(
                            "config.{} ({t}) is before config.{} ({p}): forks activate in order",
                            keys[i], keys[j]
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(ForkTimes {
            shanghai: at[0],
            cancun: at[1],
            prague: at[2],
            osaka: at[3],
        })
    }

    /// The fork a block with this timestamp belongs to.
    pub fn at(&self, timestamp: u64) -> EngineFork {
        let on = |t: Option<u64>| t.is_some_and(|t| timestamp >= t);
        if on(self.osaka) {
            EngineFork::Osaka
        } else if on(self.prague) {
            EngineFork::Prague
        } else if on(self.cancun) {
            EngineFork::Cancun
        } else if on(self.shanghai) {
            EngineFork::Shanghai
        } else {
            EngineFork::Paris
        }
    }
}

/// One validator in the genesis file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GenesisValidator {
    /// Name (moniker) of the validator.
    pub name: String,
    /// Hex ed25519 public key (32 bytes).
    pub public_key: String,
    /// Voting power (equal by default).
    pub power: u64,
}

impl Genesis {
    /// The domain every signature of this network is bound to: keccak256 of the
    /// canonical JSON of the genesis.
    ///
    /// The fork schedule is left out: it is the execution genesis's (which every EL
    /// enforces), and a network whose file was written before the schedule was keeps its
    /// domain — and the signatures in its stores stay valid — when `up` adds it.
    pub fn hash(&self) -> B256 {
        let bound = Genesis {
            forks: None,
            ..self.clone()
        };
        keccak256(serde_json::to_vec(&bound).expect("genesis serializes"))
    }

    /// The fork schedule, every fork through Osaka at genesis when the file has none.
    pub fn fork_times(&self) -> ForkTimes {
        self.forks.unwrap_or(ForkTimes::ALL_AT_GENESIS)
    }
}

/// One change of a validator's active execution client, as the validator records it in
/// its `/status` (`switch_log`) and the supervisor's API passes it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    /// When (unix ms).
    pub at_ms: u64,
    /// The client it left.
    pub from: String,
    /// The client it moved to.
    pub to: String,
    /// Short cause, a metric label: `build_failed`, `el_not_ok`, `el_behind`, `forced`,
    /// or what the supervisor gave (`unhealthy`, `syncing`, `lagging`, `down`).
    #[serde(default = "unknown")]
    pub kind: String,
    /// The cause in words.
    #[serde(default)]
    pub reason: String,
    /// The decision interval the switch fell in: from the last decision before it to
    /// the first after it (ms); none until that decision.
    #[serde(default)]
    pub gap_ms: Option<u64>,
}

fn unknown() -> String {
    "unknown".into()
}

/// A validator's ed25519 secret key: the 32 bytes of its key file.
pub type KeyBytes = [u8; 32];

/// Write a validator key file (hex, mode 0600).
pub fn write_key(path: &Path, key: &KeyBytes) -> std::io::Result<()> {
    crate::fs::write_atomic(path, hex::encode(key).as_bytes())
}

/// Generate a fresh validator key.
pub fn generate_key() -> KeyBytes {
    ed25519_consensus::SigningKey::new(rand::rngs::OsRng).to_bytes()
}

/// Read a validator key; refuses files that others can read.
pub fn read_key(path: &Path) -> Result<KeyBytes, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("validator key {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "validator key {} has mode {mode:o}: others can read it; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("validator key {}: {e}", path.display()))?;
    let b = hex::decode(text.trim())
        .map_err(|e| format!("validator key {}: not hex: {e}", path.display()))?;
    let b: [u8; 32] = b.try_into().map_err(|_| {
        format!(
            "validator key {}: an ed25519 key is 32 bytes",
            path.display()
        )
    })?;
    Ok(b)
}

/// The public key of a key (for the genesis).
pub fn public_key_hex(key: &KeyBytes) -> String {
    hex::encode(
        ed25519_consensus::SigningKey::from(*key)
            .verification_key()
            .as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fork_of_a_block_follows_the_genesis_schedule() {
        let f = ForkTimes::from_genesis_config(&json!({"shanghaiTime": 0, "cancunTime": 100,
                                                       "pragueTime": 100, "osakaTime": null}))
        .unwrap();
        assert_eq!(f.at(0), EngineFork::Shanghai);
        assert_eq!(f.at(99), EngineFork::Shanghai);
        assert_eq!(f.at(100), EngineFork::Prague);
        assert_eq!(f.at(u64::MAX), EngineFork::Prague);
        let paris = ForkTimes::from_genesis_config(&json!({"chainId": 1})).unwrap();
        assert_eq!(paris.at(1_800_000_000), EngineFork::Paris);
        assert_eq!(ForkTimes::ALL_AT_GENESIS.at(0), EngineFork::Osaka);
        let e = ForkTimes::from_genesis_config(&json!({"cancunTime": 0})).unwrap_err();
        assert!(
            e.contains("config.cancunTime is set but config.shanghaiTime is not"),
            "{e}"
        );
        let e = ForkTimes::from_genesis_config(&json!({"shanghaiTime": 9, "cancunTime": 5}))
            .unwrap_err();
        assert!(e.contains("(5) is before config.shanghaiTime (9)"), "{e}");
        let e = ForkTimes::from_genesis_config(&json!({"shanghaiTime": "0x0"})).unwrap_err();
        assert!(e.contains("whole number of seconds"), "{e}");
    }

    #[test]
    fn the_signing_domain_does_not_move_when_the_schedule_is_added() {
        let mut g = Genesis {
            chain_id: 1337,
            execution_genesis_hash: B256::repeat_byte(7),
            genesis_time: 1,
            block_time_secs: 1,
            validators: vec![],
            forks: None,
        };
        let before = g.hash();
        let old_file = serde_json::to_string(&g).unwrap();
        assert!(!old_file.contains("forks"), "{old_file}");
        g.forks = Some(ForkTimes::default());
        assert_eq!(g.hash(), before);
        let back: Genesis = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back.fork_times().at(5), EngineFork::Paris);
        let old: Genesis = serde_json::from_str(&old_file).unwrap();
        assert_eq!(old.fork_times().at(5), EngineFork::Osaka);
    }
}

/// A validator's signing floor, in its home (`sign-floor.json`): it signs no vote and
/// proposes no block at a height at or below `height`. `chainctl restore` writes it when
/// it puts back a validator's older state: the heights between the backup and the
/// network's head were signed by this key already, and signing them again (even a nil
/// vote after a timeout) would be double signing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignFloor {
    /// The highest height this validator must not sign at.
    pub height: u64,
    /// Why (shown in the node's log).
    pub reason: String,
}

impl SignFloor {
    /// Its file in a validator's home.
    pub const FILE: &'static str = "sign-floor.json";

    /// The floor of the validator whose home is `home`: `None` without the file.
    pub fn read(home: &Path) -> Result<Option<SignFloor>, String> {
        let path = home.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                format!(
                    "{}: {e}: it holds the height this validator must not sign at or below; write it again with `chainctl restore` or fix the JSON",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}
