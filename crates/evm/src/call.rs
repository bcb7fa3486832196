//! Read-only execution for `eth_call` / `eth_estimateGas`, and `eth_getLogs`.

use alloy_eips::BlockNumberOrTag;
use alloy_evm::{EthEvmFactory, Evm, EvmEnv, EvmFactory};
use std::collections::HashMap;

use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_rpc_types_eth::state::StateOverride;
use alloy_rpc_types_eth::{BlockOverrides, Filter, TransactionRequest};
use revm::bytecode::Bytecode;
use revm::context::TxEnv;
use revm::context_interface::block::BlobExcessGasAndPrice;
use revm::context_interface::result::ExecutionResult;
use revm::database::State;
use revm::state::AccountInfo;
use serde_json::{json, Value};

use super::chain::Chain;
use super::exec::ExecutedBlock;
use super::state::{StateView, WorldState};
use super::wire::RpcError;

/// Widest block range one `eth_getLogs` may scan.
pub const MAX_LOG_RANGE: u64 = 10_000;

pub struct Simulator<'a> {
    pub chain: &'a Chain,
    pub block: &'a ExecutedBlock,
    /// The block's post-state.
    pub state: &'a WorldState,
    pub overrides: &'a Overrides,
}

/// What `eth_call` / `eth_estimateGas` change before running, as Geth and Reth take them:
/// accounts (balance, nonce, code, all storage or some slots) and block fields.
#[derive(Default)]
pub struct Overrides {
    state: StateOverride,
    /// Code of the overridden accounts, by hash.
    codes: HashMap<B256, Bytecode>,
    block: BlockOverrides,
}

impl Overrides {
    pub fn new(
        state: Option<StateOverride>,
        block: Option<BlockOverrides>,
    ) -> Result<Self, RpcError> {
        let state = state.unwrap_or_default();
        let mut codes = HashMap::new();
        for (address, o) in &state {
            if o.state.is_some() && o.state_diff.is_some() {
                return Err(RpcError::invalid_params(format!(
                    "account {address} has both 'state' and 'stateDiff': give one (state replaces all storage, stateDiff only the slots listed)"
                )));
            }
            if o.move_precompile_to.is_some() {
                return Err(RpcError::invalid_params(format!(
                    "account {address}: movePrecompileToAddress is not supported by this engine"
                )));
            }
            if let Some(code) = &o.code {
                let code = Bytecode::new_raw(code.clone());
                codes.insert(code.hash_slow(), code);
            }
        }
        let block = block.unwrap_or_default();
        if block.beacon_root.is_some() {
            return Err(RpcError::invalid_params(
                "block override beaconRoot is not supported: eth_call runs no system calls here",
            ));
        }
        Ok(Overrides {
            state,
            codes,
            block,
        })
    }

    fn apply_block(&self, env: &mut EvmEnv) {
        let (o, b) = (&self.block, &mut env.block_env);
        if let Some(n) = o.number {
            b.number = n;
        }
        if let Some(t) = o.time {
            b.timestamp = U256::from(t);
        }
        if let Some(g) = o.gas_limit {
            b.gas_limit = g;
        }
        if let Some(c) = o.coinbase {
            b.beneficiary = c;
        }
        if let Some(r) = o.random {
            b.prevrandao = Some(r);
        }
        if let Some(d) = o.difficulty {
            b.difficulty = d;
        }
        if let Some(f) = o.base_fee {
            b.basefee = f.saturating_to();
        }
        if let Some(f) = o.blob_base_fee {
            let excess = b.blob_excess_gas_and_price.map_or(0, |x| x.excess_blob_gas);
            b.blob_excess_gas_and_price = Some(BlobExcessGasAndPrice {
                excess_blob_gas: excess,
                blob_gasprice: f.saturating_to(),
            });
        }
    }
}

/// The snapshot with the overridden accounts and block hashes laid over it.
struct Overlay<'a> {
    inner: StateView<'a>,
    o: &'a Overrides,
}

