//! The Malachite context of our chain: heights, validators, values (execution payloads),
//! proposals, proposal parts and votes, and the ed25519 signing provider.
//!
//! Every signature is domain-separated by the network's consensus genesis hash, so a node
//! started from a different genesis can neither forge nor count votes of this network.

use std::fmt;

use alloy_primitives::{keccak256, B256};
use bytes::Bytes;
use malachitebft_app_channel::app::types::core::{
    self as core, NilOrVal, Round, SignedExtension, VoteType, VotingPower,
};
use malachitebft_signing_ed25519::{Ed25519, PublicKey, Signature};

/// A block height; height N decides execution block N.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl core::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);
    fn increment_by(&self, n: u64) -> Self {
        Height(self.0 + n)
    }
    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }
    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator address: the first 20 bytes of keccak256 of its ed25519 public key.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The address of a public key.
    pub fn of(key: &PublicKey) -> Self {
        let h = keccak256(key.as_bytes());
        let mut a = [0u8; 20];
        a.copy_from_slice(&h[..20]);
        Address(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl core::Address for Address {}

/// One validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub address: Address,
    pub public_key: PublicKey,
    pub voting_power: VotingPower,
}

impl core::Validator<Ctx> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }
    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
    fn voting_power(&self) -> VotingPower {
        self.voting_power
    }
}

/// The validator set, in genesis order (every node builds it from the same file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet(pub Vec<Validator>);

impl core::ValidatorSet<Ctx> for ValidatorSet {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn total_voting_power(&self) -> VotingPower {
        self.0.iter().map(|v| v.voting_power).sum()
    }
    fn get_by_address(&self, a: &Address) -> Option<&Validator> {
        self.0.iter().find(|v| &v.address == a)
    }
    fn get_by_index(&self, i: usize) -> Option<&Validator> {
        self.0.get(i)
    }
}

/// The consensus value: one execution payload, as the JSON params of
/// `engine_newPayloadV4` (`[payload, versionedHashes, parentBeaconBlockRoot, requests]`).
/// Its id is the execution block hash.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Value {
    pub id: BlockHash,
    pub params: Bytes,
}

impl core::Value for Value {
    type Id = BlockHash;
    fn id(&self) -> BlockHash {
        self.id
    }
}

/// An execution block hash, the id of a value.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlockHash(pub B256);

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A proposal (consensus signs it implicitly in parts-only mode; we sign it for completeness).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub value: Value,
    pub pol_round: Round,
    pub proposer: Address,
}

impl core::Proposal<Ctx> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &Value {
        &self.value
    }
    fn take_value(self) -> Value {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// A proposal streamed in parts: `Init`, one or more `Data` chunks, then `Fin` with the
/// proposer's signature over everything before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalPart {
    Init {
        height: Height,
        round: Round,
        pol_round: Round,
        proposer: Address,
        id: BlockHash,
    },
    Data(Bytes),
    Fin(Signature),
}

impl core::ProposalPart<Ctx> for ProposalPart {
    fn is_first(&self) -> bool {
        matches!(self, ProposalPart::Init { .. })
    }
    fn is_last(&self) -> bool {
        matches!(self, ProposalPart::Fin(_))
    }
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vote {
    pub vote_type: VoteType,
    pub height: Height,
    pub round: Round,
    pub value: NilOrVal<BlockHash>,
    pub validator: Address,
    pub extension: Option<SignedExtension<Ctx>>,
}

impl core::Vote<Ctx> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<BlockHash> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<BlockHash> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.vote_type
    }
    fn validator_address(&self) -> &Address {
        &self.validator
    }
    fn extension(&self) -> Option<&SignedExtension<Ctx>> {
        self.extension.as_ref()
    }
    fn take_extension(&mut self) -> Option<SignedExtension<Ctx>> {
        self.extension.take()
    }
    fn extend(self, extension: SignedExtension<Ctx>) -> Self {
        Vote {
            extension: Some(extension),
            ..self
        }
    }
}

/// Our Malachite context. `domain` is the consensus genesis hash.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub domain: B256,
}

impl core::Context for Ctx {
    type Address = Address;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Value = Value;
    type Vote = Vote;
    type Extension = Bytes;
    type SigningScheme = Ed25519;

    /// Round-robin over the set in genesis order, shifted by height, so that every
    /// validator proposes in turn and a failed proposer is skipped at the next round.
    fn select_proposer<'a>(
        &self,
        set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        let r = round.as_u32().unwrap_or(0) as u64;
        let i = (height.0.saturating_sub(1) + r) % set.0.len().max(1) as u64;
        &set.0[i as usize]
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: Value,
        pol_round: Round,
        proposer: Address,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<BlockHash>,
        validator: Address,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Prevote,
            height,
            round,
            value,
            validator,
            extension: None,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<BlockHash>,
        validator: Address,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Precommit,
            height,
            round,
            value,
            validator,
            extension: None,
        }
    }
}

pub use chainctl_common::validator::{Genesis, GenesisValidator};

/// The validator set of a genesis, checked.
pub fn validator_set(genesis: &Genesis) -> Result<ValidatorSet, String> {
    if genesis.validators.is_empty() {
        return Err("validators: the set is empty".into());
    }
    let mut out = Vec::with_capacity(genesis.validators.len());
    for (i, v) in genesis.validators.iter().enumerate() {
        let key = parse_public_key(&v.public_key)
            .map_err(|e| format!("validators[{i}] ({}).publicKey: {e}", v.name))?;
        if v.power == 0 {
            return Err(format!(
                "validators[{i}] ({}).power: must be at least 1",
                v.name
            ));
        }
        let address = Address::of(&key);
        if out.iter().any(|o: &Validator| o.address == address) {
            return Err(format!(
                "validators[{i}] ({}): the same key appears twice",
                v.name
            ));
        }
        out.push(Validator {
            address,
            public_key: key,
            voting_power: v.power,
        });
    }
    Ok(ValidatorSet(out))
}

/// Parse a hex ed25519 public key.
pub fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    let b = hex::decode(s.trim_start_matches("0x")).map_err(|e| format!("not hex: {e}"))?;
    let b: [u8; 32] = b
        .try_into()
        .map_err(|_| "an ed25519 public key is 32 bytes".to_string())?;
    // `PublicKey::from_bytes` panics on bytes that are not a curve point: check first.
    let key = ed25519_consensus::VerificationKey::try_from(b)
        .map_err(|_| "not a valid ed25519 public key (not a curve point)".to_string())?;
    Ok(PublicKey::new(key))
}
