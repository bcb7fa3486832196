//! The ERC-20 token the load generator deploys for `--kind erc20|mixed`.
//!
//! No Solidity compiler is needed: the contract is small enough to assemble here, and
//! every instruction is visible below. It implements the two functions a token transfer
//! load exercises, with the ABI and the event of ERC-20:
//! - `transfer(address to, uint256 amount) returns (bool)` (selector `0xa9059cbb`): moves
//!   `amount` from the caller to `to`, emits `Transfer(from, to, amount)`, returns true;
//!   reverts when the caller's balance is short.
//! - `balanceOf(address) returns (uint256)` (selector `0x70a08231`).
//!
//! Balances live at storage slot = the holder's address. The constructor credits
//! 2^200 tokens to each address appended to the init code (32-byte words), so every
//! sender of the load holds tokens without a funding transaction each.

use alloy_primitives::{keccak256, Address, Bytes, B256, U256};

/// `transfer(address,uint256)`.
pub const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `balanceOf(address)`.
pub const BALANCE_OF_SELECTOR: [u8; 4] = [0x70, 0xa0, 0x82, 0x31];
/// Gas limit of one token transfer: measured cost is 30–55 k (a fresh recipient slot).
pub const TRANSFER_GAS: u64 = 90_000;

/// Topic 0 of `Transfer(address,address,uint256)`.
pub fn transfer_topic() -> B256 {
    keccak256("Transfer(address,address,uint256)")
}

