//! What each signature of the network covers, and the ed25519 signing provider that
//! Malachite signs and verifies votes, proposals, proposal parts and vote extensions with.
//!
//! Every signature is domain-separated by the network's consensus genesis hash, so a node
//! started from a different genesis can neither forge nor count votes of this network.

use alloy_primitives::{keccak256, B256};
use bytes::Bytes;
use malachitebft_app_channel::app::types::core::{
    NilOrVal, Round, SignedMessage, SigningProvider, VoteType,
};
use malachitebft_signing_ed25519::{PrivateKey, PublicKey, Signature};

use super::codec::encode_part;
use super::types::{Address, BlockHash, Ctx, Height, Proposal, ProposalPart, Vote};

/// What a vote's signature covers: never its extension (certificates are checked against
/// votes rebuilt without one).
pub fn vote_sign_bytes(domain: &B256, v: &Vote) -> Vec<u8> {
    let mut b = Vec::with_capacity(110);
    b.extend_from_slice(b"chainctl/vote");
    b.extend_from_slice(domain.as_slice());
    b.push(match v.vote_type {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    });
    b.extend_from_slice(&v.height.0.to_be_bytes());
    b.extend_from_slice(&v.round.as_i64().to_be_bytes());
    match &v.value {
        NilOrVal::Nil => b.push(0),
        NilOrVal::Val(id) => {
            b.push(1);
            b.extend_from_slice(id.0.as_slice());
        }
    }
    b.extend_from_slice(&v.validator.0);
    b
}

fn proposal_sign_bytes(domain: &B256, p: &Proposal) -> Vec<u8> {
    let mut b = Vec::with_capacity(120);
    b.extend_from_slice(b"chainctl/proposal");
    b.extend_from_slice(domain.as_slice());
    b.extend_from_slice(&p.height.0.to_be_bytes());
    b.extend_from_slice(&p.round.as_i64().to_be_bytes());
    b.extend_from_slice(&p.pol_round.as_i64().to_be_bytes());
    b.extend_from_slice(p.value.id.0.as_slice());
    b.extend_from_slice(&p.proposer.0);
    b
}

/// The digest a proposer signs in `Fin`: the stream's header and every data chunk.
pub fn parts_digest(
    domain: &B256,
    height: Height,
    round: Round,
    pol_round: Round,
    proposer: &Address,
    id: &BlockHash,
    data: &[u8],
) -> B256 {
    let mut b = Vec::with_capacity(150 + data.len());
    b.extend_from_slice(b"chainctl/parts");
    b.extend_from_slice(domain.as_slice());
    b.extend_from_slice(&height.0.to_be_bytes());
    b.extend_from_slice(&round.as_i64().to_be_bytes());
    b.extend_from_slice(&pol_round.as_i64().to_be_bytes());
    b.extend_from_slice(&proposer.0);
    b.extend_from_slice(id.0.as_slice());
    b.extend_from_slice(data);
    keccak256(b)
}

/// The ed25519 signing provider of one validator.
pub struct Signer {
    pub key: PrivateKey,
    pub domain: B256,
    /// No valid signature at a height at or below this (see
    /// [`chainctl_common::validator::SignFloor`]).
    pub floor: u64,
}

impl Signer {
    /// The signature of `bytes` for a message at `height`: below the floor, a signature
    /// of a refusal instead, which verifies for no message, so what leaves this node
    /// there counts for nothing (Malachite's signing cannot fail).
    fn sign_at(&self, height: Height, bytes: &[u8]) -> Signature {
        if height.0 <= self.floor {
            tracing::warn!(
                height = height.0,
                floor = self.floor,
                "not signing at or below the signing floor (this key signed these heights before its state was restored)"
            );
            let mut refused = b"chainctl/refused".to_vec();
            refused.extend_from_slice(self.domain.as_slice());
            refused.extend_from_slice(&height.0.to_be_bytes());
            return self.key.sign(&refused);
        }
        self.key.sign(bytes)
    }
}

fn ext_bytes(domain: &B256, e: &Bytes) -> Vec<u8> {
    let mut b = b"chainctl/ext".to_vec();
    b.extend_from_slice(domain.as_slice());
    b.extend_from_slice(e);
    b
}

impl SigningProvider<Ctx> for Signer {
    fn sign_vote(&self, vote: Vote) -> SignedMessage<Ctx, Vote> {
        let s = self.sign_at(vote.height, &vote_sign_bytes(&self.domain, &vote));
        SignedMessage::new(vote, s)
    }
    fn verify_signed_vote(&self, vote: &Vote, sig: &Signature, key: &PublicKey) -> bool {
        key.verify(&vote_sign_bytes(&self.domain, vote), sig)
            .is_ok()
    }
    fn sign_proposal(&self, p: Proposal) -> SignedMessage<Ctx, Proposal> {
        let s = self.sign_at(p.height, &proposal_sign_bytes(&self.domain, &p));
        SignedMessage::new(p, s)
    }
    fn verify_signed_proposal(&self, p: &Proposal, sig: &Signature, key: &PublicKey) -> bool {
        key.verify(&proposal_sign_bytes(&self.domain, p), sig)
            .is_ok()
    }
    fn sign_proposal_part(&self, part: ProposalPart) -> SignedMessage<Ctx, ProposalPart> {
        let s = match &part {
            ProposalPart::Init { height, .. } => {
                self.sign_at(*height, &part_bytes(&self.domain, &part))
            }
            _ => self.key.sign(&part_bytes(&self.domain, &part)),
        };
        SignedMessage::new(part, s)
    }
    fn verify_signed_proposal_part(
        &self,
        part: &ProposalPart,
        sig: &Signature,
        key: &PublicKey,
    ) -> bool {
        key.verify(&part_bytes(&self.domain, part), sig).is_ok()
    }
    fn sign_vote_extension(&self, e: Bytes) -> SignedMessage<Ctx, Bytes> {
        let s = self.key.sign(&ext_bytes(&self.domain, &e));
        SignedMessage::new(e, s)
    }
    fn verify_signed_vote_extension(&self, e: &Bytes, sig: &Signature, key: &PublicKey) -> bool {
        key.verify(&ext_bytes(&self.domain, e), sig).is_ok()
    }
}

fn part_bytes(domain: &B256, part: &ProposalPart) -> Vec<u8> {
    let mut b = b"chainctl/part".to_vec();
    b.extend_from_slice(domain.as_slice());
    b.extend_from_slice(&encode_part(part));
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Ctx;
    use malachitebft_app_channel::app::types::core::Context;

    #[test]
    fn nothing_at_or_below_the_floor_verifies() {
        let key = PrivateKey::from([7; 32]);
        let signer = Signer {
            key: key.clone(),
            domain: B256::repeat_byte(3),
            floor: 10,
        };
        let ctx = Ctx {
            domain: signer.domain,
        };
        let me = Address::of(&key.public_key());
        let id = BlockHash(B256::repeat_byte(1));
        for (h, valid) in [(9, false), (10, false), (11, true)] {
            for vote in [
                ctx.new_prevote(Height(h), Round::new(0), NilOrVal::Nil, me),
                ctx.new_precommit(Height(h), Round::new(0), NilOrVal::Val(id), me),
            ] {
                let signed = signer.sign_vote(vote.clone());
                assert_eq!(
                    signer.verify_signed_vote(&vote, &signed.signature, &key.public_key()),
                    valid,
                    "height {h}"
                );
            }
        }
    }
}
