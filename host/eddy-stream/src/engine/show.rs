//! What SHOW STREAMS, SHOW TABLES and SHOW QUERIES list, and their typed forms for the server.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};

use super::catalog::{describe_source, QueryInfo, Relation, RelationInfo, Spec};
use super::{Engine, Output};
use crate::format::common::{display_name, type_name};
use crate::statement::Kind;

impl Engine {
    /// The streams and tables, by name.
    pub fn relations(&self) -> Vec<RelationInfo> {
        self.relations
            .iter()
            .map(|(name, r)| RelationInfo {
                name: name.clone(),
                kind: r.kind,
                source: describe_source(r),
                topic: match &r.spec {
                    Spec::Kafka { topic } => Some(topic.clone()),
                    _ => r.options.get("kafka_topic").cloned(),
                },
                value_format: r
                    .options
                    .get("value_format")
                    .map_or_else(|| "JSON".to_string(), |f| f.to_uppercase()),
                columns: r
                    .schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), type_name(f.data_type())))
                    .collect(),
                schema: r.schema.clone(),
                keys: r.keys.clone(),
                windowed: r.windowed,
                sql: r.sql.clone(),
                writer: match &r.spec {
                    Spec::Derived { query } => Some(query.clone()),
                    _ => None,
                },
            })
            .collect()
    }

    /// The queries running now.
    pub fn queries(&self) -> Vec<QueryInfo> {
        self.queries
            .iter()
            .map(|(id, q)| QueryInfo {
                id: id.clone(),
                sql: q.sql.clone(),
                sink: q.sink.clone(),
                reads: q.reads.clone(),
                events_in: q.stats.events_in.load(Ordering::Relaxed),
                rows_out: q.stats.rows_out.load(Ordering::Relaxed),
                bad_events: q.stats.bad_events.load(Ordering::Relaxed),
                late_events: q.stats.late_events.load(Ordering::Relaxed),
                failed_events: q.stats.failed_events.load(Ordering::Relaxed),
                last_error: q.stats.last_error.lock().expect("stats lock").clone(),
                lag: Some(q.stats.lag.load(Ordering::Relaxed)).filter(|l| *l != u64::MAX),
                batch_duration: q.stats.batch_duration.snapshot(),
            })
            .collect()
    }

    pub(super) fn show(&self, kind: Kind) -> Output {
        let rows: Vec<(&String, &Relation)> = self
            .relations
            .iter()
            .filter(|(_, r)| r.kind == kind)
            .collect();
        let source = describe_source;
        let name = match kind {
            Kind::Stream => "stream",
            Kind::Table => "table",
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new(name, DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("columns", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(n, _)| display_name(n)),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, r)| source(r)),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, r)| {
                r.schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", display_name(f.name()), type_name(f.data_type())))
                    .collect::<Vec<_>>()
                    .join(", ")
            }))),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match");
        Output::Rows {
            schema,
            batches: vec![batch],
        }
    }

    /// `SHOW PROPERTIES`: the properties this session set (`SET 'key' = 'value'`).
    pub(super) fn show_properties(&self) -> Output {
        let schema = Arc::new(Schema::new(vec![
            Field::new("property", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(self.properties.keys())),
            Arc::new(StringArray::from_iter_values(self.properties.values())),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match");
        Output::Rows {
            schema,
            batches: vec![batch],
        }
    }

    pub(super) fn show_queries(&self) -> Output {
        let q = self.queries();
        let schema = Arc::new(Schema::new(vec![
            Field::new("query_id", DataType::Utf8, false),
            Field::new("sink", DataType::Utf8, true),
            Field::new("events_in", DataType::UInt64, false),
            Field::new("rows_out", DataType::UInt64, false),
            Field::new("bad_events", DataType::UInt64, false),
            Field::new("late_events", DataType::UInt64, false),
            Field::new("failed_events", DataType::UInt64, false),
            Field::new("last_error", DataType::Utf8, true),
        ]));
        let u = |f: fn(&QueryInfo) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(q.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                q.iter().map(|i| i.id.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                q.iter().map(|i| i.sink.as_deref().map(display_name)),
            )),
            u(|i| i.events_in),
            u(|i| i.rows_out),
            u(|i| i.bad_events),
            u(|i| i.late_events),
            u(|i| i.failed_events),
            Arc::new(StringArray::from_iter(
                q.iter().map(|i| i.last_error.as_deref()),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match");
        Output::Rows {
            schema,
            batches: vec![batch],
        }
    }
}
