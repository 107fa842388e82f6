//! A SQL session: DataFusion's context plus Eddy's functions and sources.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use eddy_udf_host::{Component, Limits, UdfRuntime, WasmScalarUdf};

use crate::generator::CarSensorFunction;
use crate::statement::{parse, LimitOverrides, Statement};
use crate::{Access, Budget, Error, Query, Result};

/// What a statement produced.
#[derive(Debug)]
pub enum Output {
    /// A result table.
    Rows {
        /// Its schema (also when there are no rows).
        schema: SchemaRef,
        /// Its rows.
        batches: Vec<RecordBatch>,
    },
    /// A confirmation for a statement without rows.
    Message(String),
}

/// A statement made ready by [`Session::prepare`].
#[derive(Debug)]
pub enum Prepared {
    /// One of Eddy's own statements, already run.
    Done(Output),
    /// A DataFusion statement, to be run by the caller, who may let go of the session first.
    Query(Query),
}

/// A component compiled ahead of its `CREATE FUNCTION`; see [`Session::warm_up`].
pub struct WarmUp {
    runtime: UdfRuntime,
    path: PathBuf,
    limits: eddy_udf_host::Limits,
}

impl WarmUp {
    /// Compiles the component into the cache; a failure is left for the statement to report.
    pub async fn run(self) {
        let WarmUp {
            runtime,
            path,
            limits,
        } = self;
        let _ =
            tokio::task::spawn_blocking(move || runtime.load_file_with_limits(path, limits)).await;
    }
}

/// One user's SQL session.
pub struct Session {
    ctx: SessionContext,
    pub(crate) runtime: UdfRuntime,
    pub(crate) functions: BTreeMap<String, Arc<WasmScalarUdf>>,
    build_jobs: Option<usize>,
    access: Access,
    budget: Budget,
}

impl Session {
    /// A session whose UDFs run in `runtime`.
    pub fn new(runtime: UdfRuntime) -> Session {
        Session::with_config(runtime, SessionConfig::new())
    }

    /// A session with DataFusion settings of the caller's choice (batch size, partitions).
    pub fn with_config(runtime: UdfRuntime, config: SessionConfig) -> Session {
        let mut state = SessionStateBuilder::new()
            .with_config(config.with_information_schema(true))
            .with_default_features();
        crate::functions::register(&mut state);
        let ctx = SessionContext::new_with_state(state.build());
        crate::functions::register_lambdas(&ctx);
        ctx.register_udtf("car_sensor", Arc::new(CarSensorFunction));
        Session {
            ctx,
            runtime,
            functions: BTreeMap::new(),
            build_jobs: None,
            access: Access::full(),
            budget: Budget::default(),
        }
    }

    /// Restricts what statements may reach outside the engine (files, settings, builds).
    pub fn set_access(&mut self, access: Access) {
        self.access = access;
    }

    /// What statements may reach outside the engine.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Bounds each DataFusion query's memory and time.
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// A DataFusion statement to run on this session's context, under its access and budget.
    pub fn query(&self, sql: impl Into<String>) -> Query {
        Query::new(
            self.ctx.clone(),
            sql.into(),
            self.access.clone(),
            self.budget,
        )
    }

    /// For `CREATE FUNCTION … FROM 'file.wasm'`: the compile, which takes seconds for a large
    /// component, as a job that needs no session. Run it first, and the statement itself finds
    /// the component in the compile cache.
    pub fn warm_up(&self, sql: &str) -> Option<WarmUp> {
        let Ok(Statement::CreateFunction { path, limits, .. }) = parse(sql) else {
            return None;
        };
        let path = PathBuf::from(path);
        path.is_file().then(|| WarmUp {
            limits: limits.apply(self.runtime.limits()),
            runtime: self.runtime.clone(),
            path,
        })
    }

    /// Runs Eddy's own statements at once; DataFusion statements come back unplanned, so the
    /// caller can run them without holding the session.
    pub async fn prepare(&mut self, sql: &str) -> Result<Prepared> {
        match parse(sql)? {
            Statement::Sql(sql) => Ok(Prepared::Query(self.query(sql))),
            _ => Ok(Prepared::Done(self.execute(sql).await?)),
        }
    }

    /// Limits parallel jobs when `CREATE FUNCTION` builds a UDF crate.
    pub fn set_build_jobs(&mut self, jobs: Option<usize>) {
        self.build_jobs = jobs;
    }

    /// The DataFusion context, for registering tables and native functions.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The wasm runtime this session's functions run in.
    pub fn runtime(&self) -> &UdfRuntime {
        &self.runtime
    }

    /// The wasm UDFs currently registered, by name.
    pub fn functions(&self) -> &BTreeMap<String, Arc<WasmScalarUdf>> {
        &self.functions
    }

