//! Chain rules: which forks are active when, blob parameters, and the genesis header.
//!
//! The built-in engine runs post-merge chains only (terminal total difficulty 0, every
//! block-numbered fork at 0), which is what every network chainctl renders looks like.

use alloy_consensus::{constants::EMPTY_OMMER_ROOT_HASH, Header, EMPTY_ROOT_HASH};
use alloy_eips::{
    eip1559::INITIAL_BASE_FEE, eip7685::EMPTY_REQUESTS_HASH, eip7840::BlobParams,
    eip7892::BlobScheduleBlobParams,
};
use alloy_evm::eth::spec::EthExecutorSpec;
use alloy_genesis::{ChainConfig, Genesis};
use alloy_hardforks::{EthereumChainHardforks, EthereumHardfork, EthereumHardforks, ForkCondition};
use alloy_primitives::{Address, B256, B64};

/// The time-activated forks the engine knows, oldest first.
const TIME_FORKS: [EthereumHardfork; 9] = [
    EthereumHardfork::Shanghai,
    EthereumHardfork::Cancun,
    EthereumHardfork::Prague,
    EthereumHardfork::Osaka,
    EthereumHardfork::Bpo1,
    EthereumHardfork::Bpo2,
    EthereumHardfork::Bpo3,
    EthereumHardfork::Bpo4,
    EthereumHardfork::Bpo5,
];

const BLOCK_FORKS: [EthereumHardfork; 14] = [
    EthereumHardfork::Frontier,
    EthereumHardfork::Homestead,
    EthereumHardfork::Tangerine,
    EthereumHardfork::SpuriousDragon,
    EthereumHardfork::Byzantium,
    EthereumHardfork::Constantinople,
    EthereumHardfork::Petersburg,
    EthereumHardfork::Istanbul,
    EthereumHardfork::MuirGlacier,
    EthereumHardfork::Berlin,
    EthereumHardfork::London,
    EthereumHardfork::ArrowGlacier,
    EthereumHardfork::GrayGlacier,
    EthereumHardfork::Paris,
];

/// The rules of one chain.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    pub chain_id: u64,
    hardforks: EthereumChainHardforks,
    forks: Vec<(EthereumHardfork, u64)>,
    pub deposit_contract: Option<Address>,
    blobs: BlobScheduleBlobParams,
}

impl ChainSpec {
    /// Rules from a go-ethereum genesis `config`. Refuses what the engine cannot run.
    pub fn from_chain_config(cfg: &ChainConfig) -> Result<Self, String> {
        let block_forks = [
            ("homesteadBlock", cfg.homestead_block),
            ("eip150Block", cfg.eip150_block),
            ("eip155Block", cfg.eip155_block),
            ("eip158Block", cfg.eip158_block),
            ("byzantiumBlock", cfg.byzantium_block),
            ("constantinopleBlock", cfg.constantinople_block),
            ("petersburgBlock", cfg.petersburg_block),
            ("istanbulBlock", cfg.istanbul_block),
            ("berlinBlock", cfg.berlin_block),
            ("londonBlock", cfg.london_block),
        ];
        for (name, at) in block_forks {
            if at != Some(0) {
                return Err(format!(
                    "config.{name} is {}: the built-in engine runs post-merge chains only; set it to 0",
                    at.map_or("missing".to_string(), |b| b.to_string())
                ));
            }
        }
        match cfg.terminal_total_difficulty {
            Some(ttd) if ttd.is_zero() => {}
            _ => {
                return Err("config.terminalTotalDifficulty must be 0: the built-in engine runs post-merge chains \
                            driven through the Engine API only"
                    .into())
            }
        }
        if cfg.amsterdam_time.is_some() || cfg.bogota_time.is_some() {
            return Err(
                "config.amsterdamTime / bogotaTime: forks after Osaka (and its BPO forks) are not \
                        supported by the built-in engine; remove them"
                    .into(),
            );
        }
        let times = [
            (
                EthereumHardfork::Shanghai,
                "shanghaiTime",
                cfg.shanghai_time,
            ),
            (EthereumHardfork::Cancun, "cancunTime", cfg.cancun_time),
            (EthereumHardfork::Prague, "pragueTime", cfg.prague_time),
            (EthereumHardfork::Osaka, "osakaTime", cfg.osaka_time),
            (EthereumHardfork::Bpo1, "bpo1Time", cfg.bpo1_time),
            (EthereumHardfork::Bpo2, "bpo2Time", cfg.bpo2_time),
            (EthereumHardfork::Bpo3, "bpo3Time", cfg.bpo3_time),
            (EthereumHardfork::Bpo4, "bpo4Time", cfg.bpo4_time),
            (EthereumHardfork::Bpo5, "bpo5Time", cfg.bpo5_time),
        ];
        let mut forks = Vec::new();
        let mut prev: Option<(&str, u64)> = None;
        let mut gap: Option<&str> = None;
        for (fork, name, at) in times {
            match at {
                Some(t) => {
                    if let Some(g) = gap {
                        return Err(format!(
                            "config.{name} is set but the earlier fork's {g} is not; set {g}"
                        ));
                    }
                    if let Some((pn, pt)) = prev {
                        if t < pt {
                            return Err(format!("config.{name} ({t}) is before {pn} ({pt}); forks activate in order"));
                        }
                    }
                    prev = Some((name, t));
                    forks.push((fork, t));
                }
                None => gap = gap.or(Some(name)),
            }
        }
        // Forks without an entry in blobSchedule take the mainnet values.
        let blobs = cfg.blob_schedule_blob_params();
        Ok(Self::new(
            cfg.chain_id,
            forks,
            cfg.deposit_contract_address,
            blobs,
        ))
    }

