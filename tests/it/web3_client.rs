//! A real Ethereum client against the built-in engine: web3.py and eth-account (PyPI,
//! installed by .ci/run) drive `tests/clients/web3_client.py` against a running devnet's
//! execution client: signed transfers, receipts, a contract and its logs, balances,
//! storage, blocks, fee history, and newHeads over WebSocket.

use crate::util::{text, wait_for, Env};
use std::process::Command;
use std::time::Duration;

#[test]
fn web3_py_sends_transactions_reads_state_and_follows_new_heads() {
    let found = Command::new("python3")
        .args(["-c", "import web3, eth_account"])
        .output()
        .expect("python3 is not installed: .ci/run installs it");
    assert!(
        found.status.success(),
        "web3.py is not installed ({}): .ci/run installs it with `python3 -m pip install web3`; a missing client fails this test",
        text(&found.stderr).trim()
    );
    let env = Env::new();
    env.write_profile(
        "name: w3\nports: {start: 25600, end: 25649}\nchain: {chain_id: 1337, block_time: 1s, dev_accounts: 2}\nvalidators:\n  count: 1\n  execution: [builtin]\n",
    );
    env.up_detached();
    let chain = crate::util::Chain::read(&env.state());
    wait_for("the first blocks", Duration::from_secs(60), || {
        (chain.el_height("val-0-el-0") >= 2).then_some(())
    });
    let port = chain.port("val-0-el-0", "http");
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new("python3")
        .arg(format!("{root}/tests/clients/web3_client.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(format!("ws://127.0.0.1:{port}"))
        .arg(format!("{root}/tests/data/counter.hex"))
        .output()
        .unwrap();
    let out = text(&o.stdout);
    eprintln!("{out}");
    assert!(
        o.status.success() && out.contains("web3.py: all checks passed"),
        "web3_client.py failed:\n{out}\n{}",
        text(&o.stderr)
    );
}
