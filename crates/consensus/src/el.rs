//! An Engine API client for one execution client: a fresh HS256 token per request, per-call
//! timeouts (spec defaults: forkchoiceUpdated 8 s, getPayload 1 s, newPayload 8 s), and
//! errors that say which EL, which method and what happened.

use std::time::Duration;

use alloy_primitives::B256;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use chainctl_common::secrets::{self, JwtSecret};
pub use chainctl_common::validator::{ElConfig, EngineFork, Timeouts};

/// What went wrong talking to an EL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ElError {
    #[error("{el}: {method}: no answer within {timeout:?}")]
    Timeout {
        el: String,
        method: String,
        timeout: Duration,
    },
    #[error("{el}: {method}: {why}")]
    Transport {
        el: String,
        method: String,
        why: String,
    },
    #[error("{el}: {method}: error {code}: {message}")]
    Rpc {
        el: String,
        method: String,
        code: i64,
        message: String,
    },
}

/// A payload status as the Engine API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadStatus {
    pub status: String,
    #[serde(default)]
    pub latest_valid_hash: Option<B256>,
    #[serde(default)]
    pub validation_error: Option<String>,
}

impl PayloadStatus {
    pub fn is_valid(&self) -> bool {
        self.status == "VALID"
    }
    pub fn is_invalid(&self) -> bool {
        self.status == "INVALID"
    }
}

/// One execution client.
pub struct El {
    pub name: String,
    url: String,
    secret: JwtSecret,
    http: reqwest::Client,
    pub timeouts: Timeouts,
}

impl El {
    /// Connect (lazily) to an EL; reads its secret now so a bad file fails at start.
    pub fn new(cfg: &ElConfig, timeouts: Timeouts) -> Result<Self, String> {
        let secret = JwtSecret::read(&cfg.jwt_secret).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("{}: HTTP client: {e}", cfg.name))?;
        Ok(El {
            name: cfg.name.clone(),
            url: cfg.engine_url.clone(),
            secret,
            http,
            timeouts,
        })
    }

    /// One authenticated JSON-RPC call.
    pub async fn call(
        &self,
        method: &str,
        params: Json,
        timeout: Duration,
    ) -> Result<Json, ElError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let token = secrets::engine_token(&self.secret, now);
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let transport = |why: String| ElError::Transport {
            el: self.name.clone(),
            method: method.to_string(),
            why,
        };
        let send = async {
            let resp = self
                .http
                .post(&self.url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .map_err(|e| transport(format!("{e}")))?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| transport(format!("{e}")))?;
            if !status.is_success() {
                return Err(transport(format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                )));
            }
            serde_json::from_str::<Json>(&text).map_err(|e| transport(format!("bad JSON: {e}")))
        };
        let reply = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| ElError::Timeout {
                el: self.name.clone(),
                method: method.to_string(),
                timeout,
            })??;
        if let Some(err) = reply.get("error") {
            return Err(ElError::Rpc {
                el: self.name.clone(),
                method: method.to_string(),
                code: err.get("code").and_then(Json::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
        Ok(reply.get("result").cloned().unwrap_or(Json::Null))
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, method: &str, v: Json) -> Result<T, ElError> {
        serde_json::from_value(v).map_err(|e| ElError::Transport {
            el: self.name.clone(),
            method: method.to_string(),
            why: format!("unexpected result: {e}"),
        })
    }

    /// `engine_newPayloadVn` with the value's params, `n` the version of the block's fork.
    pub async fn new_payload(
        &self,
        fork: EngineFork,
        params: &Json,
    ) -> Result<PayloadStatus, ElError> {
        let m = new_payload_method(fork);
        let r = self
            .call(m, params.clone(), self.timeouts.new_payload)
            .await?;
        self.decode(m, r)
    }

    /// `engine_forkchoiceUpdatedVn`, `n` the version of `fork` (the fork of the block the
    /// attributes build, or of the new head); returns the status and the payload id when
    /// building.
    pub async fn forkchoice(
        &self,
        fork: EngineFork,
        head: B256,
        finalized: B256,
        attributes: Option<Json>,
    ) -> Result<(PayloadStatus, Option<String>), ElError> {
        let m = forkchoice_method(fork);
        let state = json!({"headBlockHash": head, "safeBlockHash": finalized, "finalizedBlockHash": finalized});
        // Starting a build, a proposer cannot wait the full forkchoice timeout in a slot
        // of a second or two: twice getPayload's, then it builds on another client.
        let timeout = if attributes.is_some() {
            self.timeouts.forkchoice.min(self.timeouts.get_payload * 2)
        } else {
            self.timeouts.forkchoice
        };
        let r = self
            .call(m, json!([state, attributes.unwrap_or(Json::Null)]), timeout)
            .await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Fcu {
            payload_status: PayloadStatus,
            #[serde(default)]
            payload_id: Option<String>,
        }
        let f: Fcu = self.decode(m, r)?;
        Ok((f.payload_status, f.payload_id))
    }

    /// `engine_getPayloadVn` for a payload of `fork`, as an envelope with an
    /// `executionPayload` whatever the version (V1 answers with the bare payload).
    pub async fn get_payload(&self, fork: EngineFork, id: &str) -> Result<Json, ElError> {
        let m = get_payload_method(fork);
        let r = self.call(m, json!([id]), self.timeouts.get_payload).await?;
        Ok(if fork == EngineFork::Paris {
            json!({ "executionPayload": r })
        } else {
            r
        })
    }
}

/// The `newPayload` version of a block of this fork (the Engine API spec: V1 Paris, V2
/// Shanghai, V3 Cancun, V4 Prague and Osaka).
pub fn new_payload_method(fork: EngineFork) -> &'static str {
    match fork {
        EngineFork::Paris => "engine_newPayloadV1",
        EngineFork::Shanghai => "engine_newPayloadV2",
        EngineFork::Cancun => "engine_newPayloadV3",
        EngineFork::Prague | EngineFork::Osaka => "engine_newPayloadV4",
    }
}

/// The `forkchoiceUpdated` version for this fork: V1 Paris, V2 Shanghai, V3 from Cancun.
pub fn forkchoice_method(fork: EngineFork) -> &'static str {
    match fork {
        EngineFork::Paris => "engine_forkchoiceUpdatedV1",
        EngineFork::Shanghai => "engine_forkchoiceUpdatedV2",
        _ => "engine_forkchoiceUpdatedV3",
    }
}

