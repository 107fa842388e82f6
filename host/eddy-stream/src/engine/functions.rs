//! Functions in use: SHOW FUNCTIONS lists the queries calling each, DROP FUNCTION checks them.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Engine, Output};
use crate::{Error, Result};

impl Engine {
    /// Running queries that call `function`.
    pub(super) fn users_of(&self, function: &str) -> Vec<String> {
        self.queries
            .iter()
            .filter(|(_, q)| q.functions.contains(function))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// `DROP FUNCTION name` while a running query calls it is refused; with `FORCE` (not
    /// checked here) it goes ahead, and running queries keep the version they have.
    pub(super) fn check_drop_function(&self, name: &str) -> Result<()> {
        let users = self.users_of(name);
        if !users.is_empty() {
            return Err(Error::Catalog(format!(
                "cannot drop function '{name}': running queries use it ({}); TERMINATE them \
                 first, or DROP FUNCTION {name} FORCE (they keep the version they have)",
                users.join(", ")
            )));
        }
        Ok(())
    }

    /// SHOW FUNCTIONS with a `queries` column: the running queries that call each function.
    pub(super) fn with_users(
        &self,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<Output> {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("queries", DataType::Utf8, false));
        let out_schema = Arc::new(Schema::new(fields));
        let mut out = Vec::new();
        for batch in batches {
            let names = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::Plan("SHOW FUNCTIONS: name is not text".into()))?;
            let users: StringArray = (0..batch.num_rows())
                .map(|i| Some(self.users_of(names.value(i)).join(", ")))
                .collect();
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(users));
            out.push(RecordBatch::try_new(out_schema.clone(), columns)?);
        }
        Ok(Output::Rows {
            schema: out_schema,
            batches: out,
        })
    }
}
