//! Blob transactions (EIP-4844) as the pool receives them: the network form with its
//! sidecar, checked against the transaction's versioned hashes and the KZG proofs, in the
//! proof format of the fork the next block is in — one KZG proof per blob until Prague,
//! 128 cell proofs per blob from Osaka (EIP-7594) — and the bundles getPayload and
//! getBlobs answer with.

use std::sync::Arc;

use alloy_consensus::{
    transaction::SignerRecoverable, EthereumTxEnvelope, SignableTransaction, Transaction,
    TxEip4844Variant, TxEip4844WithSidecar, TxEnvelope,
};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_eips::eip4844::{
    env_settings::EnvKzgSettings, BlobAndProofV1, BlobAndProofV2, BYTES_PER_BLOB,
};
use alloy_eips::eip7594::{BlobTransactionSidecarVariant, CELLS_PER_EXT_BLOB};
use alloy_eips::eip7840::BlobParams;
use alloy_primitives::{Address, B256};
use alloy_rpc_types_engine::{BlobsBundleV1, BlobsBundleV2};

/// A blob transaction's sidecar: blobs, commitments and either one proof per blob
/// (version 0, until Prague) or `CELLS_PER_EXT_BLOB` cell proofs per blob (version 1, Osaka).
pub type Sidecar = BlobTransactionSidecarVariant;

/// Largest encoded transaction accepted without its blobs (as Geth and Reth: 128 KiB).
pub const MAX_TX_BYTES: usize = 128 * 1024;
/// Largest number of blobs a raw transaction may carry before it is decoded (the decoded
/// count is then held to the fork's per-transaction limit).
const MAX_RAW_BLOBS: usize = 16;
/// Largest raw blob transaction: the transaction, and per blob the blob, its commitment and
/// its cell proofs, with RLP headers.
pub const MAX_BLOB_TX_BYTES: usize =
    MAX_TX_BYTES + MAX_RAW_BLOBS * (BYTES_PER_BLOB + 48 * (CELLS_PER_EXT_BLOB + 1) + 64);

/// A raw transaction decoded and its signer recovered; a blob transaction carries the
/// sidecar it came with, not yet checked.
pub struct Decoded {
    pub tx: TxEnvelope,
    pub sender: Address,
    pub sidecar: Option<Sidecar>,
}

/// Decode a raw transaction as `eth_sendRawTransaction` receives it — a blob transaction in
/// its network form `0x03 || rlp([tx, (version,) blobs, commitments, proofs])` — and
/// recover its sender. The costly part of entry, which needs no lock.
pub fn decode_raw(raw: &[u8]) -> Result<Decoded, String> {
    let blob = raw.first() == Some(&0x03);
    let limit = if blob {
        MAX_BLOB_TX_BYTES
    } else {
        MAX_TX_BYTES
    };
    if raw.len() > limit {
        return Err(format!(
            "oversized data: transaction is {} bytes, at most {limit}",
            raw.len()
        ));
    }
    if !blob {
        let tx = TxEnvelope::decode_2718_exact(raw)
            .map_err(|e| format!("transaction does not decode: {e}"))?;
        let sender = tx
            .recover_signer()
            .map_err(|e| format!("invalid signature: {e}"))?;
        return Ok(Decoded {
            tx,
            sender,
            sidecar: None,
        });
    }
    let pooled = EthereumTxEnvelope::<TxEip4844WithSidecar<Sidecar>>::decode_2718_exact(raw)
        .map_err(|e| {
            format!(
                "blob transaction does not decode: {e} (send it in the network form \
                 0x03 || rlp([tx, blobs, commitments, proofs]), or for Osaka \
                 0x03 || rlp([tx, 1, blobs, commitments, cell_proofs]))"
            )
        })?;
    let sender = pooled
        .recover_signer()
        .map_err(|e| format!("invalid signature: {e}"))?;
    let EthereumTxEnvelope::Eip4844(signed) = pooled else {
        return Err("transaction does not decode: type 3 expected".into());
    };
    let (with_sidecar, sig, _) = signed.into_parts();
    let (tx, sidecar) = with_sidecar.into_parts();
    let tx: TxEnvelope =
        TxEip4844Variant::<alloy_eips::eip4844::BlobTransactionSidecar>::TxEip4844(tx)
            .into_signed(sig)
            .into();
    let size = tx.encode_2718_len();
    if size > MAX_TX_BYTES {
        return Err(format!(
            "oversized data: transaction is {size} bytes without its blobs, at most {MAX_TX_BYTES}"
        ));
    }
    Ok(Decoded {
        tx,
        sender,
        sidecar: Some(sidecar),
    })
}

/// The Ethereum KZG trusted setup (embedded in c-kzg, loaded on first use).
static KZG: EnvKzgSettings = EnvKzgSettings::Default;

