//! `PRINT`: a topic's records, or a stream kept in memory encoded as it would be written.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use eddy_connector::{Message, Position};
use tokio::sync::mpsc;

use super::catalog::{describe_source, Spec};
use super::{Engine, Output, PushQuery};
use crate::connectors;
use crate::format::ValueFormat;
use crate::log::Log;
use crate::{Error, Result};

impl Engine {
    /// `PRINT topic`: the topic's records (time, partition, offset, key, value) as they come,
    /// read by a consumer group of its own so it takes nothing from running queries.
    pub(super) async fn print(
        &mut self,
        topic: &str,
        from_beginning: bool,
        limit: Option<usize>,
    ) -> Result<Output> {
        // A stream's name works too: its topic, or the rows of a stream kept in memory.
        let mut topic = topic.to_string();
        if let Some(r) = self.relations.get(&topic.to_lowercase()) {
            match (&r.spec, &r.log) {
                (Spec::Kafka { topic: t }, _) => topic = t.clone(),
                (_, Some(log)) => {
                    let format = ValueFormat::from_options(&r.options)?;
                    return Ok(print_log(
                        &topic,
                        log.clone(),
                        format,
                        from_beginning,
                        limit,
                    ));
                }
                _ => {
                    return Err(Error::Unsupported(format!(
                        "PRINT {topic}: it reads {}, which PRINT cannot show; PRINT takes a \
                         Kafka topic or a stream kept in memory",
                        describe_source(r)
                    )))
                }
            }
        }
        let topic = topic.as_str();
        let settings = self.kafka("PRINT")?;
        let group = format!(
            "{}-print-{}",
            self.config.service_id,
            crate::format::common::now_ms()
        );
        let mut source = connectors::kafka_source(settings, &group, topic, from_beginning).await?;
        let schema = print_schema();
        let (tx, rx) = mpsc::channel(16);
        let out_schema = schema.clone();
        let limit = limit.unwrap_or(usize::MAX);
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < limit && !tx.is_closed() {
                let messages = match source
                    .poll((limit - sent).min(1000), Duration::from_millis(200))
                    .await
                {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("PRINT: {e}");
                        break;
                    }
                };
                if messages.is_empty() {
                    continue;
                }
                sent += messages.len();
                let batch = print_batch(&out_schema, &messages);
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        });
        Ok(Output::Push(PushQuery {
            id: format!("PRINT_{}", topic.to_uppercase()),
            schema,
            rows: rx,
        }))
    }
}

/// The columns PRINT shows, for a topic or a stream.
pub(super) fn print_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "rowtime",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
    ]))
}

/// PRINT's rows for `messages`: time, partition, offset, and key and value as text.
pub(super) fn print_batch(schema: &SchemaRef, messages: &[Message]) -> RecordBatch {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(
            messages.iter().map(|m| m.timestamp_ms).collect::<Vec<_>>(),
        )),
        Arc::new(Int32Array::from_iter_values(
            messages.iter().map(|m| m.position.partition),
        )),
        Arc::new(Int64Array::from_iter_values(
            messages.iter().map(|m| m.position.offset),
        )),
        Arc::new(StringArray::from_iter(
            messages.iter().map(|m| m.key.as_deref().map(text)),
        )),
        Arc::new(StringArray::from_iter_values(
            messages.iter().map(|m| text(&m.payload)),
        )),
    ];
    RecordBatch::try_new(schema.clone(), columns).expect("columns match")
}

/// `PRINT` over a stream kept in memory: its rows encoded in the stream's value format, as
/// they would be written to a topic; `offset` counts rows from where printing started.
pub(super) fn print_log(
    name: &str,
    log: Arc<Log>,
    format: ValueFormat,
    from_beginning: bool,
    limit: Option<usize>,
) -> Output {
    let schema = print_schema();
    let (tx, rx) = mpsc::channel(16);
    let out_schema = schema.clone();
    let limit = limit.unwrap_or(usize::MAX);
    tokio::spawn(async move {
        let mut next = if from_beginning { 0 } else { log.end() };
        let mut sent = 0usize;
        while sent < limit && !tx.is_closed() {
            let read = log.read(next, 64);
            next = read.next;
            if read.batches.is_empty() {
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), log.wait_beyond(next)).await;
                continue;
            }
            for batch in read.batches {
                let records = match format.encode(&batch) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("PRINT: {e}");
                        return;
                    }
                };
                let take = records.len().min(limit - sent);
                let messages: Vec<Message> = records
                    .into_iter()
                    .take(take)
                    .zip(sent as i64..)
                    .map(|(r, offset)| Message {
                        key: r.key,
                        payload: r.payload.unwrap_or_default(),
                        no_value: false,
                        timestamp_ms: r.timestamp_ms,
                        position: Position {
                            partition: 0,
                            offset,
                        },
                        origin: String::new(),
                        upstream: None,
                    })
                    .collect();
                sent += take;
                let batch = print_batch(&out_schema, &messages);
                if tx.send(batch).await.is_err() || sent >= limit {
                    return;
                }
            }
        }
    });
    Output::Push(PushQuery {
        id: format!("PRINT_{}", name.to_uppercase()),
        schema,
        rows: rx,
    })
}