impl std::fmt::Debug for Overlay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("inner", &self.inner)
            .field("accounts", &self.o.state.len())
            .finish()
    }
}

impl revm::Database for Overlay<'_> {
    type Error = std::convert::Infallible;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, Self::Error> {
        let base = self.inner.basic(address)?;
        let Some(o) = self.o.state.get(&address) else {
            return Ok(base);
        };
        let mut info = base.unwrap_or_default();
        if let Some(b) = o.balance {
            info.balance = b;
        }
        if let Some(n) = o.nonce {
            info.nonce = n;
        }
        if let Some(code) = &o.code {
            let code = Bytecode::new_raw(code.clone());
            info.code_hash = code.hash_slow();
            info.code = Some(code);
        }
        Ok(Some(info))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, Self::Error> {
        match self.o.codes.get(&code_hash) {
            Some(c) => Ok(c.clone()),
            None => self.inner.code_by_hash(code_hash),
        }
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, Self::Error> {
        if let Some(o) = self.o.state.get(&address) {
            let slot = B256::from(index.to_be_bytes::<32>());
            let word = |v: &B256| U256::from_be_bytes(v.0);
            if let Some(all) = &o.state {
                return Ok(all.get(&slot).map_or(U256::ZERO, word));
            }
            if let Some(v) = o.state_diff.as_ref().and_then(|d| d.get(&slot)) {
                return Ok(word(v));
            }
        }
        self.inner.storage(address, index)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, Self::Error> {
        match self
            .o
            .block
            .block_hash
            .as_ref()
            .and_then(|m| m.get(&number))
        {
            Some(h) => Ok(*h),
            None => self.inner.block_hash(number),
        }
    }
}

impl Simulator<'_> {
    fn run(&self, req: &TransactionRequest, gas: u64) -> Result<ExecutionResult, RpcError> {
        let spec = &self.chain.spec;
        let h = self.block.header();
        let mut env =
            EvmEnv::for_eth_block(h, &**spec, spec.chain_id, spec.blob_params(h.timestamp));
        env.cfg_env.disable_nonce_check = true;
        env.cfg_env.disable_base_fee = true;
        env.cfg_env.disable_block_gas_limit = true;
        env.cfg_env.disable_eip3607 = true;
        self.overrides.apply_block(&mut env);
        let gas_price = req.gas_price.or(req.max_fee_per_gas).unwrap_or(0);
        if gas_price == 0 {
            env.cfg_env.disable_fee_charge = true;
            env.cfg_env.disable_balance_check = req.value.is_none_or(|v| v.is_zero());
        }
        let caller = req.from.unwrap_or_default();
        // BLOCKHASH sees the block's own branch, canonical or not.
        let hashes = self.chain.ancestors(self.block.hash);
        let ancestors = |n: u64| hashes.get(&n).copied();
        let view = StateView {
            state: self.state,
            codes: &self.chain.codes,
            block_hash: &ancestors,
        };
        let db = Overlay {
            inner: view,
            o: self.overrides,
        };
        let mut evm =
            EthEvmFactory::default().create_evm(State::builder().with_database(db).build(), env);
        let tx = TxEnv {
            tx_type: if req.max_fee_per_gas.is_some() { 2 } else { 0 },
            caller,
            gas_limit: gas,
            gas_price,
            gas_priority_fee: req.max_priority_fee_per_gas,
            kind: super::wire::call_kind(req),
            value: req.value.unwrap_or_default(),
            data: req.input.input().cloned().unwrap_or_default(),
            nonce: 0,
            chain_id: Some(spec.chain_id),
            access_list: req.access_list.clone().unwrap_or_default(),
            ..Default::default()
        };
        let r = evm
            .transact(tx)
            .map_err(|e| RpcError::server(format!("{e}")))?;
        Ok(r.result)
    }

    /// The gas a call may use: as asked, at most the block gas limit (and the Osaka
    /// transaction cap when nothing was asked).
    fn cap(&self, req: &TransactionRequest) -> u64 {
        let block_limit = self.block.header().gas_limit;
        let default = if self.chain.spec.osaka(self.block.header().timestamp) {
            super::pool::TX_GAS_CAP.min(block_limit)
        } else {
            block_limit
        };
        req.gas.unwrap_or(default).min(block_limit)
    }

    pub fn call(&self, req: &TransactionRequest) -> Result<Bytes, RpcError> {
        match self.run(req, self.cap(req))? {
            ExecutionResult::Success { output, .. } => Ok(output.into_data()),
            ExecutionResult::Revert { output, .. } => Err(reverted(&output)),
            ExecutionResult::Halt { reason, .. } => {
                Err(RpcError::server(format!("execution halted: {reason:?}")))
            }
        }
    }

    /// The lowest gas limit with which the call succeeds (binary search).
    pub fn estimate(&self, req: &TransactionRequest) -> Result<u64, RpcError> {
        let hi = self.cap(req);
        let used = match self.run(req, hi)? {
            ExecutionResult::Success { gas, .. } => gas.tx_gas_used(),
            ExecutionResult::Revert { output, .. } => return Err(reverted(&output)),
            ExecutionResult::Halt { reason, .. } => {
                return Err(RpcError::server(format!(
                    "gas required exceeds allowance ({hi}) or always failing: {reason:?}"
                )))
            }
        };
        let (mut lo, mut hi) = (used.saturating_sub(1), hi);
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            match self.run(req, mid) {
                Ok(ExecutionResult::Success { .. }) => hi = mid,
                _ => lo = mid,
            }
        }
        Ok(hi)
    }
}

