//! System calls with the gas the forks the engine runs give them.
//!
//! revm 43 runs every system call (EIP-4788, EIP-2935, EIP-7002, EIP-7251) with
//! `SYSTEM_CALL_GAS_LIMIT` = 30,000,000 plus an EIP-8037 state-gas reservoir, a
//! Glamsterdam rule, whatever the fork — and before Glamsterdam all of it is usable as
//! regular gas. Up to Osaka a system call has exactly 30,000,000: a call that used more
//! would have run out of gas. [`SpecSystemCalls`] wraps the EVM and turns such a result
//! into the out-of-gas halt it would have been, with no state change: a request
//! contract's (EIP-7002/7251) failure then makes the block invalid, as the spec says;
//! the beacon-root and block-hash calls' failures are ignored, as the spec says.
//!
//! What it cannot see: a contract that reads `GAS` and takes a cheaper path with the
//! larger budget than it would with 30M. The system contracts of real chains use a few
//! hundred thousand gas and read no `GAS`.

use alloy_evm::{Evm, EvmEnv};
use alloy_primitives::{Address, Bytes};
use revm::context::result::{
    ExecutionResult, HaltReason, OutOfGasError, ResultAndState, ResultGas,
};
use revm::context::CfgEnv;

/// Gas of a system call up to Osaka (EIP-4788, EIP-2935, EIP-7002, EIP-7251).
pub const SYSTEM_CALL_GAS: u64 = 30_000_000;

/// An EVM whose system calls have [`SYSTEM_CALL_GAS`]; everything else is the inner
/// EVM's.
pub struct SpecSystemCalls<E>(pub E);

impl<E> Evm for SpecSystemCalls<E>
where
    E: Evm<HaltReason = HaltReason>,
{
    type DB = E::DB;
    type Tx = E::Tx;
    type Error = E::Error;
    type HaltReason = E::HaltReason;
    type Spec = E::Spec;
    type BlockEnv = E::BlockEnv;
    type Precompiles = E::Precompiles;
    type Inspector = E::Inspector;

    fn block(&self) -> &Self::BlockEnv {
        self.0.block()
    }

    fn cfg_env(&self) -> &CfgEnv<Self::Spec> {
        self.0.cfg_env()
    }

    fn chain_id(&self) -> u64 {
        self.0.chain_id()
    }

    fn transact_raw(
        &mut self,
        tx: Self::Tx,
    ) -> Result<ResultAndState<Self::HaltReason>, Self::Error> {
        self.0.transact_raw(tx)
    }

    fn transact_system_call(
        &mut self,
        caller: Address,
        contract: Address,
        data: Bytes,
    ) -> Result<ResultAndState<Self::HaltReason>, Self::Error> {
        let out = self.0.transact_system_call(caller, contract, data)?;
        Ok(within_system_gas(out))
    }

    fn finish(self) -> (Self::DB, EvmEnv<Self::Spec, Self::BlockEnv>) {
        self.0.finish()
    }

    fn set_inspector_enabled(&mut self, enabled: bool) {
        self.0.set_inspector_enabled(enabled)
    }

    fn components(&self) -> (&Self::DB, &Self::Inspector, &Self::Precompiles) {
        self.0.components()
    }

    fn components_mut(&mut self) -> (&mut Self::DB, &mut Self::Inspector, &mut Self::Precompiles) {
        self.0.components_mut()
    }
}

/// A system call's result as it is with [`SYSTEM_CALL_GAS`]: one that used more ran out
/// of gas (nothing it changed stays).
pub fn within_system_gas(out: ResultAndState<HaltReason>) -> ResultAndState<HaltReason> {
    let used = match &out.result {
        ExecutionResult::Success { gas, .. }
        | ExecutionResult::Revert { gas, .. }
        | ExecutionResult::Halt { gas, .. } => gas.total_gas_spent(),
    };
    if used <= SYSTEM_CALL_GAS {
        return out;
    }
    tracing::debug!(used, "system call over 30M gas: out of gas");
    ResultAndState {
        result: ExecutionResult::Halt {
            reason: HaltReason::OutOfGas(OutOfGasError::Basic),
            gas: ResultGas::default().with_total_gas_spent(SYSTEM_CALL_GAS),
            logs: Vec::new(),
        },
        state: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revm::context::result::{Output, SuccessReason};

    fn success(gas: u64) -> ResultAndState<HaltReason> {
        ResultAndState {
            result: ExecutionResult::Success {
                reason: SuccessReason::Stop,
                gas: ResultGas::default().with_total_gas_spent(gas),
                logs: Vec::new(),
                output: Output::Call(Bytes::new()),
            },
            state: Default::default(),
        }
    }

    #[test]
    fn a_system_call_over_30m_gas_ran_out_of_gas() {
        assert!(matches!(
            within_system_gas(success(SYSTEM_CALL_GAS)).result,
            ExecutionResult::Success { .. }
        ));
        assert!(matches!(
            within_system_gas(success(SYSTEM_CALL_GAS + 1)).result,
            ExecutionResult::Halt {
                reason: HaltReason::OutOfGas(_),
                ..
            }
        ));
    }
}
