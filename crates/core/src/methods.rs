//! Which JSON-RPC methods the gateway forwards (`gateway.allow`): exact names
//! (`txpool_status`) and namespaces (`eth_*`). A namespace never matches the methods
//! that sign with a node's keys or mine (`eth_sign`, `eth_sendTransaction`,
//! `eth_submitWork`, …): those pass only when named one by one. `engine_*` is the
//! validators' Engine API and is never forwarded, whatever the list says.

/// The default list: reading the chain, sending signed transactions, the network's and
/// the client's identity, the pool's size.
pub const DEFAULT_ALLOW: [&str; 4] = ["eth_*", "net_*", "web3_*", "txpool_status"];

/// Methods a namespace pattern never matches: they use keys held by the node, or mine.
const NAMED_ONLY: [&str; 13] = [
    "eth_accounts",
    "eth_coinbase",
    "eth_getWork",
    "eth_hashrate",
    "eth_mining",
    "eth_sendTransaction",
    "eth_sign",
    "eth_signTransaction",
    "eth_signTypedData",
    "eth_signTypedData_v3",
    "eth_signTypedData_v4",
    "eth_submitHashrate",
    "eth_submitWork",
];

/// Why an entry of `gateway.allow` cannot be used, or `None`.
pub fn entry_problem(entry: &str) -> Option<String> {
    let well_formed = entry.split_once('_').filter(|(ns, rest)| {
        ns.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && (*rest == "*"
                || (!rest.is_empty()
                    && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')))
    });
    let Some((ns, _)) = well_formed else {
        return Some(format!(
            "`{entry}` is neither a method nor a namespace: write a method name such as `eth_call` or a namespace such as `eth_*`"
        ));
    };
    if ns == "engine" {
        return Some(format!(
            "`{entry}`: the Engine API is never forwarded by the gateway (validators reach their execution clients directly); remove it"
        ));
    }
    None
}

/// The decision for one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Forward,
    /// Refused, with the message the caller gets.
    Refuse(String),
}

/// Whether `allow` lets `method` through, and if not, what the caller is told.
pub fn decide(allow: &[String], method: &str) -> Decision {
    let ns = method.split_once('_').map_or(method, |(ns, _)| ns);
    if ns == "engine" {
        return Decision::Refuse(format!(
            "method `{method}` is the Engine API: never forwarded by the gateway"
        ));
    }
    if allow.iter().any(|a| a == method) {
        return Decision::Forward;
    }
    let in_namespace = allow
        .iter()
        .filter_map(|a| a.strip_suffix("_*"))
        .any(|n| n == ns);
    if in_namespace && NAMED_ONLY.contains(&method) {
        return Decision::Refuse(format!(
            "method `{method}` uses the node's own keys or mines: `{ns}_*` does not cover it; name `{method}` in gateway.allow to allow it"
        ));
    }
    if in_namespace {
        return Decision::Forward;
    }
    Decision::Refuse(format!(
        "method `{method}` is not allowed through the gateway (gateway.allow: {}); add `{method}` or `{ns}_*` to gateway.allow to allow it",
        allow.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_defaults_read_the_chain_and_take_transactions_only() {
        let a = defaults();
        for m in [
            "eth_call",
            "eth_sendRawTransaction",
            "eth_getLogs",
            "net_version",
            "web3_clientVersion",
            "txpool_status",
        ] {
            assert_eq!(decide(&a, m), Decision::Forward, "{m}");
        }
        for m in [
            "admin_addPeer",
            "debug_traceTransaction",
            "txpool_content",
            "personal_unlockAccount",
            "miner_start",
            "engine_forkchoiceUpdatedV3",
            "eth_sign",
            "eth_sendTransaction",
            "eth_signTypedData_v4",
            "eth_submitWork",
        ] {
            let Decision::Refuse(why) = decide(&a, m) else {
                panic!("{m} forwarded");
            };
            assert!(why.contains(m), "{why}");
        }
        let Decision::Refuse(why) = decide(&a, "admin_addPeer") else {
            unreachable!()
        };
        assert!(
            why.contains("add `admin_addPeer` or `admin_*` to gateway.allow"),
            "{why}"
        );
    }

    #[test]
    fn named_methods_pass_the_engine_api_never() {
        let a: Vec<String> = ["eth_sign", "debug_*", "engine_newPayloadV4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(decide(&a, "eth_sign"), Decision::Forward);
        assert_eq!(decide(&a, "debug_traceTransaction"), Decision::Forward);
        assert!(matches!(decide(&a, "eth_call"), Decision::Refuse(_)));
        assert!(matches!(
            decide(&a, "engine_newPayloadV4"),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn entries_are_methods_or_namespaces_never_the_engine_api() {
        for ok in [
            "eth_*",
            "txpool_status",
            "eth_signTypedData_v4",
            "debug_traceCall",
        ] {
            assert_eq!(entry_problem(ok), None, "{ok}");
        }
        for bad in [
            "*", "eth", "eth_", "Eth_call", "eth_c*", "_call", "eth call",
        ] {
            assert!(entry_problem(bad).is_some(), "{bad}");
        }
        assert!(entry_problem("engine_*")
            .unwrap()
            .contains("never forwarded"));
    }
}