    /// Rules named as execution-spec-tests names them: `Osaka`, `CancunToPragueAtTime15k`, ….
    pub fn from_fixture_network(
        network: &str,
        chain_id: u64,
        blobs: BlobScheduleBlobParams,
    ) -> Result<Self, String> {
        // Paris (EEST's older name: Merge) has no time-activated fork; each later one
        // adds the next of TIME_FORKS.
        let order = ["Paris", "Shanghai", "Cancun", "Prague", "Osaka"];
        let idx = |n: &str| {
            let n = if n == "Merge" { "Paris" } else { n };
            order.iter().position(|o| *o == n)
        };
        let (base, next) = match network.split_once("To") {
            Some((a, rest)) => {
                let b = rest
                    .strip_suffix("AtTime15k")
                    .ok_or_else(|| format!("unknown fixture network {network:?}"))?;
                (a, Some(b))
            }
            None => (network, None),
        };
        let base_i = idx(base).ok_or_else(|| format!("unsupported fixture network {network:?}"))?;
        let mut forks: Vec<(EthereumHardfork, u64)> =
            TIME_FORKS[..base_i].iter().map(|f| (*f, 0)).collect();
        if let Some(n) = next {
            let n_i = idx(n)
                .filter(|n_i| *n_i > base_i)
                .ok_or_else(|| format!("unsupported fixture network {network:?}"))?;
            forks.extend(TIME_FORKS[base_i..n_i].iter().map(|f| (*f, 15_000)));
        }
        // Fixtures run on mainnet's deposit contract address.
        let deposit = Some(alloy_eips::eip6110::MAINNET_DEPOSIT_CONTRACT_ADDRESS);
        Ok(Self::new(chain_id, forks, deposit, blobs))
    }

    fn new(
        chain_id: u64,
        forks: Vec<(EthereumHardfork, u64)>,
        deposit_contract: Option<Address>,
        blobs: BlobScheduleBlobParams,
    ) -> Self {
        let mut all: Vec<(EthereumHardfork, ForkCondition)> = BLOCK_FORKS
            .iter()
            .map(|f| (*f, ForkCondition::Block(0)))
            .collect();
        all.extend(
            forks
                .iter()
                .map(|(f, t)| (*f, ForkCondition::Timestamp(*t))),
        );
        ChainSpec {
            chain_id,
            hardforks: EthereumChainHardforks::new(all),
            forks,
            deposit_contract,
            blobs,
        }
    }

    fn active(&self, fork: EthereumHardfork, timestamp: u64) -> bool {
        self.forks
            .iter()
            .any(|(f, t)| *f == fork && timestamp >= *t)
    }

    pub fn shanghai(&self, ts: u64) -> bool {
        self.active(EthereumHardfork::Shanghai, ts)
    }
    pub fn cancun(&self, ts: u64) -> bool {
        self.active(EthereumHardfork::Cancun, ts)
    }
    pub fn prague(&self, ts: u64) -> bool {
        self.active(EthereumHardfork::Prague, ts)
    }
    pub fn osaka(&self, ts: u64) -> bool {
        self.active(EthereumHardfork::Osaka, ts)
    }

