//! `GET /events`: what this server did, as Docker's event messages: container create, start,
//! die (with its exit code), stop, kill, pause, unpause, rename, destroy; image pull, push, tag,
//! untag, delete; volume create, destroy. Past events (the last [`KEPT`]) answer `since`;
//! `until` ends the stream. (Containers started by the command line emit none yet.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as Ext};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::state::State;

/// Past events kept for `since`.
pub const KEPT: usize = 1000;

/// The event log and its live subscribers.
#[derive(Debug)]
pub struct Events {
    past: Mutex<VecDeque<Value>>,
    live: broadcast::Sender<Value>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            past: Mutex::default(),
            live: broadcast::channel(256).0,
        }
    }
}

impl Events {
    /// Records and broadcasts an event of `kind` (container, image, volume).
    pub fn emit(&self, kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let attrs: HashMap<&str, &str> = attributes.iter().copied().collect();
        let mut v = json!({
            "Type": kind,
            "Action": action,
            "Actor": {"ID": id, "Attributes": attrs},
            "scope": "local",
            "time": now.as_secs(),
            "timeNano": now.as_nanos() as u64,
        });
        if kind == "container" {
            v["status"] = json!(action);
            v["id"] = json!(id);
            v["from"] = json!(attrs.get("image").copied().unwrap_or(""));
        }
        if let Ok(mut p) = self.past.lock() {
            if p.len() == KEPT {
                p.pop_front();
            }
            p.push_back(v.clone());
        }
        let _ = self.live.send(v);
    }
}

/// `GET /events` query.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

/// A Docker time parameter: Unix seconds, with an optional fraction.
fn seconds(s: &Option<String>) -> Option<f64> {
    s.as_deref().and_then(|v| v.parse::<f64>().ok())
}

fn matches(e: &Value, filters: &HashMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(k, wanted)| {
        let have: Vec<String> = match k.as_str() {
            "type" => vec![e["Type"].as_str().unwrap_or("").to_string()],
            "event" => vec![e["Action"].as_str().unwrap_or("").to_string()],
            "container" | "image" | "volume" => vec![
                e["Actor"]["ID"].as_str().unwrap_or("").to_string(),
                e["Actor"]["Attributes"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            ],
            _ => return true,
        };
        wanted.iter().any(|w| {
            have.iter()
                .any(|h| !h.is_empty() && (h == w || h.starts_with(w.as_str())))
        })
    })
}

/// `GET /events`.
pub async fn events(
    Ext(st): Ext<Arc<State>>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let filters = crate::query::filters(q.filters.as_deref())?;
    let (since, until) = (seconds(&q.since), seconds(&q.until));
    let mut live = st.events.live.subscribe();
    let past: Vec<Value> = match since {
        Some(s) => st
            .events
            .past
            .lock()
            .map(|p| {
                p.iter()
                    .filter(|e| e["time"].as_f64().unwrap_or(0.0) >= s.floor())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        None => vec![],
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let in_window = |e: &Value| until.is_none_or(|u| e["time"].as_f64().unwrap_or(0.0) <= u);
        for e in past.iter().filter(|e| in_window(e) && matches(e, &filters)) {
            if tx
                .send(Ok(Bytes::from(e.to_string() + "\n")))
                .await
                .is_err()
            {
                return;
            }
        }
        loop {
            let deadline = until.map(|u| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                std::time::Duration::from_secs_f64((u - now).max(0.0))
            });
            let next = match deadline {
                Some(d) => match tokio::time::timeout(d, live.recv()).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                None => live.recv().await,
            };
            match next {
                Ok(e) if matches(&e, &filters) && in_window(&e) => {
                    if tx
                        .send(Ok(Bytes::from(e.to_string() + "\n")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}
