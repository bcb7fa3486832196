//! Issue 3: `chainctl node evm import-fixture` over the Ethereum execution-spec-tests
//! blockchain fixtures we did not write; every case passes, and a tampered case fails.

use std::process::Command;

use crate::evmutil::{bin, fixtures};
use serde_json::Value;

fn count_cases(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += count_cases(&p);
        } else if p.extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            n += v.as_object().unwrap().len();
        }
    }
    n
}

#[test]
fn every_eest_case_passes() {
    let dir = fixtures().join("eest");
    let cases = count_cases(&dir);
    assert!(cases > 0, "no fixture cases under {}", dir.display());
    let out = Command::new(bin())
        .args(["node", "evm", "import-fixture"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "import-fixture failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("total: {cases} passed, 0 failed")),
        "{stdout}"
    );
    for fork in ["Shanghai", "Cancun", "Prague", "Osaka"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{fork}: "))),
            "no {fork} cases reported:\n{stdout}"
        );
    }
}

#[test]
fn a_tampered_case_fails_with_its_name_and_reason() {
    let src =
        fixtures().join("eest/cancun/eip4788_beacon_root/test_beacon_root_contract_calls.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
    let (name, case) = v.as_object_mut().unwrap().iter_mut().next().unwrap();
    let name = name.clone();
    // Expect one more wei in some account of the post-state.
    let post = case["postState"].as_object_mut().unwrap();
    let (addr, acct) = post.iter_mut().next().unwrap();
    let addr = addr.clone();
    let bal = u128::from_str_radix(
        acct["balance"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    acct["balance"] = Value::String(format!("{:#x}", bal + 1));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tampered.json");
    std::fs::write(&file, serde_json::to_string(&v).unwrap()).unwrap();
    let out = Command::new(bin())
        .args(["node", "evm", "import-fixture"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a wrong post-state must fail:\n{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL line:\n{stdout}"));
    assert!(line.contains(&name) && line.contains("balance"), "{line}");
    assert!(
        line.to_lowercase().contains(&addr.to_lowercase()[2..]),
        "{line}"
    );
    assert!(stdout.contains(" passed, 1 failed"), "{stdout}");
}

#[test]
fn missing_paths_are_an_error_naming_the_path() {
    let out = Command::new(bin())
        .args(["node", "evm", "import-fixture", "/nonexistent/fixtures"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/fixtures"));
}