    /// Runs one statement.
    pub async fn execute(&mut self, sql: &str) -> Result<Output> {
        match parse(sql)? {
            Statement::CreateFunction {
                name,
                path,
                limits,
                shadow: Some(shadow),
                ..
            } => self.create_shadow(&name, &path, &limits, &shadow).await,
            Statement::CreateFunction {
                name,
                path,
                or_replace,
                limits,
                shadow: None,
            } => {
                self.create_function(&name, &path, or_replace, &limits)
                    .await
            }
            Statement::AlterFunction { name, action } => self.alter_function(&name, action),
            Statement::DropFunction {
                name, if_exists, ..
            } => self.drop_function(&name, if_exists),
            Statement::ShowFunctions => Ok(self.show_functions()),
            Statement::DescribeFunction { name, extended } => {
                self.describe_function(&name, extended)
            }
            Statement::Sql(sql) => self.query(sql).collect().await,
        }
    }

    /// Runs one statement and returns its rows as a stream.
    ///
    /// A query's batches are computed as the stream is read, so the session is free for other
    /// statements meanwhile: a `CREATE OR REPLACE FUNCTION` then reaches the running query at its
    /// next batch. Eddy's own statements run to completion first; one without rows streams a
    /// single row in a `message` column.
    pub async fn execute_stream(&mut self, sql: &str) -> Result<SendableRecordBatchStream> {
        let statement = parse(sql)?;
        let output = match statement {
            Statement::Sql(sql) => return self.query(sql).stream().await,
            _ => self.execute(sql).await?,
        };
        let (schema, batches) = match output {
            Output::Rows { schema, batches } => (schema, batches),
            Output::Message(message) => {
                let schema = Arc::new(Schema::new(vec![Field::new(
                    "message",
                    DataType::Utf8,
                    false,
                )]));
                let column: ArrayRef = Arc::new(StringArray::from(vec![message]));
                let batch = RecordBatch::try_new(schema.clone(), vec![column])
                    .expect("column matches schema");
                (schema, vec![batch])
            }
        };
        Ok(Box::pin(MemoryStream::try_new(batches, schema, None)?))
    }

    pub(crate) async fn load(&self, path: &str, limits: Limits) -> Result<Arc<Component>> {
        let path = PathBuf::from(path);
        let runtime = self.runtime.clone();
        let jobs = self.build_jobs;
        // Building and compiling take seconds: keep them off the async workers.
        tokio::task::spawn_blocking(move || -> Result<Arc<Component>> {
            let file = if path.is_dir() {
                let options = eddy_udf_build::BuildOptions {
                    jobs,
                    quiet: true,
                    ..Default::default()
                };
                let mut built = eddy_udf_build::build(&path, &options)?;
                if built.len() != 1 {
                    return Err(Error::Function(format!(
                        "{} built {} components; name one .wasm file instead",
                        path.display(),
                        built.len()
                    )));
                }
                built.remove(0).component
            } else {
                path
            };
            Ok(runtime.load_file_with_limits(file, limits)?)
        })
        .await
        .map_err(|e| Error::Function(format!("loading was interrupted: {e}")))?
    }

    async fn create_function(
        &mut self,
        name: &str,
        path: &str,
        or_replace: bool,
        limits: &LimitOverrides,
    ) -> Result<Output> {
        self.access.check_build(std::path::Path::new(path))?;
        let limits = limits.apply(self.runtime.limits());
        let component = self.load(path, limits).await.map_err(|e| match e {
            // Its own limits can stop a component before it says what it provides.
            Error::Udf(e @ eddy_udf_host::Error::Instantiate { .. }) => {
                Error::Function(format!("function '{name}': {e}"))
            }
            e => e,
        })?;
        if component.function(name).is_none() {
            let provided: Vec<&str> = component
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            return Err(Error::Function(format!(
                "{path} does not provide a function named '{name}'; it provides: {}",
                provided.join(", ")
            )));
        }
        // The same bytes under other limits are another version: instances differ.
        let same = |existing: &WasmScalarUdf| {
            let serving = existing.component();
            serving.hash == component.hash && serving.limits == component.limits
        };
        // Check every name first, so a refused statement changes nothing.
        for f in &component.functions {
            match self.functions.get(&f.name) {
                Some(existing) if same(existing) => {}
                Some(existing) if !or_replace => {
                    return Err(Error::Function(format!(
                        "function '{}' already exists (version {} from {}); use CREATE OR REPLACE FUNCTION",
                        f.name,
                        short(&existing.component().hash),
                        existing.component().source
                    )))
                }
                Some(_) => {}
                None if self.ctx.state().scalar_functions().contains_key(&f.name) => {
                    return Err(Error::Function(format!(
                        "'{}' is a built-in function and cannot be replaced",
                        f.name
                    )))
                }
                None => {}
            }
        }
        let mut changed = Vec::new();
        for f in &component.functions {
            let existing = self.functions.get(&f.name).cloned();
            match existing {
                Some(e) if same(&e) => continue,
                // Same types: swap in place, so running queries move to it at a batch boundary.
                Some(e) if e.compatible(&component) => {
                    e.replace(component.clone()).map_err(Error::Function)?;
                }
                _ => {
                    let udf = Arc::new(
                        WasmScalarUdf::new(component.clone(), &f.name)
                            .expect("the component describes this function"),
                    );
                    self.ctx
                        .register_udf(ScalarUDF::new_from_shared_impl(udf.clone()));
                    self.functions.insert(f.name.clone(), udf);
                }
            }
            changed.push(f.name.as_str());
        }
        if changed.is_empty() {
            return Ok(Output::Message(format!(
                "{path} (version {}) is already loaded",
                short(&component.hash)
            )));
        }
        Ok(Output::Message(format!(
            "Loaded {} (version {}): {}",
            path,
            short(&component.hash),
            changed.join(", ")
        )))
    }

