//! JSON-RPC over WebSocket on the public port, with `eth_subscribe` (`newHeads`, `logs`).

use std::collections::HashMap;
use std::sync::Mutex;

use alloy_rpc_types_eth::{Filter, FilterBlockOption};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};

use super::app::{AppState, RPC_BODY_LIMIT};
use super::rpc::handle_body;
use super::wire::RpcError;

enum Sub {
    NewHeads,
    Logs(Box<Filter>),
}

pub async fn upgrade(State(app): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(RPC_BODY_LIMIT)
        .on_upgrade(move |socket| session(socket, app))
}

fn subscribe(subs: &Mutex<HashMap<String, Sub>>, params: Value) -> Result<Value, RpcError> {
    let arr = params.as_array().cloned().unwrap_or_default();
    let kind = arr.first().and_then(|k| k.as_str()).unwrap_or_default();
    let sub = match kind {
        "newHeads" => Sub::NewHeads,
        "logs" => {
            let filter: Filter = match arr.get(1) {
                Some(f) => serde_json::from_value(f.clone())
                    .map_err(|e| RpcError::invalid_params(e.to_string()))?,
                None => Filter::default(),
            };
            Sub::Logs(Box::new(filter))
        }
        other => {
            return Err(RpcError::invalid_params(format!(
                "unsupported subscription {other:?}: use newHeads or logs"
            )))
        }
    };
    let id = format!("0x{}", hex::encode(rand::random::<[u8; 16]>()));
    subs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), sub);
    Ok(json!(id))
}

async fn session(mut socket: WebSocket, app: AppState) {
    let engine = app.engine.clone();
    let mut heads = engine.heads.subscribe();
    let subs: Mutex<HashMap<String, Sub>> = Mutex::new(HashMap::new());
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => break,
                };
                let reply = handle_body(text.as_bytes(), &|m, p| match m {
                    "eth_subscribe" => subscribe(&subs, p),
                    "eth_unsubscribe" => {
                        let id = p.as_array().and_then(|a| a.first()).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                        Ok(json!(subs.lock().unwrap_or_else(|e| e.into_inner()).remove(&id).is_some()))
                    }
                    _ => app.call(m, p, false),
                });
                if let Some(r) = reply {
                    if socket.send(Message::Text(r.to_string().into())).await.is_err() {
                        break;
                    }
                }
            }
            head = heads.recv() => {
                let hash = match head {
                    Ok(h) => h,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                };
                let notes: Vec<Value> = {
                    let chain = engine.chain();
                    let Some(block) = chain.block(&hash) else { continue };
                    let subs = subs.lock().unwrap_or_else(|e| e.into_inner());
                    let mut notes = Vec::new();
                    for (id, sub) in subs.iter() {
                        match sub {
                            Sub::NewHeads => notes.push(note(id, super::rpc::rpc_header(&block))),
                            Sub::Logs(f) => {
                                let mut f = (**f).clone();
                                f.block_option = FilterBlockOption::AtBlockHash(hash);
                                if let Ok(Value::Array(logs)) = super::call::logs(&chain, &f) {
                                    notes.extend(logs.into_iter().map(|l| note(id, l)));
                                }
                            }
                        }
                    }
                    notes
                };
                for n in notes {
                    if socket.send(Message::Text(n.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn note(id: &str, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": "eth_subscription", "params": {"subscription": id, "result": result}})
}
