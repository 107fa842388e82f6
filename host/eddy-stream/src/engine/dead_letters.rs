//! Events that failed to decode and rows a query failed on: counted, logged, dead-lettered.

use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;

use super::task::Task;
use crate::format::json::encode;

impl Task {
    pub(super) async fn bad_events(&mut self, bad: Vec<crate::BadEvent>) {
        self.stats
            .bad_events
            .fetch_add(bad.len() as u64, Ordering::Relaxed);
        let first = &bad[0];
        tracing::warn!(query = %self.id, count = bad.len(), "bad event from {}: {}", first.origin, first.reason);
        self.stats
            .error(format!("bad event from {}: {}", first.origin, first.reason));
        if let Some(dead) = &mut self.dead {
            let records = bad
                .into_iter()
                .map(|b| eddy_connector::Record {
                    key: None,
                    payload: Some(
                        serde_json::to_vec(&serde_json::json!({
                            "query": self.id,
                            "origin": b.origin,
                            "reason": b.reason,
                            "payload": String::from_utf8_lossy(&b.payload),
                        }))
                        .expect("JSON encodes"),
                    ),
                    timestamp_ms: Some(crate::format::common::now_ms()),
                    partition: None,
                    upstream: None,
                })
                .collect();
            if let Err(e) = dead.send(records).await {
                self.stats.error(format!("dead-letter sink: {e}"));
            }
        }
    }

    /// Rows a UDF (or a cast) failed on: counted, logged and dead-lettered with the reason.
    pub(super) async fn failed_rows(&mut self, failed: Vec<(RecordBatch, String)>) {
        let rows: usize = failed.iter().map(|(b, _)| b.num_rows()).sum();
        self.stats
            .failed_events
            .fetch_add(rows as u64, Ordering::Relaxed);
        let (_, first) = &failed[0];
        tracing::warn!(query = %self.id, rows, "rows failed: {first}");
        self.stats.error(first.clone());
        if let Some(dead) = &mut self.dead {
            let mut records = Vec::new();
            for (batch, reason) in &failed {
                for row in encode(batch).unwrap_or_default() {
                    records.push(eddy_connector::Record {
                        key: None,
                        payload: Some(
                            serde_json::to_vec(&serde_json::json!({
                                "query": self.id,
                                "origin": "query",
                                "reason": reason,
                                "payload": String::from_utf8_lossy(
                                    row.payload.as_deref().unwrap_or_default(),
                                ),
                            }))
                            .expect("JSON encodes"),
                        ),
                        timestamp_ms: row.timestamp_ms,
                        partition: None,
                        upstream: None,
                    });
                }
            }
            if let Err(e) = dead.send(records).await {
                self.stats.error(format!("dead-letter sink: {e}"));
            }
        }
    }
}