enum Item {
    Op(u8),
    Push(Vec<u8>),
    /// PUSH2 of a label's offset.
    Ref(&'static str),
    /// JUMPDEST, named.
    Label(&'static str),
}
use Item::*;

// Opcodes used below.
const STOP: u8 = 0x00;
const ADD: u8 = 0x01;
const SUB: u8 = 0x03;
const LT: u8 = 0x10;
const EQ: u8 = 0x14;
const ISZERO: u8 = 0x15;
const SHL: u8 = 0x1b;
const SHR: u8 = 0x1c;
const CALLER: u8 = 0x33;
const CALLDATALOAD: u8 = 0x35;
const CODESIZE: u8 = 0x38;
const CODECOPY: u8 = 0x39;
const POP: u8 = 0x50;
const MLOAD: u8 = 0x51;
const MSTORE: u8 = 0x52;
const SLOAD: u8 = 0x54;
const SSTORE: u8 = 0x55;
const JUMP: u8 = 0x56;
const JUMPI: u8 = 0x57;
const JUMPDEST: u8 = 0x5b;
const DUP1: u8 = 0x80;
const DUP2: u8 = 0x81;
const DUP3: u8 = 0x82;
const LOG3: u8 = 0xa3;
const RETURN: u8 = 0xf3;
const REVERT: u8 = 0xfd;

fn push(v: &[u8]) -> Item {
    Push(v.to_vec())
}

/// Assemble: labels become JUMPDESTs, references PUSH2 of their offsets (two passes;
/// every reference has the same width, so offsets are known after the first).
fn assemble(items: &[Item], base: usize) -> Vec<u8> {
    let mut labels = std::collections::HashMap::new();
    let mut pc = base;
    for it in items {
        match it {
            Op(_) => pc += 1,
            Push(v) => pc += 1 + v.len(),
            Ref(_) => pc += 3,
            Label(l) => {
                labels.insert(*l, pc);
                pc += 1;
            }
        }
    }
    let mut out = Vec::new();
    for it in items {
        match it {
            Op(o) => out.push(*o),
            Push(v) => {
                assert!((1..=32).contains(&v.len()), "push of {} bytes", v.len());
                out.push(0x5f + v.len() as u8);
                out.extend_from_slice(v);
            }
            Ref(l) => {
                let at = labels[l];
                out.push(0x61);
                out.extend_from_slice(&(at as u16).to_be_bytes());
            }
            Label(_) => out.push(JUMPDEST),
        }
    }
    out
}

/// The deployed code.
pub fn runtime() -> Vec<u8> {
    let topic = transfer_topic();
    assemble(
        &[
            // selector = calldata[0..4]
            push(&[0]),
            Op(CALLDATALOAD),
            push(&[0xe0]),
            Op(SHR),
            Op(DUP1),
            push(&TRANSFER_SELECTOR),
            Op(EQ),
            Ref("transfer"),
            Op(JUMPI),
            Op(DUP1),
            push(&BALANCE_OF_SELECTOR),
            Op(EQ),
            Ref("balance_of"),
            Op(JUMPI),
            Label("fail"),
            push(&[0]),
            Op(DUP1),
            Op(REVERT),
            // transfer(to, amount); stack: [selector]
            Label("transfer"),
            Op(POP),
            Op(CALLER),
            Op(SLOAD), // [bal]
            push(&[0x24]),
            Op(CALLDATALOAD), // [amount, bal]
            Op(DUP1),
            Op(DUP3),
            Op(LT), // bal < amount
            Ref("fail"),
            Op(JUMPI), // [amount, bal]
            Op(DUP1),
            Op(DUP3),
            Op(SUB), // [bal - amount, amount, bal]
            Op(CALLER),
            Op(SSTORE), // balance[caller] = bal - amount; [amount, bal]
            push(&[4]),
            Op(CALLDATALOAD), // [to, amount, bal]
            Op(DUP2),
            Op(DUP2),
            Op(SLOAD),
            Op(ADD), // [bal_to + amount, to, amount, bal]
            Op(DUP2),
            Op(SSTORE), // balance[to] += amount; [to, amount, bal]
            Op(DUP2),
            push(&[0]),
            Op(MSTORE), // mem[0..32] = amount
            Op(CALLER),
            Push(topic.to_vec()),
            push(&[0x20]),
            push(&[0]),
            Op(LOG3), // Transfer(caller, to, amount)
            push(&[1]),
            push(&[0]),
            Op(MSTORE),
            push(&[0x20]),
            push(&[0]),
            Op(RETURN),
            // balanceOf(holder); stack: [selector]
            Label("balance_of"),
            Op(POP),
            push(&[4]),
            Op(CALLDATALOAD),
            Op(SLOAD),
            push(&[0]),
            Op(MSTORE),
            push(&[0x20]),
            push(&[0]),
            Op(RETURN),
            Op(STOP),
        ],
        0,
    )
}

/// Init code that credits 2^200 tokens to each of `holders` and deploys [`runtime`].
pub fn init_code(holders: &[Address]) -> Bytes {
    let rt = runtime();
    let ctor = |rt_off: u16, args_off: u16| {
        assemble(
            &[
                // Copy the appended holder list to memory 0.
                push(&args_off.to_be_bytes()),
                Op(CODESIZE),
                Op(SUB), // [size]
                Op(DUP1),
                push(&args_off.to_be_bytes()),
                push(&[0]),
                Op(CODECOPY), // [size]
                push(&[0]),   // [p, size]
                Label("loop"),
                Op(DUP2),
                Op(DUP2),
                Op(LT), // p < size
                Op(ISZERO),
                Ref("done"),
                Op(JUMPI),
                push(&[1]),
                push(&[200]),
                Op(SHL), // [2^200, p, size]
                Op(DUP2),
                Op(MLOAD), // [holder, 2^200, p, size]
                Op(SSTORE),
                push(&[0x20]),
                Op(ADD),
                Ref("loop"),
                Op(JUMP),
                Label("done"),
                Op(POP),
                Op(POP),
                push(&(rt.len() as u16).to_be_bytes()),
                Op(DUP1),
                push(&rt_off.to_be_bytes()),
                push(&[0]),
                Op(CODECOPY),
                push(&[0]),
                Op(RETURN),
            ],
            0,
        )
    };
    // Every push above has a fixed width, so the constructor's length does not depend
    // on the offsets it contains.
    let len = ctor(0, 0).len();
    let mut code = ctor(len as u16, (len + rt.len()) as u16);
    code.extend_from_slice(&rt);
    for h in holders {
        code.extend_from_slice(B256::left_padding_from(h.as_slice()).as_slice());
    }
    code.into()
}

/// Call data of `transfer(to, amount)`.
pub fn transfer_call(to: Address, amount: U256) -> Bytes {
    let mut d = TRANSFER_SELECTOR.to_vec();
    d.extend_from_slice(B256::left_padding_from(to.as_slice()).as_slice());
    d.extend_from_slice(&amount.to_be_bytes::<32>());
    d.into()
}

/// Call data of `balanceOf(holder)`.
pub fn balance_of_call(holder: Address) -> Bytes {
    let mut d = BALANCE_OF_SELECTOR.to_vec();
    d.extend_from_slice(B256::left_padding_from(holder.as_slice()).as_slice());
    d.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_evm::{EthEvmFactory, Evm, EvmEnv, EvmFactory};
    use revm::context::TxEnv;
    use revm::context_interface::result::{ExecutionResult, Output};
    use revm::database::{CacheDB, EmptyDB};

    fn run(
        evm: &mut impl Evm<
            DB = CacheDB<EmptyDB>,
            Tx = TxEnv,
            HaltReason = revm::context_interface::result::HaltReason,
        >,
        from: Address,
        kind: TxKind,
        data: Bytes,
    ) -> ExecutionResult<revm::context_interface::result::HaltReason> {
        let tx = TxEnv {
            caller: from,
            gas_limit: 5_000_000,
            kind,
            data,
            ..Default::default()
        };
        evm.transact_commit(tx).unwrap()
    }

    fn balance(
        evm: &mut impl Evm<
            DB = CacheDB<EmptyDB>,
            Tx = TxEnv,
            HaltReason = revm::context_interface::result::HaltReason,
        >,
        token: Address,
        who: Address,
    ) -> U256 {
        match run(
            evm,
            Address::ZERO,
            TxKind::Call(token),
            balance_of_call(who),
        ) {
            ExecutionResult::Success { output, .. } => U256::from_be_slice(output.data()),
            other => panic!("balanceOf failed: {other:?}"),
        }
    }

    use alloy_primitives::TxKind;

    #[test]
    fn the_token_credits_holders_moves_balances_and_reverts_when_short() {
        let mut env = EvmEnv::default();
        env.cfg_env.disable_nonce_check = true;
        let mut evm = EthEvmFactory::default().create_evm(CacheDB::<EmptyDB>::default(), env);
        let (a, b, c) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
        );
        let token = match run(&mut evm, a, TxKind::Create, init_code(&[a, b])) {
            ExecutionResult::Success {
                output: Output::Create(code, Some(addr)),
                ..
            } => {
                assert_eq!(code.as_ref(), runtime().as_slice());
                addr
            }
            other => panic!("deployment failed: {other:?}"),
        };
        let supply = U256::from(1) << 200;
        assert_eq!(balance(&mut evm, token, a), supply);
        assert_eq!(balance(&mut evm, token, b), supply);
        assert_eq!(balance(&mut evm, token, c), U256::ZERO);

        // a → c: 5 tokens, a Transfer(a, c, 5) log, returns true.
        match run(
            &mut evm,
            a,
            TxKind::Call(token),
            transfer_call(c, U256::from(5)),
        ) {
            ExecutionResult::Success { output, logs, .. } => {
                assert_eq!(U256::from_be_slice(output.data()), U256::from(1));
                assert_eq!(logs.len(), 1);
                let t = logs[0].topics();
                assert_eq!(t[0], transfer_topic());
                assert_eq!(t[1], B256::left_padding_from(a.as_slice()));
                assert_eq!(t[2], B256::left_padding_from(c.as_slice()));
                assert_eq!(U256::from_be_slice(&logs[0].data.data), U256::from(5));
            }
            other => panic!("transfer failed: {other:?}"),
        }
        assert_eq!(balance(&mut evm, token, a), supply - U256::from(5));
        assert_eq!(balance(&mut evm, token, c), U256::from(5));
        // To oneself: unchanged.
        run(
            &mut evm,
            b,
            TxKind::Call(token),
            transfer_call(b, U256::from(7)),
        );
        assert_eq!(balance(&mut evm, token, b), supply);
        // c holds 5: sending 6 reverts and changes nothing.
        assert!(matches!(
            run(
                &mut evm,
                c,
                TxKind::Call(token),
                transfer_call(a, U256::from(6))
            ),
            ExecutionResult::Revert { .. }
        ));
        assert_eq!(balance(&mut evm, token, c), U256::from(5));
        // Unknown selector reverts.
        assert!(matches!(
            run(
                &mut evm,
                a,
                TxKind::Call(token),
                Bytes::from_static(&[1, 2, 3, 4])
            ),
            ExecutionResult::Revert { .. }
        ));
    }
}
