//! Direct writes: one raw event payload at a time into a named in-memory stream, decoded with
//! that stream's `value_format` and appended to its log exactly as `INSERT INTO` appends, so
//! persistent and push queries over the stream see it.
//!
//! [`StreamWriters`] is a registry handle the engine keeps up to date as streams are created
//! and dropped ([`crate::Engine::stream_writers`]); writing through it never takes the engine,
//! so a server holding the engine behind a lock can feed streams (e.g. from MQTT) without
//! contending for it.
//! A stream dropped since is an unknown stream; one created later is writable at once.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arrow::datatypes::SchemaRef;
use eddy_connector::{Message, Options, Position};

use crate::format::{ValueDecoder, ValueFormat};
use crate::log::Log;

/// Why a direct write was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// No stream of that name (never created, or dropped since).
    #[error("no stream named '{0}'")]
    UnknownStream(String),
    /// The stream exists but takes no direct writes: its rows come from Kafka, MQTT, the
    /// generator or a query (the message says which).
    #[error("{0}")]
    NotWritable(String),
    /// The payload does not decode as an event of the stream (malformed, a
    /// wrong type, a wrong field count); the reason names what was wrong.
    #[error("{0}")]
    BadEvent(String),
}

/// Where a stream's direct writes go, or why it takes none.
#[derive(Debug)]
pub(crate) enum Target {
    /// An in-memory stream: decode, then append.
    Writable {
        log: Arc<Log>,
        decoder: ValueDecoder,
    },
    /// Any other stream; the reason is the error a write gets.
    Refused(String),
}

impl Target {
    /// The target of an in-memory stream of `schema` (ending in `rowtime`) in `options`'
    /// value format, with `timestamp` its event-time column.
    pub(crate) fn memory(
        log: Arc<Log>,
        options: &Options,
        schema: SchemaRef,
        timestamp: Option<usize>,
    ) -> Target {
        match ValueFormat::from_options(options)
            .and_then(|format| ValueDecoder::new(format, schema, timestamp))
            .map(|decoder| decoder.with_timestamp_format(timestamp, options))
        {
            Ok(decoder) => Target::Writable { log, decoder },
            Err(e) => Target::Refused(e.to_string()),
        }
    }
}

/// A cheap, cloneable handle writing raw payloads into the engine's in-memory streams.
#[derive(Debug, Clone, Default)]
pub struct StreamWriters {
    targets: Arc<RwLock<BTreeMap<String, Arc<Target>>>>,
}

impl StreamWriters {
    /// Decodes `payload` as one event of `stream` and appends it, as `INSERT INTO` does: its
    /// `rowtime` is the stream's `timestamp` column when declared and set, else the arrival
    /// time. `origin` (e.g. the MQTT topic) names the event in errors. Returns once the row is
    /// in the stream's log, where running queries read it.
    pub fn write(&self, stream: &str, origin: &str, payload: &[u8]) -> Result<(), WriteError> {
        let target = {
            let targets = self.targets.read().unwrap_or_else(|e| e.into_inner());
            // Unquoted identifiers are lower-cased by the parser, so `Readings` means `readings`.
            targets
                .get(stream)
                .or_else(|| targets.get(&stream.to_lowercase()))
                .cloned()
        };
        let Some(target) = target else {
            return Err(WriteError::UnknownStream(stream.to_string()));
        };
        let (log, decoder) = match target.as_ref() {
            Target::Writable { log, decoder } => (log, decoder),
            Target::Refused(reason) => return Err(WriteError::NotWritable(reason.clone())),
        };
        let message = Message {
            key: None,
            payload: payload.to_vec(),
            no_value: false,
            timestamp_ms: None,
            position: Position {
                partition: 0,
                offset: 0,
            },
            origin: origin.to_string(),
            upstream: None,
        };
        let (batch, bad) = decoder.decode(std::slice::from_ref(&message));
        if let Some(bad) = bad.into_iter().next() {
            return Err(WriteError::BadEvent(bad.reason));
        }
        // The decoder already filled `rowtime` (event-time column, else now), which is all
        // `INSERT INTO`'s inserter adds before it appends.
        log.append(batch);
        Ok(())
    }

    /// Whether `stream` exists and takes direct writes.
    pub fn is_writable(&self, stream: &str) -> bool {
        let targets = self.targets.read().unwrap_or_else(|e| e.into_inner());
        matches!(
            targets
                .get(stream)
                .or_else(|| targets.get(&stream.to_lowercase()))
                .map(|t| t.as_ref()),
            Some(Target::Writable { .. })
        )
    }

