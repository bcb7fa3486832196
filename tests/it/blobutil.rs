//! Blob transactions for tests: blobs, sidecars (one KZG proof per blob, or EIP-7594 cell
//! proofs) and signed type-3 transactions in their network form.
#![allow(dead_code)]

use alloy_consensus::{EthereumTxEnvelope, SignableTransaction, TxEip4844, TxEip4844WithSidecar};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip4844::{
    env_settings::EnvKzgSettings, Blob, BlobTransactionSidecar, BYTES_PER_BLOB,
};
use alloy_eips::eip7594::{BlobTransactionSidecarEip7594, BlobTransactionSidecarVariant};
use alloy_primitives::{address, Bytes, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;

/// A blob of `seed`-dependent data (each 32-byte field element kept below the BLS modulus).
pub fn blob(seed: u8) -> Blob {
    let mut b = [0u8; BYTES_PER_BLOB];
    for (i, x) in b.iter_mut().enumerate() {
        if i % 32 != 0 {
            *x = (i as u8).wrapping_mul(31) ^ seed.wrapping_mul(7) ^ (i >> 8) as u8;
        }
    }
    Blob::from(b)
}

pub fn cell_sidecar(seeds: &[u8]) -> BlobTransactionSidecarEip7594 {
    BlobTransactionSidecarEip7594::try_from_blobs(seeds.iter().map(|s| blob(*s)).collect()).unwrap()
}

pub fn proof_sidecar(seeds: &[u8]) -> BlobTransactionSidecar {
    BlobTransactionSidecar::try_from_blobs_with_settings(
        seeds.iter().map(|s| blob(*s)).collect(),
        EnvKzgSettings::Default.get(),
    )
    .unwrap()
}

/// A signed blob transaction in its network form (with `sidecar`), and its hash. The
/// versioned hashes are `hashes`, or the sidecar's.
pub fn blob_tx(
    key: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    sidecar: BlobTransactionSidecarVariant,
    hashes: Option<Vec<B256>>,
    fee_scale: u128,
    blob_fee_cap: u128,
) -> (Bytes, B256) {
    let tx = TxEip4844 {
        chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 20_000_000_000 * fee_scale,
        max_priority_fee_per_gas: 1_000_000_000 * fee_scale,
        to: address!("00000000000000000000000000000000000b10b5"),
        value: U256::ZERO,
        access_list: Default::default(),
        blob_versioned_hashes: hashes.unwrap_or_else(|| sidecar.versioned_hashes().collect()),
        max_fee_per_blob_gas: blob_fee_cap,
        input: Bytes::new(),
    };
    let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap();
    let hash = *tx.clone().into_signed(sig).hash();
    let pooled = EthereumTxEnvelope::Eip4844(
        TxEip4844WithSidecar::from_tx_and_sidecar(tx, sidecar).into_signed(sig),
    );
    (pooled.encoded_2718().into(), hash)
}

/// Run `f` on a thread with room for blobs (128 KiB values) on its stack in a debug build.
pub fn with_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
