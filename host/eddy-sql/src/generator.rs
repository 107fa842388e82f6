//! `car_sensor(rows [, seed [, cars]])`: the built-in bounded source of generated car events.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use eddy_generator::{Generator, GeneratorConfig};

/// The table function, registered as `car_sensor`.
#[derive(Debug)]
pub(crate) struct CarSensorFunction;

/// One partition streaming a generator's batches, produced lazily.
#[derive(Debug)]
struct CarSensorPartition {
    schema: SchemaRef,
    config: GeneratorConfig,
}

impl PartitionStream for CarSensorPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut config = self.config.clone();
        config.batch_size = ctx.session_config().batch_size();
        let batches = Generator::new(config).map(Ok);
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches),
        ))
    }
}

fn integer(expr: &Expr, what: &str) -> Result<u64> {
    let value = match expr {
        Expr::Literal(v, _) => v.clone(),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => v.clone(),
            _ => ScalarValue::Null,
        },
        _ => ScalarValue::Null,
    };
    match value {
        ScalarValue::Int64(Some(v)) if v >= 0 => Ok(v as u64),
        ScalarValue::Int32(Some(v)) if v >= 0 => Ok(v as u64),
        ScalarValue::UInt64(Some(v)) => Ok(v),
        _ => plan_err!("car_sensor: {what} must be a non-negative integer literal, got {expr}"),
    }
}

impl TableFunctionImpl for CarSensorFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 3 {
            return plan_err!(
                "car_sensor(rows [, seed [, cars]]) takes 1 to 3 arguments, got {}",
                exprs.len()
            );
        }
        let mut config = GeneratorConfig {
            rows: integer(&exprs[0], "rows")?,
            ..GeneratorConfig::default()
        };
        if let Some(seed) = exprs.get(1) {
            config.seed = integer(seed, "seed")?;
        }
        if let Some(cars) = exprs.get(2) {
            let cars = integer(cars, "cars")?;
            if cars == 0 || cars > u32::MAX as u64 {
                return plan_err!("car_sensor: cars must be between 1 and {}", u32::MAX);
            }
            config.cars = cars as u32;
        }
        let schema = eddy_generator::schema();
        let partition = Arc::new(CarSensorPartition {
            schema: schema.clone(),
            config,
        });
        Ok(Arc::new(StreamingTable::try_new(schema, vec![partition])?))
    }
}