fn kzg() -> &'static alloy_eips::eip4844::c_kzg::KzgSettings {
    KZG.get()
}

/// The blob-count rules of a block whose blob parameters are `params`: blobs only from
/// Cancun on, at least one, at most the fork's number per transaction.
pub fn check_count(count: usize, params: Option<BlobParams>) -> Result<(), String> {
    let Some(params) = params else {
        return Err("blob transactions are not accepted before Cancun".into());
    };
    if count == 0 {
        return Err("blob transaction with no blob versioned hashes".into());
    }
    if count as u64 > params.max_blobs_per_tx {
        return Err(format!(
            "too many blobs: {count} in the transaction, at most {} per transaction",
            params.max_blobs_per_tx
        ));
    }
    Ok(())
}

/// How `admit` treats the KZG proofs of a sidecar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Proofs {
    /// Verify them (a transaction from a user or a peer).
    Verify,
    /// Trust them: the pool's own journal, written after they were verified. The versioned
    /// hashes are still checked against the commitments (cheap), and an engine restarting
    /// does not load the KZG setup (seconds, ~100 MB) just to re-verify its own file.
    Trust,
}

/// Check a blob transaction's sidecar for a block whose blob parameters are `params`
/// (`osaka`: cell proofs required). A version-0 sidecar sent for an Osaka block is converted
/// (its cell proofs computed), as Geth does for senders not yet updated; a version-1 sidecar
/// before Osaka is refused. Returns the sidecar to keep.
pub fn admit(
    tx: &TxEnvelope,
    sidecar: Sidecar,
    params: Option<BlobParams>,
    osaka: bool,
    check: Proofs,
) -> Result<Sidecar, String> {
    let hashes = tx.blob_versioned_hashes().unwrap_or_default();
    check_count(hashes.len(), params)?;
    let (blobs, commitments, proofs, per_blob) = match &sidecar {
        Sidecar::Eip4844(s) => (s.blobs.len(), s.commitments.len(), s.proofs.len(), 1),
        Sidecar::Eip7594(s) => (
            s.blobs.len(),
            s.commitments.len(),
            s.cell_proofs.len(),
            CELLS_PER_EXT_BLOB,
        ),
    };
    if blobs != hashes.len() || commitments != hashes.len() || proofs != hashes.len() * per_blob {
        return Err(format!(
            "blob sidecar does not match the transaction: {} versioned hashes, {blobs} blobs, \
             {commitments} commitments, {proofs} proofs (expected {} proofs)",
            hashes.len(),
            hashes.len() * per_blob
        ));
    }
    if matches!(sidecar, Sidecar::Eip7594(_)) && !osaka {
        return Err(
            "blob sidecar has cell proofs (version 1, EIP-7594), which are for Osaka; \
             the next block is before Osaka: send one KZG proof per blob (version 0)"
                .into(),
        );
    }
    if check == Proofs::Verify {
        sidecar.validate(hashes, kzg()).map_err(blob_error)?;
    } else {
        for (have, c) in hashes.iter().zip(sidecar.commitments()) {
            let expected = alloy_eips::eip4844::kzg_to_versioned_hash(c.as_slice());
            if *have != expected {
                return Err(blob_error(
                    alloy_eips::eip4844::BlobTransactionValidationError::WrongVersionedHash {
                        have: *have,
                        expected,
                    },
                ));
            }
        }
    }
    if matches!(sidecar, Sidecar::Eip4844(_)) && osaka {
        // Checked above before spending time on its cell proofs.
        return sidecar
            .try_convert_into_eip7594_with_settings(kzg())
            .map_err(|e| format!("cannot compute the cell proofs of the blobs: {e}"));
    }
    Ok(sidecar)
}

/// A blob transaction with its sidecar, encoded as `eth_sendRawTransaction` takes it.
pub fn network_form(tx: &TxEnvelope, sidecar: &Sidecar) -> Option<Vec<u8>> {
    let TxEnvelope::Eip4844(signed) = tx else {
        return None;
    };
    let inner = signed.tx().tx().clone();
    let pooled = EthereumTxEnvelope::Eip4844(
        TxEip4844WithSidecar::from_tx_and_sidecar(inner, sidecar.clone())
            .into_signed(*signed.signature()),
    );
    Some(pooled.encoded_2718())
}

fn blob_error(e: alloy_eips::eip4844::BlobTransactionValidationError) -> String {
    use alloy_eips::eip4844::BlobTransactionValidationError as E;
    match e {
        E::WrongVersionedHash { have, expected } => format!(
            "blob versioned hash {have} does not match its commitment (which hashes to {expected})"
        ),
        E::InvalidProof => "invalid blob proof: the KZG proofs do not verify".into(),
        other => format!("invalid blob sidecar: {other}"),
    }
}

