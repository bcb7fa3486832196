//! The wire and WAL encoding of consensus messages: a small length-prefixed binary format
//! (big-endian integers, tagged enums, length-prefixed byte strings). Decoding never
//! panics: every malformed input is an error that says what was wrong.

use bytes::Bytes;
use malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::codec::Codec;
use malachitebft_app_channel::app::types::core::{
    CommitCertificate, CommitSignature, NilOrVal, PolkaCertificate, PolkaSignature, Round,
    RoundCertificate, RoundCertificateType, RoundSignature, SignedMessage, Validity, VoteType,
};
use malachitebft_app_channel::app::types::sync::{RawDecidedValue, Request, Response, Status};
use malachitebft_app_channel::app::types::PeerId;
use malachitebft_signing_ed25519::Signature;
use malachitebft_sync::{ValueRequest, ValueResponse};

use super::types::{Address, BlockHash, Ctx, Height, Proposal, ProposalPart, Value, Vote};

/// A decoding failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {why}")]
pub struct CodecError {
    what: &'static str,
    why: String,
}

/// Largest byte string we accept inside a message (a whole value: 64 MiB).
const MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn round(&mut self, r: Round) -> &mut Self {
        self.0.extend_from_slice(&r.as_i64().to_be_bytes());
        self
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64).raw(b)
    }
    fn addr(&mut self, a: &Address) -> &mut Self {
        self.raw(&a.0)
    }
    fn sig(&mut self, s: &Signature) -> &mut Self {
        self.raw(&s.to_bytes())
    }
    fn id(&mut self, id: &BlockHash) -> &mut Self {
        self.raw(id.0.as_slice())
    }
    fn nil_or(&mut self, v: &NilOrVal<BlockHash>) -> &mut Self {
        match v {
            NilOrVal::Nil => self.u8(0),
            NilOrVal::Val(id) => self.u8(1).id(id),
        }
    }
    fn vote_type(&mut self, t: VoteType) -> &mut Self {
        self.u8(match t {
            VoteType::Prevote => 0,
            VoteType::Precommit => 1,
        })
    }
    fn done(self) -> Bytes {
        Bytes::from(self.0)
    }
}