    /// Replaces the whole registry with the engine's streams as they are now.
    pub(crate) fn replace(&self, targets: BTreeMap<String, Target>) {
        let targets = targets
            .into_iter()
            .map(|(name, target)| (name, Arc::new(target)))
            .collect();
        *self.targets.write().unwrap_or_else(|e| e.into_inner()) = targets;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::{Array, Float64Array, Int32Array};
    use eddy_udf_host::{Limits, UdfRuntime};

    use super::*;
    use crate::{Engine, EngineConfig, Output};

    fn engine() -> Engine {
        let runtime = UdfRuntime::new(None, Limits::default()).expect("wasm engine");
        Engine::new(eddy_sql::Session::new(runtime), EngineConfig::default())
    }

    async fn push(engine: &mut Engine, sql: &str) -> crate::PushQuery {
        match engine.execute(sql).await.unwrap() {
            Output::Push(p) => p,
            _ => panic!("{sql}: not a push query"),
        }
    }

    async fn rows(query: &mut crate::PushQuery, n: usize) -> Vec<(Option<i32>, Option<f64>)> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(10), query.rows.recv())
                .await
                .expect("rows in time")
                .expect("query still running");
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap();
            let speeds = batch
                .column(1)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap();
            for i in 0..batch.num_rows() {
                out.push((
                    ids.is_valid(i).then(|| ids.value(i)),
                    speeds.is_valid(i).then(|| speeds.value(i)),
                ));
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_reach_push_queries_and_follow_the_catalog() {
        let mut engine = engine();
        let writers = engine.stream_writers();
        assert_eq!(
            writers.write("readings", "car/1", b"{}"),
            Err(WriteError::UnknownStream("readings".into()))
        );
        engine
            .execute("CREATE STREAM readings (car_id INT, speed DOUBLE);")
            .await
            .unwrap();
        engine
            .execute(
                "CREATE STREAM lines (car_id INT, speed DOUBLE) WITH (value_format='DELIMITED');",
            )
            .await
            .unwrap();
        let mut query = push(
            &mut engine,
            "SELECT car_id, speed FROM readings EMIT CHANGES LIMIT 3;",
        )
        .await;
        let mut csv = push(
            &mut engine,
            "SELECT car_id, speed FROM lines EMIT CHANGES LIMIT 2;",
        )
        .await;
        writers
            .write("readings", "car/1", br#"{"car_id": 1, "speed": 10.5}"#)
            .unwrap();
        let bad = writers
            .write("READINGS", "car/1", b"{not json")
            .unwrap_err();
        assert!(
            matches!(&bad, WriteError::BadEvent(r) if r.contains("malformed JSON")),
            "{bad}"
        );
        let bad = writers.write("readings", "car/1", br#"{"car_id": "x", "speed": 1}"#);
        assert!(matches!(bad, Err(WriteError::BadEvent(_))), "{bad:?}");
        writers
            .write("Readings", "car/2", br#"{"car_id": 2, "speed": null}"#)
            .unwrap();
        writers
            .write("readings", "car/3", br#"{"CAR_ID": 3, "SPEED": 30}"#)
            .unwrap();
        assert_eq!(
            rows(&mut query, 3).await,
            vec![
                (Some(1), Some(10.5)),
                (Some(2), None),
                (Some(3), Some(30.0))
            ]
        );
        writers.write("lines", "car/1", b"7,1.5").unwrap();
        let bad = writers.write("lines", "car/1", b"7,1.5,9").unwrap_err();
        assert!(matches!(bad, WriteError::BadEvent(_)), "{bad}");
        writers.write("lines", "car/1", b"8,").unwrap();
        assert_eq!(
            rows(&mut csv, 2).await,
            vec![(Some(7), Some(1.5)), (Some(8), None)]
        );

        // A derived stream is written by its query only.
        engine
            .execute("CREATE STREAM fast AS SELECT car_id FROM readings WHERE speed > 20;")
            .await
            .unwrap();
        let refused = writers
            .write("fast", "car/1", br#"{"car_id": 1}"#)
            .unwrap_err();
        assert!(
            matches!(&refused, WriteError::NotWritable(r) if r.contains("query")),
            "{refused}"
        );
        assert!(!writers.is_writable("fast") && writers.is_writable("readings"));

        // Dropped: unknown. Created again: writable, into the new stream.
        // The push query over `lines` ended at its LIMIT; the engine reaps it asynchronously.
        drop(csv);
        let mut tries = 0;
        while let Err(e) = engine.execute("DROP STREAM lines;").await {
            tries += 1;
            assert!(tries < 100 && e.to_string().contains("uses it"), "{e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            writers.write("lines", "car/1", b"1,1"),
            Err(WriteError::UnknownStream("lines".into()))
        );
        engine
            .execute("CREATE STREAM lines (car_id INT, speed DOUBLE) WITH (value_format='JSON');")
            .await
            .unwrap();
        writers
            .write("lines", "car/1", br#"{"car_id": 9, "speed": 9}"#)
            .unwrap();
        engine.shutdown().await;
    }
}