/// A sidecar in the format an Osaka block's bundle needs (computing cell proofs for a
/// version-0 sidecar that entered the pool before Osaka).
pub fn for_fork(sidecar: &Arc<Sidecar>, osaka: bool) -> Option<Arc<Sidecar>> {
    match (sidecar.as_ref(), osaka) {
        (Sidecar::Eip4844(_), false) | (Sidecar::Eip7594(_), true) => Some(sidecar.clone()),
        (Sidecar::Eip4844(_), true) => {
            match (**sidecar)
                .clone()
                .try_convert_into_eip7594_with_settings(kzg())
            {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot compute the cell proofs of a pooled blob transaction; it waits");
                    None
                }
            }
        }
        (Sidecar::Eip7594(_), false) => None,
    }
}

/// The blobs bundle of getPayloadV3/V4 (one KZG proof per blob).
pub fn bundle_v1(sidecars: &[Arc<Sidecar>]) -> BlobsBundleV1 {
    let mut b = BlobsBundleV1::empty();
    for s in sidecars {
        if let Sidecar::Eip4844(s) = s.as_ref() {
            b.commitments.extend_from_slice(&s.commitments);
            b.proofs.extend_from_slice(&s.proofs);
            b.blobs.extend_from_slice(&s.blobs);
        }
    }
    b
}

/// The blobs bundle of getPayloadV5 (`CELLS_PER_EXT_BLOB` cell proofs per blob).
pub fn bundle_v2(sidecars: &[Arc<Sidecar>]) -> BlobsBundleV2 {
    let mut b = BlobsBundleV2::empty();
    for s in sidecars {
        if let Sidecar::Eip7594(s) = s.as_ref() {
            b.commitments.extend_from_slice(&s.commitments);
            b.proofs.extend_from_slice(&s.cell_proofs);
            b.blobs.extend_from_slice(&s.blobs);
        }
    }
    b
}

/// The blob with versioned hash `hash` and its KZG proof, from a version-0 sidecar.
pub fn blob_and_proof_v1(sidecar: &Sidecar, hash: &B256) -> Option<BlobAndProofV1> {
    let Sidecar::Eip4844(s) = sidecar else {
        return None;
    };
    let i = s.versioned_hash_index(hash)?;
    Some(BlobAndProofV1 {
        blob: Box::new(s.blobs[i]),
        proof: s.proofs[i],
    })
}

/// The blob with versioned hash `hash` and its cell proofs, from a version-1 sidecar.
pub fn blob_and_proof_v2(sidecar: &Sidecar, hash: &B256) -> Option<BlobAndProofV2> {
    let Sidecar::Eip7594(s) = sidecar else {
        return None;
    };
    let i = s.versioned_hash_index(hash)?;
    Some(BlobAndProofV2 {
        blob: Box::new(s.blobs[i]),
        proofs: s.cell_proofs[i * CELLS_PER_EXT_BLOB..(i + 1) * CELLS_PER_EXT_BLOB].to_vec(),
    })
}

