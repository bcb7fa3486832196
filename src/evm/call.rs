//! Read-only execution for `eth_call` / `eth_estimateGas`, and `eth_getLogs`.

use alloy_eips::BlockNumberOrTag;
use alloy_evm::{EthEvmFactory, Evm, EvmEnv, EvmFactory};
use alloy_primitives::{Bytes, U256};
use alloy_rpc_types_eth::{Filter, TransactionRequest};
use revm::context::TxEnv;
use revm::context_interface::result::ExecutionResult;
use revm::database::State;
use serde_json::{json, Value};

use super::chain::Chain;
use super::exec::ExecutedBlock;
use super::rpc::RpcError;
use super::state::StateView;

/// Widest block range one `eth_getLogs` may scan.
pub const MAX_LOG_RANGE: u64 = 10_000;

pub struct Simulator<'a> {
    pub chain: &'a Chain,
    pub block: &'a ExecutedBlock,
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
            state: &self.block.state,
            codes: &self.chain.codes,
            block_hash: &ancestors,
        };
        let mut evm =
            EthEvmFactory::default().create_evm(State::builder().with_database(view).build(), env);
        let tx = TxEnv {
            tx_type: if req.max_fee_per_gas.is_some() { 2 } else { 0 },
            caller,
            gas_limit: gas,
            gas_price,
            gas_priority_fee: req.max_priority_fee_per_gas,
            kind: super::rpc::call_kind(req),
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
            .cloned()
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
        (from..=to)
            .filter_map(|n| chain.canonical(n).cloned())
            .collect()
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
                    out.push(super::rpc::rpc_log(&b, i, index, l));
                }
                index += 1;
            }
        }
    }
    Ok(serde_json::to_value(out).unwrap_or(Value::Null))
}
