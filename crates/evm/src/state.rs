//! World state: accounts and storage in persistent tries, contract code by hash, and the
//! revm `Database` view of one block's state.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_rlp::{Encodable, Header};
use revm::bytecode::Bytecode;
use revm::database::states::StateChangeset;
use revm::primitives::KECCAK_EMPTY;
use revm::state::AccountInfo;

use super::trie::{Trie, TrieValue};

/// One account as the state trie stores it.
#[derive(Clone, Debug)]
pub struct Account {
    pub nonce: u64,
    pub balance: U256,
    pub code_hash: B256,
    pub storage: Trie<U256>,
}

impl Account {
    pub fn info(&self) -> AccountInfo {
        AccountInfo {
            balance: self.balance,
            nonce: self.nonce,
            code_hash: self.code_hash,
            code: None,
            ..Default::default()
        }
    }
}

impl TrieValue for Account {
    fn encode_value(&self, out: &mut Vec<u8>) {
        let root = self.storage.root();
        let payload =
            self.nonce.length() + self.balance.length() + root.length() + self.code_hash.length();
        Header {
            list: true,
            payload_length: payload,
        }
        .encode(out);
        self.nonce.encode(out);
        self.balance.encode(out);
        root.encode(out);
        self.code_hash.encode(out);
    }
}

/// Contract code by hash, shared by every snapshot (content-addressed, never changes).
#[derive(Clone, Default)]
pub struct CodeStore(Arc<RwLock<HashMap<B256, Bytecode>>>);

impl CodeStore {
    pub fn get(&self, hash: &B256) -> Option<Bytecode> {
        if *hash == KECCAK_EMPTY {
            return Some(Bytecode::default());
        }
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
            .cloned()
    }
    pub fn insert(&self, hash: B256, code: Bytecode) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, code);
    }
}

/// The state after one block. Cloning is O(1); updates share untouched nodes.
#[derive(Clone, Default, Debug)]
pub struct WorldState {
    accounts: Trie<Account>,
}

impl WorldState {
    pub fn account(&self, address: &Address) -> Option<&Account> {
        self.accounts.get(&keccak256(address))
    }

    pub fn storage(&self, address: &Address, slot: &U256) -> U256 {
        self.account(address)
            .and_then(|a| a.storage.get(&keccak256(slot.to_be_bytes::<32>())).copied())
            .unwrap_or_default()
    }

    pub fn root(&self) -> B256 {
        self.accounts.root()
    }

    /// Put an account with its whole storage (genesis, fixtures).
    pub fn put(
        &mut self,
        address: Address,
        nonce: u64,
        balance: U256,
        code_hash: B256,
        storage: &[(U256, U256)],
    ) {
        let mut st = Trie::default();
        for (k, v) in storage {
            if !v.is_zero() {
                st.insert(&keccak256(k.to_be_bytes::<32>()), *v);
            }
        }
        self.accounts.insert(
            &keccak256(address),
            Account {
                nonce,
                balance,
                code_hash,
                storage: st,
            },
        );
    }

    /// Put an account under its hashed address (a store being read back).
    pub fn put_hashed(&mut self, key: B256, account: Account) {
        self.accounts.insert(&key, account);
    }

    /// Accounts (by hashed address) that may differ from `older`, with both versions; see
    /// [`Trie::diff`].
    pub fn diff<'a>(
        &'a self,
        older: &'a WorldState,
        f: &mut dyn FnMut(B256, Option<&'a Account>, Option<&'a Account>),
    ) {
        self.accounts.diff(&older.accounts, f);
    }

    /// Apply the changes of executing one block.
    pub fn apply(&mut self, changes: &StateChangeset, codes: &CodeStore) {
        for (hash, code) in &changes.contracts {
            codes.insert(*hash, code.clone());
        }
        let mut storage: HashMap<Address, (bool, Vec<(U256, U256)>)> = HashMap::new();
        for s in &changes.storage {
            storage.insert(s.address, (s.wipe_storage, s.storage.clone()));
        }
        // Accounts whose info changed (None: destroyed).
        let mut done = std::collections::HashSet::new();
        for (address, info) in &changes.accounts {
            done.insert(*address);
            let key = keccak256(address);
            match info {
                None => self.accounts.remove(&key),
                Some(info) => {
                    let mut acct = self.accounts.get(&key).cloned().unwrap_or(Account {
                        nonce: 0,
                        balance: U256::ZERO,
                        code_hash: KECCAK_EMPTY,
                        storage: Trie::default(),
                    });
                    acct.nonce = info.nonce;
                    acct.balance = info.balance;
                    acct.code_hash = info.code_hash;
                    if let Some((wipe, slots)) = storage.get(address) {
                        apply_slots(&mut acct.storage, *wipe, slots);
                    }
                    self.accounts.insert(&key, acct);
                }
            }
        }
        // Storage-only changes.
        for (address, (wipe, slots)) in &storage {
            if done.contains(address) {
                continue;
            }
            let key = keccak256(address);
            if let Some(acct) = self.accounts.get(&key) {
                let mut acct = acct.clone();
                apply_slots(&mut acct.storage, *wipe, slots);
                self.accounts.insert(&key, acct);
            }
        }
    }
}

fn apply_slots(trie: &mut Trie<U256>, wipe: bool, slots: &[(U256, U256)]) {
    if wipe {
        *trie = Trie::default();
    }
    for (k, v) in slots {
        let key = keccak256(k.to_be_bytes::<32>());
        if v.is_zero() {
            trie.remove(&key);
        } else {
            trie.insert(&key, *v);
        }
    }
}

/// revm's view of one snapshot plus the block hashes of the branch being executed.
pub struct StateView<'a> {
    /// The snapshot executed on.
    pub state: &'a WorldState,
    pub codes: &'a CodeStore,
    pub block_hash: &'a dyn Fn(u64) -> Option<B256>,
}

impl std::fmt::Debug for StateView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("root", &self.state.root())
            .finish()
    }
}

impl revm::Database for StateView<'_> {
    type Error = Infallible;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, Self::Error> {
        Ok(self.state.account(&address).map(|a| {
            let mut info = a.info();
            info.code = self.codes.get(&a.code_hash);
            info
        }))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, Self::Error> {
        Ok(self.codes.get(&code_hash).unwrap_or_default())
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, Self::Error> {
        Ok(self.state.storage(&address, &index))
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, Self::Error> {
        Ok((self.block_hash)(number).unwrap_or_default())
    }
}