fn reverted(output: &Bytes) -> RpcError {
    let mut e = RpcError {
        code: 3,
        message: "execution reverted".into(),
    };
    if output.len() >= 68 && output[..4] == [0x08, 0xc3, 0x79, 0xa0] {
        // Error(string)
        let len = U256::from_be_slice(&output[36..68]).saturating_to::<usize>();
        if let Some(s) = output.get(68..68 + len) {
            e.message = format!("execution reverted: {}", String::from_utf8_lossy(s));
        }
    }
    e
}

/// `eth_getLogs` over canonical blocks (or one block by hash).
pub fn logs(chain: &Chain, filter: &Filter) -> Result<Value, RpcError> {
    let head = chain.head().number();
    let blocks: Vec<std::sync::Arc<ExecutedBlock>> = if let Some(h) = filter.get_block_hash() {
        vec![chain
            .block(&h)
            .ok_or_else(|| RpcError::server("unknown block"))?]
    } else {
        let num = |b: Option<BlockNumberOrTag>| -> u64 {
            match b {
                Some(BlockNumberOrTag::Number(n)) => n,
                Some(BlockNumberOrTag::Earliest) => 0,
                Some(BlockNumberOrTag::Safe) => chain.safe().number(),
                Some(BlockNumberOrTag::Finalized) => chain.finalized().number(),
                _ => head,
            }
        };
        let from = num(filter.block_option.get_from_block().copied());
        let to = num(filter.block_option.get_to_block().copied()).min(head);
        if from > to {
            return Ok(json!([]));
        }
        if to - from >= MAX_LOG_RANGE {
            return Err(RpcError::server(format!(
                "query exceeds the maximum block range of {MAX_LOG_RANGE}"
            )));
        }
        (from..=to).filter_map(|n| chain.canonical(n)).collect()
    };
    let mut out = Vec::new();
    for b in blocks {
        if !filter.matches_bloom(b.header().logs_bloom) {
            continue;
        }
        let mut index = 0u64;
        for (i, r) in b.receipts.iter().enumerate() {
            for l in r.logs() {
                if filter.matches(l) {
                    out.push(super::wire::rpc_log(&b, i, index, l));
                }
                index += 1;
            }
        }
    }
    Ok(serde_json::to_value(out).unwrap_or(Value::Null))
}
