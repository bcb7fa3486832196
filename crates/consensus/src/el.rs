//! An Engine API client for one execution client: a fresh HS256 token per request, per-call
//! timeouts (spec defaults: forkchoiceUpdated 8 s, getPayload 1 s, newPayload 8 s), and
//! errors that say which EL, which method and what happened.

use std::time::Duration;

use alloy_primitives::B256;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use chainctl_common::secrets::{self, JwtSecret};
pub use chainctl_common::validator::{ElConfig, Timeouts};

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

    /// `engine_newPayloadV4` with the value's params.
    pub async fn new_payload(&self, params: &Json) -> Result<PayloadStatus, ElError> {
        let m = "engine_newPayloadV4";
        let r = self
            .call(m, params.clone(), self.timeouts.new_payload)
            .await?;
        self.decode(m, r)
    }

    /// `engine_forkchoiceUpdatedV3`; returns the status and the payload id when building.
    pub async fn forkchoice(
        &self,
        head: B256,
        finalized: B256,
        attributes: Option<Json>,
    ) -> Result<(PayloadStatus, Option<String>), ElError> {
        let m = "engine_forkchoiceUpdatedV3";
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

    /// `engine_getPayloadV5` (Osaka) or `V4` (Prague) — whichever the payload's fork takes.
    pub async fn get_payload(&self, id: &str, osaka: bool) -> Result<Json, ElError> {
        let m = if osaka {
            "engine_getPayloadV5"
        } else {
            "engine_getPayloadV4"
        };
        self.call(m, json!([id]), self.timeouts.get_payload).await
    }
}
