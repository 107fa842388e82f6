//! An aggregation's groups as a checkpoint section, and back: each group's window, key, the
//! bounds it last emitted, its GROUP BY values and its accumulators' `state()`, which restore
//! through `merge_batch` into fresh accumulators, as DataFusion merges partial aggregates.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Int64Array, Int64Builder, RecordBatch,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::ScalarValue;

use super::{to_array, Aggregation, Group};
use crate::{Error, Result};

/// Columns before the group values: window id, key bytes, emitted bounds.
const FIXED: usize = 5;

impl Aggregation {
    /// The schema of [`Aggregation::snapshot`]: fixed columns, GROUP BY values, then each
    /// aggregate's state fields.
    fn state_schema(&self) -> Result<SchemaRef> {
        let mut fields = vec![
            Field::new("window_start", DataType::Int64, false),
            Field::new("window_end", DataType::Int64, false),
            Field::new("key", DataType::Binary, false),
            Field::new("emitted_start", DataType::Int64, true),
            Field::new("emitted_end", DataType::Int64, true),
        ];
        let emitted = self.emitted.schema();
        for i in 0..self.group.len() {
            let f = emitted.field(i);
            fields.push(Field::new(
                format!("group_{i}_{}", f.name()),
                f.data_type().clone(),
                true,
            ));
        }
        for (j, a) in self.aggregates.iter().enumerate() {
            for (k, f) in a.state_fields()?.iter().enumerate() {
                fields.push(Field::new(
                    format!("state_{j}_{k}_{}", f.name()),
                    f.data_type().clone(),
                    true,
                ));
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Every group, one row each.
    pub(crate) fn snapshot(&mut self) -> Result<RecordBatch> {
        let schema = self.state_schema()?;
        let n: usize = self.groups.values().map(|g| g.len()).sum();
        let mut ws = Int64Builder::with_capacity(n);
        let mut we = Int64Builder::with_capacity(n);
        let mut keys = BinaryBuilder::new();
        let mut es = Int64Builder::with_capacity(n);
        let mut ee = Int64Builder::with_capacity(n);
        let values = schema.fields().len() - FIXED;
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(n); values];
        for (window, groups) in &mut self.groups {
            for (key, group) in groups {
                ws.append_value(window.0);
                we.append_value(window.1);
                keys.append_value(key);
                es.append_option(group.emitted.map(|e| e.0));
                ee.append_option(group.emitted.map(|e| e.1));
                let mut c = 0;
                for v in &group.keys {
                    columns[c].push(v.clone());
                    c += 1;
                }
                for a in &mut group.accumulators {
                    for v in a.state()? {
                        columns[c].push(v);
                        c += 1;
                    }
                }
            }
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(ws.finish()),
            Arc::new(we.finish()),
            Arc::new(keys.finish()),
            Arc::new(es.finish()),
            Arc::new(ee.finish()),
        ];
        for (values, field) in columns.into_iter().zip(&schema.fields()[FIXED..]) {
            arrays.push(to_array(values, field.data_type())?);
        }
        Ok(RecordBatch::try_new(schema, arrays)?)
    }

    /// Replaces the groups with those of `batch`, written by [`Aggregation::snapshot`] of the
    /// same query; a checkpoint of another query shape is refused.
    pub(crate) fn restore(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = self.state_schema()?;
        if batch.schema().fields() != schema.fields() {
            return Err(Error::State(format!(
                "the checkpoint holds groups of another query (its state has columns {}, this \
                 query's has {})",
                names(&batch.schema()),
                names(&schema)
            )));
        }
        let int = |i: usize| -> &Int64Array { batch.column(i).as_primitive::<Int64Type>() };
        let (ws, we, es, ee) = (int(0), int(1), int(3), int(4));
        let keys = batch.column(2).as_binary::<i32>();
        let groups = self.group.len();
        let widths = self
            .aggregates
            .iter()
            .map(|a| Ok(a.state_fields()?.len()))
            .collect::<Result<Vec<_>>>()?;
        self.groups.clear();
        self.changed.clear();
        self.retract.clear();
        for row in 0..batch.num_rows() {
            let values = (0..groups)
                .map(|i| ScalarValue::try_from_array(batch.column(FIXED + i), row))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let mut at = FIXED + groups;
            let mut accumulators = Vec::with_capacity(self.aggregates.len());
            for (a, &width) in self.aggregates.iter().zip(&widths) {
                let mut accumulator = a.create_accumulator()?;
                let state: Vec<ArrayRef> = (at..at + width)
                    .map(|c| batch.column(c).slice(row, 1))
                    .collect();
                accumulator.merge_batch(&state)?;
                accumulators.push(accumulator);
                at += width;
            }
            let emitted = (!es.is_null(row)).then(|| (es.value(row), ee.value(row)));
            self.groups
                .entry((ws.value(row), we.value(row)))
                .or_default()
                .insert(
                    keys.value(row).to_vec(),
                    Group {
                        keys: values,
                        accumulators,
                        emitted,
                        changed: false,
                    },
                );
        }
        Ok(())
    }
}

fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
