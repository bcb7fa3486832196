//! chainctl-backup: `chainctl backup` and `chainctl restore`. A backup is a directory:
//! `manifest.json` (chainctl version, profile digest, chain id, genesis hashes, per
//! service the height and block hash captured, every file with its size and SHA-256),
//! one zstd file per captured file, and, only when asked, the secrets as one
//! age-encrypted tar (`secrets.tar.age`: passphrase or X25519 recipients; never in clear).
//!
//! Each service is captured consistently while the network runs: the built-in engine
//! exports its store through a read transaction of its database
//! (`chainctl_exportSnapshotV1` on its authenticated port); a validator's decided-block
//! log is append-only with checksummed records, so a prefix of it read while it grows is
//! a consistent log once its torn tail is cut (as the node cuts it at start). A restore
//! refuses a backup of another chain, a file whose hash differs, and a service that
//! runs; it keeps what it replaces, writes a restored validator's signing floor (the
//! height the rest of the network has reached: this key signed up to there already) and
//! starts the services again.
//!
//! Layer 5: on common, core (profile, layout, control socket), consensus (its log's
//! reader) and evm (its snapshot's reader). It must never depend on the supervisor, the
//! monitor or the report: it reaches a network as an operator's tooling would, through
//! its state dir, its control socket and its services' endpoints.

pub use chainctl_core::backup as manifest;
mod network;
mod restore;
mod take;
mod vault;

pub use manifest::{MANIFEST, NETWORK, SECRETS};
pub use network::{Network, Role, Service};
pub use restore::{restore, RestoreOptions, Restored};
pub use take::{backup, BackupOptions, Taken};
pub use vault::{Recipients, Unlock};
