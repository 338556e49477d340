//! `GET /events`: Docker's event messages from the engine's journal
//! ([`moat_engine::events`]), which every `moat` process writes: containers created, started,
//! killed, stopped, dead, destroyed, renamed, paused, updated and their health, whether the
//! command line or this server did it; images, volumes and networks changed through this
//! server. Past events answer `since`; `until` ends the stream. A thread follows the journal
//! and hands new events to the streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as Ext};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use moat_engine::events::Journal;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::state::State;

/// The journal and its live subscribers.
#[derive(Debug)]
pub struct Events {
    journal: Journal,
    live: broadcast::Sender<Value>,
}

impl Events {
    /// The events of the engine rooted at `root`; new ones are broadcast from a thread that
    /// follows its journal.
    pub fn new(root: &std::path::Path) -> Events {
        let journal = Journal::new(root);
        let live = broadcast::channel(1024).0;
        let (mut follower, tx) = (journal.follow(), live.clone());
        std::thread::spawn(move || loop {
            for e in follower.wait(Duration::from_secs(1)) {
                let _ = tx.send(e);
            }
            std::thread::sleep(Duration::from_millis(50));
        });
        Events { journal, live }
    }

    /// Journals an event of `kind` (image, volume, network).
    pub fn emit(&self, kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) {
        self.journal.emit(kind, action, id, attributes);
    }
}

/// `GET /events` query.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

/// A Docker time parameter: Unix seconds, with an optional fraction (or a time, or a
/// duration before now).
fn seconds(s: &Option<String>) -> Option<f64> {
    s.as_deref().and_then(moat_engine::events::parse_time)
}

fn matches(e: &Value, filters: &HashMap<String, Vec<String>>) -> bool {
    moat_engine::events::matches(e, filters)
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
        Some(s) => {
            let journal = st.events.journal.clone();
            tokio::task::spawn_blocking(move || {
                journal
                    .all()
                    .into_iter()
                    .filter(|e| moat_engine::events::seconds(e) >= s.floor())
                    .collect()
            })
            .await
            .unwrap_or_default()
        }
        None => vec![],
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let in_window = |e: &Value| until.is_none_or(|u| moat_engine::events::seconds(e) <= u);
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