/// The `getPayload` version for a payload of this fork: V1 … V5, one per fork.
pub fn get_payload_method(fork: EngineFork) -> &'static str {
    match fork {
        EngineFork::Paris => "engine_getPayloadV1",
        EngineFork::Shanghai => "engine_getPayloadV2",
        EngineFork::Cancun => "engine_getPayloadV3",
        EngineFork::Prague => "engine_getPayloadV4",
        EngineFork::Osaka => "engine_getPayloadV5",
    }
}

/// Payload attributes for a block of `fork`: withdrawals from Shanghai (none: no beacon
/// chain pays any), the parent beacon block root from Cancun — each field present exactly
/// when the fork has it, as the spec's version checks require.
pub fn payload_attributes(
    fork: EngineFork,
    timestamp: u64,
    prev_randao: B256,
    fee_recipient: alloy_primitives::Address,
    beacon_root: B256,
) -> Json {
    let mut a = json!({
        "timestamp": format!("0x{timestamp:x}"),
        "prevRandao": prev_randao,
        "suggestedFeeRecipient": fee_recipient,
    });
    if fork >= EngineFork::Shanghai {
        a["withdrawals"] = json!([]);
    }
    if fork >= EngineFork::Cancun {
        a["parentBeaconBlockRoot"] = json!(beacon_root);
    }
    a
}

/// The `newPayload` params of a block of `fork`: `[payload]` to Shanghai, then the blob
/// hashes and the parent beacon root (Cancun), then the execution requests (Prague).
pub fn new_payload_params(
    fork: EngineFork,
    payload: Json,
    blob_hashes: &[B256],
    beacon_root: B256,
    requests: Json,
) -> Json {
    let mut params = vec![payload, json!(blob_hashes), json!(beacon_root), requests];
    params.truncate(new_payload_arity(fork));
    Json::Array(params)
}

/// How many params `newPayload` takes for a block of this fork.
pub fn new_payload_arity(fork: EngineFork) -> usize {
    match fork {
        EngineFork::Paris | EngineFork::Shanghai => 1,
        EngineFork::Cancun => 3,
        EngineFork::Prague | EngineFork::Osaka => 4,
    }
}