struct R<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> R<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        R { b, what }
    }
    fn err(&self, why: impl Into<String>) -> CodecError {
        CodecError {
            what: self.what,
            why: why.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.b.len() < n {
            return Err(self.err(format!(
                "truncated: wanted {n} more bytes, {} left",
                self.b.len()
            )));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn round(&mut self) -> Result<Round, CodecError> {
        let v = i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
        match v {
            -1 => Ok(Round::Nil),
            0..=0xffff_ffff => Ok(Round::new(v as u32)),
            _ => Err(self.err(format!("round {v} out of range"))),
        }
    }
    fn bytes(&mut self) -> Result<Bytes, CodecError> {
        let n = self.u64()?;
        if n as usize > MAX_BYTES {
            return Err(self.err(format!("byte string of {n} bytes exceeds {MAX_BYTES}")));
        }
        Ok(Bytes::copy_from_slice(self.take(n as usize)?))
    }
    fn count(&mut self, max: usize) -> Result<usize, CodecError> {
        let n = self.u64()?;
        if n as usize > max {
            return Err(self.err(format!("list of {n} entries exceeds {max}")));
        }
        Ok(n as usize)
    }
    fn addr(&mut self) -> Result<Address, CodecError> {
        Ok(Address(self.take(20)?.try_into().expect("20 bytes")))
    }
    fn sig(&mut self) -> Result<Signature, CodecError> {
        Ok(Signature::from_bytes(
            self.take(64)?.try_into().expect("64 bytes"),
        ))
    }
    fn id(&mut self) -> Result<BlockHash, CodecError> {
        Ok(BlockHash(alloy_primitives::B256::from_slice(
            self.take(32)?,
        )))
    }
    fn nil_or(&mut self) -> Result<NilOrVal<BlockHash>, CodecError> {
        match self.u8()? {
            0 => Ok(NilOrVal::Nil),
            1 => Ok(NilOrVal::Val(self.id()?)),
            t => Err(self.err(format!("bad nil/value tag {t}"))),
        }
    }
    fn vote_type(&mut self) -> Result<VoteType, CodecError> {
        match self.u8()? {
            0 => Ok(VoteType::Prevote),
            1 => Ok(VoteType::Precommit),
            t => Err(self.err(format!("bad vote type {t}"))),
        }
    }
    fn end<T>(&self, v: T) -> Result<T, CodecError> {
        if self.b.is_empty() {
            Ok(v)
        } else {
            Err(self.err(format!("{} trailing bytes", self.b.len())))
        }
    }
}

const MAX_SIGS: usize = 10_000;

fn put_vote(w: &mut W, v: &SignedMessage<Ctx, Vote>) {
    w.vote_type(v.vote_type)
        .u64(v.height.0)
        .round(v.round)
        .nil_or(&v.value)
        .addr(&v.validator)
        .sig(&v.signature);
    match &v.extension {
        None => w.u8(0),
        Some(e) => w.u8(1).bytes(&e.message).sig(&e.signature),
    };
}

fn get_vote(r: &mut R) -> Result<SignedMessage<Ctx, Vote>, CodecError> {
    let vote_type = r.vote_type()?;
    let height = Height(r.u64()?);
    let round = r.round()?;
    let value = r.nil_or()?;
    let validator = r.addr()?;
    let signature = r.sig()?;
    let extension = match r.u8()? {
        0 => None,
        1 => {
            let m = r.bytes()?;
            Some(SignedMessage::new(m, r.sig()?))
        }
        t => return Err(r.err(format!("bad extension tag {t}"))),
    };
    Ok(SignedMessage::new(
        Vote {
            vote_type,
            height,
            round,
            value,
            validator,
            extension,
        },
        signature,
    ))
}

fn put_value(w: &mut W, v: &Value) {
    w.id(&v.id).bytes(&v.params);
}

fn get_value(r: &mut R) -> Result<Value, CodecError> {
    let id = r.id()?;
    Ok(Value {
        id,
        params: r.bytes()?,
    })
}

/// Encode a proposal part (also what a part signature covers).
pub fn encode_part(p: &ProposalPart) -> Vec<u8> {
    let mut w = W::default();
    put_part(&mut w, p);
    w.0
}

fn put_part(w: &mut W, p: &ProposalPart) {
    match p {
        ProposalPart::Init {
            height,
            round,
            pol_round,
            proposer,
            id,
        } => {
            w.u8(0)
                .u64(height.0)
                .round(*round)
                .round(*pol_round)
                .addr(proposer)
                .id(id);
        }
        ProposalPart::Data(b) => {
            w.u8(1).bytes(b);
        }
        ProposalPart::Fin(s) => {
            w.u8(2).sig(s);
        }
    }
}

fn get_part(r: &mut R) -> Result<ProposalPart, CodecError> {
    Ok(match r.u8()? {
        0 => ProposalPart::Init {
            height: Height(r.u64()?),
            round: r.round()?,
            pol_round: r.round()?,
            proposer: r.addr()?,
            id: r.id()?,
        },
        1 => ProposalPart::Data(r.bytes()?),
        2 => ProposalPart::Fin(r.sig()?),
        t => return Err(r.err(format!("bad proposal part tag {t}"))),
    })
}

fn put_cert(w: &mut W, c: &CommitCertificate<Ctx>) {
    w.u64(c.height.0)
        .round(c.round)
        .id(&c.value_id)
        .u64(c.commit_signatures.len() as u64);
    for s in &c.commit_signatures {
        w.addr(&s.address).sig(&s.signature);
    }
}

fn get_cert(r: &mut R) -> Result<CommitCertificate<Ctx>, CodecError> {
    let height = Height(r.u64()?);
    let round = r.round()?;
    let value_id = r.id()?;
    let n = r.count(MAX_SIGS)?;
    let mut commit_signatures = Vec::with_capacity(n);
    for _ in 0..n {
        let a = r.addr()?;
        commit_signatures.push(CommitSignature::new(a, r.sig()?));
    }
    Ok(CommitCertificate {
        height,
        round,
        value_id,
        commit_signatures,
    })
}

/// Encode a commit certificate (the decided-block store keeps them).
pub fn encode_cert(c: &CommitCertificate<Ctx>) -> Bytes {
    let mut w = W::default();
    put_cert(&mut w, c);
    w.done()
}

/// Decode a commit certificate.
pub fn decode_cert(b: &[u8]) -> Result<CommitCertificate<Ctx>, CodecError> {
    let mut r = R::new(b, "commit certificate");
    let c = get_cert(&mut r)?;
    r.end(c)
}

/// The codec for the network, the WAL and sync.
#[derive(Clone, Copy, Debug, Default)]
pub struct WireCodec;

macro_rules! codec {
    ($t:ty, $what:literal, |$w:ident, $m:ident| $enc:block, |$r:ident| $dec:block) => {
        impl Codec<$t> for WireCodec {
            type Error = CodecError;
            fn encode(&self, $m: &$t) -> Result<Bytes, CodecError> {
                let mut $w = W::default();
                $enc;
                Ok($w.done())
            }
            fn decode(&self, b: Bytes) -> Result<$t, CodecError> {
                let $r = &mut R::new(&b, $what);
                let v: $t = $dec;
                $r.end(v)
            }
        }
    };
}

codec!(
    ProposalPart,
    "proposal part",
    |w, m| { put_part(&mut w, m) },
    |r| { get_part(r)? }
);

codec!(
    SignedConsensusMsg<Ctx>,
    "consensus message",
    |w, m| {
        match m {
            SignedConsensusMsg::Vote(v) => {
                w.u8(0);
                put_vote(&mut w, v);
            }
            SignedConsensusMsg::Proposal(p) => {
                w.u8(1)
                    .u64(p.height.0)
                    .round(p.round)
                    .round(p.pol_round)
                    .addr(&p.proposer);
                put_value(&mut w, &p.value);
                w.sig(&p.signature);
            }
        }
    },
    |r| {
        match r.u8()? {
            0 => SignedConsensusMsg::Vote(get_vote(r)?),
            1 => {
                let height = Height(r.u64()?);
                let round = r.round()?;
                let pol_round = r.round()?;
                let proposer = r.addr()?;
                let value = get_value(r)?;
                let sig = r.sig()?;
                SignedConsensusMsg::Proposal(SignedMessage::new(
                    Proposal {
                        height,
                        round,
                        value,
                        pol_round,
                        proposer,
                    },
                    sig,
                ))
            }
            t => return Err(r.err(format!("bad message tag {t}"))),
        }
    }
);

codec!(
    LivenessMsg<Ctx>,
    "liveness message",
    |w, m| {
        match m {
            LivenessMsg::Vote(v) => {
                w.u8(0);
                put_vote(&mut w, v);
            }
            LivenessMsg::PolkaCertificate(c) => {
                w.u8(1)
                    .u64(c.height.0)
                    .round(c.round)
                    .id(&c.value_id)
                    .u64(c.polka_signatures.len() as u64);
                for s in &c.polka_signatures {
                    w.addr(&s.address).sig(&s.signature);
                }
            }
            LivenessMsg::SkipRoundCertificate(c) => {
                w.u8(2)
                    .u64(c.height.0)
                    .round(c.round)
                    .u8(match c.cert_type {
                        RoundCertificateType::Skip => 0,
                        RoundCertificateType::Precommit => 1,
                    })
                    .u64(c.round_signatures.len() as u64);
                for s in &c.round_signatures {
                    w.vote_type(s.vote_type)
                        .nil_or(&s.value_id)
                        .addr(&s.address)
                        .sig(&s.signature);
                }
            }
        }
    },
    |r| {
        match r.u8()? {
            0 => LivenessMsg::Vote(get_vote(r)?),
            1 => {
                let height = Height(r.u64()?);
                let round = r.round()?;
                let value_id = r.id()?;
                let n = r.count(MAX_SIGS)?;
                let mut polka_signatures = Vec::with_capacity(n);
                for _ in 0..n {
                    let a = r.addr()?;
                    polka_signatures.push(PolkaSignature::new(a, r.sig()?));
                }
                LivenessMsg::PolkaCertificate(PolkaCertificate {
                    height,
                    round,
                    value_id,
                    polka_signatures,
                })
            }
            2 => {
                let height = Height(r.u64()?);
                let round = r.round()?;
                let cert_type = match r.u8()? {
                    0 => RoundCertificateType::Skip,
                    1 => RoundCertificateType::Precommit,
                    t => return Err(r.err(format!("bad round certificate type {t}"))),
                };
                let n = r.count(MAX_SIGS)?;
                let mut round_signatures = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = r.vote_type()?;
                    let v = r.nil_or()?;
                    let a = r.addr()?;
                    round_signatures.push(RoundSignature::new(t, v, a, r.sig()?));
                }
                LivenessMsg::SkipRoundCertificate(RoundCertificate {
                    height,
                    round,
                    cert_type,
                    round_signatures,
                })
            }
            t => return Err(r.err(format!("bad liveness tag {t}"))),
        }
    }
);

codec!(
    StreamMessage<ProposalPart>,
    "proposal stream message",
    |w, m| {
        w.bytes(&m.stream_id.to_bytes()).u64(m.sequence);
        match &m.content {
            StreamContent::Data(p) => {
                w.u8(0);
                put_part(&mut w, p);
            }
            StreamContent::Fin => {
                w.u8(1);
            }
        }
    },
    |r| {
        let id = StreamId::new(r.bytes()?);
        let seq = r.u64()?;
        let content = match r.u8()? {
            0 => StreamContent::Data(get_part(r)?),
            1 => StreamContent::Fin,
            t => return Err(r.err(format!("bad stream content tag {t}"))),
        };
        StreamMessage::new(id, seq, content)
    }
);

codec!(
    ProposedValue<Ctx>,
    "proposed value",
    |w, m| {
        w.u64(m.height.0)
            .round(m.round)
            .round(m.valid_round)
            .addr(&m.proposer)
            .u8(m.validity.is_valid() as u8);
        put_value(&mut w, &m.value);
    },
    |r| {
        let height = Height(r.u64()?);
        let round = r.round()?;
        let valid_round = r.round()?;
        let proposer = r.addr()?;
        let validity = Validity::from_bool(r.u8()? == 1);
        let value = get_value(r)?;
        ProposedValue {
            height,
            round,
            valid_round,
            proposer,
            value,
            validity,
        }
    }
);

codec!(
    Status<Ctx>,
    "sync status",
    |w, m| {
        w.bytes(&m.peer_id.to_bytes())
            .u64(m.tip_height.0)
            .u64(m.history_min_height.0);
    },
    |r| {
        let peer = r.bytes()?;
        let peer_id = PeerId::from_bytes(&peer).map_err(|e| r.err(format!("peer id: {e}")))?;
        Status {
            peer_id,
            tip_height: Height(r.u64()?),
            history_min_height: Height(r.u64()?),
        }
    }
);

codec!(
    Request<Ctx>,
    "sync request",
    |w, m| {
        match m {
            Request::ValueRequest(v) => {
                w.u8(0).u64(v.height.0);
            }
        }
    },
    |r| {
        match r.u8()? {
            0 => Request::ValueRequest(ValueRequest::new(Height(r.u64()?))),
            t => return Err(r.err(format!("bad request tag {t}"))),
        }
    }
);

codec!(
    Response<Ctx>,
    "sync response",
    |w, m| {
        match m {
            Response::ValueResponse(v) => {
                w.u8(0).u64(v.height.0);
                match &v.value {
                    None => {
                        w.u8(0);
                    }
                    Some(d) => {
                        w.u8(1).bytes(&d.value_bytes);
                        put_cert(&mut w, &d.certificate);
                    }
                }
            }
        }
    },
    |r| {
        match r.u8()? {
            0 => {
                let height = Height(r.u64()?);
                let value = match r.u8()? {
                    0 => None,
                    1 => {
                        let b = r.bytes()?;
                        Some(RawDecidedValue::new(b, get_cert(r)?))
                    }
                    t => return Err(r.err(format!("bad value tag {t}"))),
                };
                Response::ValueResponse(ValueResponse::new(height, value))
            }
            t => return Err(r.err(format!("bad response tag {t}"))),
        }
    }
);

/// Encode a value for sync and the store.
pub fn encode_value(v: &Value) -> Bytes {
    let mut w = W::default();
    put_value(&mut w, v);
    w.done()
}

/// Decode a value.
pub fn decode_value(b: &[u8]) -> Result<Value, CodecError> {
    let mut r = R::new(b, "value");
    let v = get_value(&mut r)?;
    r.end(v)
}

/// Decodes `b` as the message kind `kind` selects — each kind a peer, the WAL or sync
/// hands the decoder: proposal parts, consensus and liveness messages, proposal streams,
/// proposed values, sync status, requests and responses, commit certificates, values —
/// then re-encodes what decoded and decodes that again. The fuzz targets' entry
/// (`crates/fuzz`). `Err`: the decoder refused the bytes, as it must refuse a bad peer's
/// message (never panic). A re-encoding that does not decode is a bug, and panics.
pub fn decode_any(kind: u8, b: &[u8]) -> Result<(), CodecError> {
    fn again<T>(v: T)
    where
        WireCodec: Codec<T, Error = CodecError>,
    {
        let c = WireCodec;
        let e = c.encode(&v).expect("what decoded re-encodes");
        c.decode(e).expect("a re-encoded message decodes");
    }
    let c = WireCodec;
    let bytes = Bytes::copy_from_slice(b);
    match kind % 10 {
        0 => again::<ProposalPart>(c.decode(bytes)?),
        1 => again::<SignedConsensusMsg<Ctx>>(c.decode(bytes)?),
        2 => again::<LivenessMsg<Ctx>>(c.decode(bytes)?),
        3 => again::<StreamMessage<ProposalPart>>(c.decode(bytes)?),
        4 => again::<ProposedValue<Ctx>>(c.decode(bytes)?),
        5 => again::<Status<Ctx>>(c.decode(bytes)?),
        6 => again::<Request<Ctx>>(c.decode(bytes)?),
        7 => again::<Response<Ctx>>(c.decode(bytes)?),
        8 => {
            let cert = decode_cert(b)?;
            decode_cert(&encode_cert(&cert)).expect("a re-encoded certificate decodes");
        }
        _ => {
            let v = decode_value(b)?;
            decode_value(&encode_value(&v)).expect("a re-encoded value decodes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::B256;
    use malachitebft_signing_ed25519::PrivateKey;

    fn vote(t: VoteType, v: NilOrVal<BlockHash>) -> SignedMessage<Ctx, Vote> {
        let k = PrivateKey::from([3u8; 32]);
        SignedMessage::new(
            Vote {
                vote_type: t,
                height: Height(7),
                round: Round::new(2),
                value: v,
                validator: Address([9; 20]),
                extension: Some(SignedMessage::new(Bytes::from_static(b"ext"), k.sign(b"x"))),
            },
            k.sign(b"vote"),
        )
    }

    /// With `CHAINCTL_FUZZ_SEEDS=DIR`, each message of these tests is written to DIR as a
    /// seed of the `consensus_wire` fuzz target (its kind byte, then its encoding).
    fn seed<T>(b: &[u8]) {
        let Some(dir) = std::env::var_os("CHAINCTL_FUZZ_SEEDS") else {
            return;
        };
        let name = std::any::type_name::<T>();
        let outer = name.split('<').next().unwrap_or(name);
        let kinds = [
            "ProposalPart",
            "SignedConsensusMsg",
            "LivenessMsg",
            "StreamMessage",
            "ProposedValue",
            "Status",
            "Request",
            "Response",
        ];
        let Some(kind) = kinds.iter().position(|k| outer.ends_with(k)) else {
            return;
        };
        let mut data = vec![kind as u8];
        data.extend_from_slice(b);
        let h = alloy_primitives::keccak256(&data);
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{kind}-{}", hex::encode(&h[..8]))),
            data,
        )
        .unwrap();
    }

    fn round_trip<T: PartialEq + std::fmt::Debug>(v: T)
    where
        WireCodec: Codec<T>,
    {
        let b = WireCodec.encode(&v).unwrap();
        seed::<T>(&b);
        assert_eq!(WireCodec.decode(b.clone()).unwrap(), v);
        // Every truncation is an error, never a panic.
        for n in 0..b.len() {
            assert!(
                WireCodec.decode(b.slice(..n)).is_err(),
                "prefix {n} decoded"
            );
        }
        let mut longer = b.to_vec();
        longer.push(0);
        assert!(WireCodec.decode(Bytes::from(longer)).is_err());
    }

    #[test]
    fn every_message_round_trips_and_truncations_fail() {
        let id = BlockHash(B256::repeat_byte(0xab));
        let k = PrivateKey::from([5u8; 32]);
        round_trip(SignedConsensusMsg::<Ctx>::Vote(vote(
            VoteType::Prevote,
            NilOrVal::Val(id),
        )));
        round_trip(SignedConsensusMsg::<Ctx>::Vote(vote(
            VoteType::Precommit,
            NilOrVal::Nil,
        )));
        round_trip(SignedConsensusMsg::<Ctx>::Proposal(SignedMessage::new(
            Proposal {
                height: Height(3),
                round: Round::new(0),
                value: Value {
                    id,
                    params: Bytes::from_static(b"[1,2]"),
                },
                pol_round: Round::Nil,
                proposer: Address([1; 20]),
            },
            k.sign(b"p"),
        )));
        round_trip(LivenessMsg::<Ctx>::Vote(vote(
            VoteType::Prevote,
            NilOrVal::Nil,
        )));
        round_trip(LivenessMsg::<Ctx>::PolkaCertificate(PolkaCertificate {
            height: Height(4),
            round: Round::new(1),
            value_id: id,
            polka_signatures: vec![PolkaSignature::new(Address([2; 20]), k.sign(b"a"))],
        }));
        round_trip(LivenessMsg::<Ctx>::SkipRoundCertificate(RoundCertificate {
            height: Height(4),
            round: Round::new(1),
            cert_type: RoundCertificateType::Precommit,
            round_signatures: vec![RoundSignature::new(
                VoteType::Precommit,
                NilOrVal::Val(id),
                Address([2; 20]),
                k.sign(b"a"),
            )],
        }));
        for part in [
            ProposalPart::Init {
                height: Height(9),
                round: Round::new(0),
                pol_round: Round::Nil,
                proposer: Address([4; 20]),
                id,
            },
            ProposalPart::Data(Bytes::from_static(b"payload")),
            ProposalPart::Fin(k.sign(b"fin")),
        ] {
            round_trip(part.clone());
            round_trip(StreamMessage::new(
                StreamId::new(Bytes::from_static(b"s1")),
                3,
                StreamContent::Data(part),
            ));
        }
        round_trip(StreamMessage::<ProposalPart>::new(
            StreamId::new(Bytes::from_static(b"s1")),
            4,
            StreamContent::Fin,
        ));
        let cert = CommitCertificate::<Ctx> {
            height: Height(5),
            round: Round::new(0),
            value_id: id,
            commit_signatures: vec![CommitSignature::new(Address([6; 20]), k.sign(b"c"))],
        };
        round_trip(Response::<Ctx>::ValueResponse(ValueResponse::new(
            Height(5),
            Some(RawDecidedValue::new(Bytes::from_static(b"v"), cert.clone())),
        )));
        round_trip(Response::<Ctx>::ValueResponse(ValueResponse::new(
            Height(5),
            None,
        )));
        round_trip(Request::<Ctx>::ValueRequest(ValueRequest::new(Height(8))));
        assert_eq!(decode_cert(&encode_cert(&cert)).unwrap(), cert);
    }

    #[test]
    fn hostile_lengths_are_refused_without_allocating() {
        let mut b = vec![1u8]; // Data part
        b.extend_from_slice(&u64::MAX.to_be_bytes());
        let e = Codec::<ProposalPart>::decode(&WireCodec, Bytes::from(b)).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
    }
}