/// Number of blobs a sidecar carries.
pub fn count(sidecar: &Sidecar) -> usize {
    sidecar.blobs().len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloy_consensus::TxEip4844;
    use alloy_eips::eip4844::{Blob, BlobTransactionSidecar};
    use alloy_primitives::{Signature, U256};
    use std::time::Instant;

    fn blob(seed: u8) -> Blob {
        let mut b = Blob::ZERO;
        for (i, x) in b.iter_mut().enumerate() {
            if i % 32 != 0 {
                *x = (i as u8).wrapping_mul(13) ^ seed;
            }
        }
        b
    }

    fn tx_for(sidecar: &Sidecar) -> TxEnvelope {
        let tx = TxEip4844 {
            chain_id: 1,
            blob_versioned_hashes: sidecar.versioned_hashes().collect(),
            max_fee_per_blob_gas: 1,
            ..Default::default()
        };
        let sig = Signature::new(U256::from(1), U256::from(1), false);
        TxEip4844Variant::<alloy_eips::eip4844::BlobTransactionSidecar>::TxEip4844(tx)
            .into_signed(sig)
            .into()
    }

    /// On a thread with room for blobs on its stack (a debug build copies them).
    pub(crate) fn big_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn sidecars_are_checked_and_converted_for_the_fork() {
        big_stack(|| {
            let t = Instant::now();
            kzg();
            eprintln!("KZG trusted setup loaded in {:?}", t.elapsed());
            let v0 = Sidecar::Eip4844(
                BlobTransactionSidecar::try_from_blobs_with_settings(vec![blob(1), blob(2)], kzg())
                    .unwrap(),
            );
            let tx = tx_for(&v0);
            let prague = Some(BlobParams::prague());
            let osaka = Some(BlobParams::osaka());

            let t = Instant::now();
            let kept = admit(&tx, v0.clone(), prague, false, Proofs::Verify).unwrap();
            eprintln!("2 blobs, KZG proofs checked in {:?}", t.elapsed());
            assert!(matches!(kept, Sidecar::Eip4844(_)));

            let t = Instant::now();
            let converted = admit(&tx, v0.clone(), osaka, true, Proofs::Verify).unwrap();
            eprintln!(
                "2 blobs checked and converted to cell proofs in {:?}",
                t.elapsed()
            );
            let Sidecar::Eip7594(cells) = &converted else {
                panic!("not converted")
            };
            assert_eq!(cells.cell_proofs.len(), 2 * CELLS_PER_EXT_BLOB);
            let t = Instant::now();
            let again = admit(&tx, converted.clone(), osaka, true, Proofs::Verify).unwrap();
            eprintln!("2 blobs, cell proofs checked in {:?}", t.elapsed());
            assert_eq!(again, converted);
            assert_eq!(bundle_v2(&[Arc::new(again)]).proofs.len(), 256);

            let e = admit(&tx, converted.clone(), prague, false, Proofs::Verify).unwrap_err();
            assert!(e.contains("which are for Osaka"), "{e}");
            let e = admit(&tx, v0.clone(), None, false, Proofs::Verify).unwrap_err();
            assert!(e.contains("before Cancun"), "{e}");
            // A sidecar with one blob less than the transaction's hashes.
            let Sidecar::Eip4844(mut short) = v0.clone() else {
                unreachable!()
            };
            short.blobs.pop();
            let e = admit(&tx, Sidecar::Eip4844(short), prague, false, Proofs::Verify).unwrap_err();
            assert!(e.contains("2 versioned hashes, 1 blobs"), "{e}");
            // Proofs swapped between the blobs.
            let Sidecar::Eip4844(mut swapped) = v0 else {
                unreachable!()
            };
            swapped.proofs.swap(0, 1);
            let e = admit(
                &tx,
                Sidecar::Eip4844(swapped.clone()),
                prague,
                false,
                Proofs::Verify,
            )
            .unwrap_err();
            assert!(e.contains("invalid blob proof"), "{e}");
            // The journal's own records: proofs trusted, versioned hashes still checked.
            let t = Instant::now();
            admit(
                &tx,
                Sidecar::Eip4844(swapped.clone()),
                prague,
                false,
                Proofs::Trust,
            )
            .unwrap();
            eprintln!("2 blobs, trusted (journal replay), in {:?}", t.elapsed());
            let other = Sidecar::Eip4844(
                BlobTransactionSidecar::try_from_blobs_with_settings(vec![blob(3), blob(4)], kzg())
                    .unwrap(),
            );
            let e = admit(&tx, other, prague, false, Proofs::Trust).unwrap_err();
            assert!(e.contains("does not match its commitment"), "{e}");
        });
    }

    #[test]
    fn the_network_form_decodes_to_the_transaction_and_its_sidecar() {
        big_stack(|| {
            let signer = alloy_signer_local::PrivateKeySigner::random();
            let sidecar = Sidecar::Eip4844(
                BlobTransactionSidecar::try_from_blobs_with_settings(vec![blob(7)], kzg()).unwrap(),
            );
            let tx = TxEip4844 {
                chain_id: 1,
                gas_limit: 21_000,
                blob_versioned_hashes: sidecar.versioned_hashes().collect(),
                ..Default::default()
            };
            use alloy_signer::SignerSync;
            let sig = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
            let plain: TxEnvelope =
                TxEip4844Variant::<alloy_eips::eip4844::BlobTransactionSidecar>::TxEip4844(
                    tx.clone(),
                )
                .into_signed(sig)
                .into();
            let pooled = EthereumTxEnvelope::Eip4844(
                TxEip4844WithSidecar::from_tx_and_sidecar(tx, sidecar.clone()).into_signed(sig),
            );
            let d = decode_raw(&pooled.encoded_2718()).unwrap();
            assert_eq!(d.tx.tx_hash(), plain.tx_hash());
            assert_eq!(d.sender, signer.address());
            assert_eq!(d.sidecar, Some(sidecar));
            // The block form (no sidecar) is not what the pool takes.
            let e = decode_raw(&plain.encoded_2718()).err().unwrap();
            assert!(e.contains("network form"), "{e}");
            let e = decode_raw(&vec![3u8; MAX_BLOB_TX_BYTES + 1]).err().unwrap();
            assert!(e.contains("oversized"), "{e}");
        });
    }
}
