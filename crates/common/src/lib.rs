//! chainctl-common: the small pieces every role of chainctl shares — secret files and
//! Engine API tokens, files written atomically, TLS, the CLI's blocking HTTP client, the
//! files a validator reads, and sd_notify.
//!
//! Lowest layer of the workspace: it depends on no other chainctl crate, and must never
//! grow one (the built-in engine and the consensus node link it and could ship alone).

pub mod fs;
pub mod http;
pub mod sdnotify;
pub mod secrets;
pub mod test_hooks;
pub mod time;
pub mod tls;
pub mod units;
pub mod validator;