    /// The newest fork active at `ts`, by its lower-case name.
    pub fn fork_name(&self, ts: u64) -> &'static str {
        if self.osaka(ts) {
            "osaka"
        } else if self.prague(ts) {
            "prague"
        } else if self.cancun(ts) {
            "cancun"
        } else if self.shanghai(ts) {
            "shanghai"
        } else {
            "paris"
        }
    }

    /// Blob parameters in force at `ts` (None before Cancun).
    pub fn blob_params(&self, ts: u64) -> Option<BlobParams> {
        if !self.cancun(ts) {
            return None;
        }
        for (fork, t) in self.forks.iter().rev() {
            if ts < *t {
                continue;
            }
            let p = match fork {
                EthereumHardfork::Bpo1
                | EthereumHardfork::Bpo2
                | EthereumHardfork::Bpo3
                | EthereumHardfork::Bpo4
                | EthereumHardfork::Bpo5 => {
                    match self.blobs.active_scheduled_params_at_timestamp(ts) {
                        Some(p) => *p,
                        None => continue,
                    }
                }
                EthereumHardfork::Osaka => self.blobs.osaka,
                EthereumHardfork::Prague => self.blobs.prague,
                EthereumHardfork::Cancun => self.blobs.cancun,
                _ => continue,
            };
            return Some(p);
        }
        None
    }

    /// The genesis header for `genesis` with state root `state_root`, with the post-merge
    /// fields every fork active at genesis requires (as Reth and Geth build it).
    pub fn genesis_header(&self, genesis: &Genesis, state_root: B256) -> Header {
        let ts = genesis.timestamp;
        let cancun = self.cancun(ts);
        Header {
            parent_hash: B256::ZERO,
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: genesis.coinbase,
            state_root,
            transactions_root: EMPTY_ROOT_HASH,
            receipts_root: EMPTY_ROOT_HASH,
            logs_bloom: Default::default(),
            difficulty: genesis.difficulty,
            number: 0,
            gas_limit: genesis.gas_limit,
            gas_used: 0,
            timestamp: ts,
            extra_data: genesis.extra_data.clone(),
            mix_hash: genesis.mix_hash,
            nonce: B64::from(genesis.nonce),
            base_fee_per_gas: Some(
                genesis
                    .base_fee_per_gas
                    .map(|b| b as u64)
                    .unwrap_or(INITIAL_BASE_FEE),
            ),
            withdrawals_root: self.shanghai(ts).then_some(EMPTY_ROOT_HASH),
            blob_gas_used: cancun.then(|| genesis.blob_gas_used.unwrap_or(0)),
            excess_blob_gas: cancun.then(|| genesis.excess_blob_gas.unwrap_or(0)),
            parent_beacon_block_root: cancun.then_some(B256::ZERO),
            requests_hash: self.prague(ts).then_some(EMPTY_REQUESTS_HASH),
            ..Default::default()
        }
    }
}

impl EthereumHardforks for ChainSpec {
    fn ethereum_fork_activation(&self, fork: EthereumHardfork) -> ForkCondition {
        self.hardforks.ethereum_fork_activation(fork)
    }
}

impl EthExecutorSpec for ChainSpec {
    fn deposit_contract_address(&self) -> Option<Address> {
        self.deposit_contract
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_networks() {
        let s = ChainSpec::from_fixture_network("CancunToPragueAtTime15k", 1, Default::default())
            .unwrap();
        assert!(s.cancun(0) && !s.prague(14_999) && s.prague(15_000) && !s.osaka(20_000));
        assert_eq!(s.blob_params(0).unwrap().max_blob_count, 6);
        assert_eq!(s.blob_params(15_000).unwrap().max_blob_count, 9);
        let s = ChainSpec::from_fixture_network("Shanghai", 1, Default::default()).unwrap();
        assert!(s.shanghai(0) && !s.cancun(0) && s.blob_params(0).is_none());
        assert!(ChainSpec::from_fixture_network("Frontier", 1, Default::default()).is_err());
    }

    #[test]
    fn refuses_pre_merge_configs() {
        let g: Genesis =
            serde_json::from_str(r#"{"config":{"chainId":1,"homesteadBlock":5},"alloc":{}}"#)
                .unwrap();
        let e = ChainSpec::from_chain_config(&g.config).unwrap_err();
        assert!(e.contains("homesteadBlock"), "{e}");
    }
}
