//! An aggregation's groups as a checkpoint section, and back: each group's window, key, the
//! bounds it last emitted, then its state row (GROUP BY values and its aggregates' `state()`
//! fields), which is restored as it is.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Int64Array, Int64Builder, RecordBatch,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};

use super::groups::Groups;
use super::Aggregation;
use crate::{Error, Result};

/// Columns before the state rows: window id, key bytes, emitted bounds.
const FIXED: usize = 5;

impl Aggregation {
    /// The schema of [`Aggregation::snapshot`]: fixed columns, then the groups' state rows
    /// (GROUP BY values, then each aggregate's state fields).
    fn checkpoint_schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("window_start", DataType::Int64, false),
            Field::new("window_end", DataType::Int64, false),
            Field::new("key", DataType::Binary, false),
            Field::new("emitted_start", DataType::Int64, true),
            Field::new("emitted_end", DataType::Int64, true),
        ];
        fields.extend(
            self.groups
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone()),
        );
        Arc::new(Schema::new(fields))
    }

    /// Every group, one row each.
    pub(crate) fn snapshot(&mut self) -> Result<RecordBatch> {
        let schema = self.checkpoint_schema();
        let ids = self.groups.ids();
        let n = ids.len();
        let mut ws = Int64Builder::with_capacity(n);
        let mut we = Int64Builder::with_capacity(n);
        let mut keys = BinaryBuilder::new();
        let mut es = Int64Builder::with_capacity(n);
        let mut ee = Int64Builder::with_capacity(n);
        for &id in &ids {
            let meta = self.groups.meta(id).expect("a live group");
            ws.append_value(meta.window.0);
            we.append_value(meta.window.1);
            keys.append_value(&meta.key);
            es.append_option(meta.emitted.map(|e| e.0));
            ee.append_option(meta.emitted.map(|e| e.1));
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(ws.finish()),
            Arc::new(we.finish()),
            Arc::new(keys.finish()),
            Arc::new(es.finish()),
            Arc::new(ee.finish()),
        ];
        arrays.extend(self.groups.rows(&ids)?);
        Ok(RecordBatch::try_new_with_options(
            schema,
            arrays,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// Replaces the groups with those of `batch`, written by [`Aggregation::snapshot`] of the
    /// same query; a checkpoint of another query shape is refused. The state rows are taken
    /// as they are: restoring costs no call per group.
    pub(crate) fn restore(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = self.checkpoint_schema();
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
        let mut groups = Groups::new(self.groups.schema().clone());
        let mut ids = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let id = groups.insert((ws.value(row), we.value(row)), keys.value(row));
            let meta = groups.meta_mut(id).expect("just inserted");
            meta.emitted = (!es.is_null(row)).then(|| (es.value(row), ee.value(row)));
            ids.push(id);
        }
        let rows = RecordBatch::try_new_with_options(
            groups.schema().clone(),
            batch.columns()[FIXED..].to_vec(),
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        groups.append(rows, &ids)?;
        self.groups = groups;
        self.changed.clear();
        self.retract.clear();
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