    fn drop_function(&mut self, name: &str, if_exists: bool) -> Result<Output> {
        if self.functions.remove(name).is_some() {
            self.ctx.deregister_udf(name);
            Ok(Output::Message(format!("Dropped function {name}")))
        } else if if_exists {
            Ok(Output::Message(format!("Function {name} does not exist")))
        } else {
            Err(Error::Function(format!("function '{name}' does not exist")))
        }
    }

    fn show_functions(&self) -> Output {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("signature", DataType::Utf8, false),
            Field::new("version", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new(
                "loaded_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("calls", DataType::UInt64, false),
            Field::new("rows", DataType::UInt64, false),
            Field::new("row_errors", DataType::UInt64, false),
            Field::new("traps", DataType::UInt64, false),
            Field::new("shadow", DataType::Utf8, true),
            Field::new("previous", DataType::Utf8, true),
        ]));
        let udfs: Vec<_> = self.functions.values().collect();
        let text = |f: &dyn Fn(&WasmScalarUdf) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(udfs.iter().map(|u| f(u))))
        };
        let count = |f: &dyn Fn(&WasmScalarUdf) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(udfs.iter().map(|u| f(u))))
        };
        let columns = vec![
            text(&|u| u.description().name),
            text(&|u| u.description().display()),
            text(&|u| short(&u.component().hash).to_string()),
            text(&|u| u.component().source.clone()),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    udfs.iter().map(|u| millis(u.component().loaded_at)),
                )
                .with_timezone("UTC"),
            ),
            count(&|u| u.stats().calls.load(Ordering::Relaxed)),
            count(&|u| u.stats().rows.load(Ordering::Relaxed)),
            count(&|u| u.stats().row_errors.load(Ordering::Relaxed)),
            count(&|u| u.stats().traps.load(Ordering::Relaxed)),
            Arc::new(StringArray::from_iter(udfs.iter().map(|u| {
                u.shadow().map(|s| short(&s.component.hash).to_string())
            }))),
            Arc::new(StringArray::from_iter(
                udfs.iter()
                    .map(|u| u.previous().map(|p| short(&p.hash).to_string())),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match schema");
        Output::Rows {
            schema,
            batches: vec![batch],
        }
    }

    fn describe_function(&self, name: &str, extended: bool) -> Result<Output> {
        let udf = self.functions.get(name).ok_or_else(|| {
            Error::Function(format!(
                "function '{name}' does not exist (see SHOW FUNCTIONS)"
            ))
        })?;
        let f = udf.description();
        let component = udf.component();
        let params: Vec<String> = f
            .params
            .iter()
            .map(|(n, t)| format!("{n} {}", t.sql_name()))
            .collect();
        let mut rows = vec![
            ("name", f.name.clone()),
            ("signature", f.display()),
            ("parameters", params.join(", ")),
            ("returns", f.returns.sql_name().to_string()),
            ("volatility", format!("{:?}", f.volatility).to_lowercase()),
            (
                "sandbox",
                if component.deterministic {
                    "fixed clock and random (every function of the component is immutable)"
                } else {
                    "the host's clock and random (a function of the component is not immutable)"
                }
                .to_string(),
            ),
            ("description", f.doc.clone()),
            ("version", component.hash.clone()),
            ("source", component.source.clone()),
            (
                "max_memory",
                format!("{} bytes", component.limits.max_memory),
            ),
            ("timeout", format!("{:?}", component.limits.timeout)),
            (
                "max_log_lines",
                component.limits.max_log_lines_per_call.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<Vec<_>>();
        if extended {
            rows.extend(crate::rollout::extended_rows(udf));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("property", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.as_str()),
                )),
            ],
        )
        .expect("columns match schema");
        Ok(Output::Rows {
            schema,
            batches: vec![batch],
        })
    }
}

/// The first 12 hex digits of a version hash, as `SHOW FUNCTIONS` shows versions.
pub(crate) fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
