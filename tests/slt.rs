//! Runs `tests/slt/**/*.slt`: SQL behaviour as data, one trial per file, each on a fresh engine.
//!
//! `$UDFS` in a statement is replaced by the directory of the components built from `udfs/`.
//! A push query (`… EMIT CHANGES LIMIT n`) returns its first n rows, or fails after 10 s; a pull
//! query first waits until the running queries have consumed what was inserted.
//! Run one file: `cargo test -p eddy-tests --test slt -- udf/temperature`.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_stream::{Engine, EngineConfig, Output};
use libtest_mimic::{Arguments, Failed, Trial};
use sqllogictest::{DBOutput, DefaultColumnType};

/// A session under sqllogictest.
struct EddyDb {
    engine: Engine,
}

/// A statement's error, as the `statement error <regex>` lines see it.
#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for EddyDb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let udfs = eddy_tests::components().display().to_string();
        let sql = sql.replace("$UDFS", &udfs);
        let output = match self.engine.execute(&sql).await {
            Ok(Output::Push(mut push)) => {
                let mut batches = Vec::new();
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    match tokio::time::timeout_at(deadline, push.rows.recv()).await {
                        Ok(Some(batch)) => batches.push(batch),
                        Ok(None) => break,
                        Err(_) => {
                            return Err(SqlError(format!(
                                "push query gave {} rows in 10 s and has not reached its LIMIT",
                                batches.iter().map(|b| b.num_rows()).sum::<usize>()
                            )))
                        }
                    }
                }
                Ok(Output::Rows {
                    schema: push.schema,
                    batches,
                })
            }
            other => other,
        };
        match output {
            Ok(Output::Message(_)) | Ok(Output::Push(_)) => Ok(DBOutput::StatementComplete(0)),
            Ok(Output::Rows { schema, batches }) => {
                let options = FormatOptions::default().with_null("NULL");
                let mut rows = Vec::new();
                for batch in &batches {
                    let formatters = batch
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| SqlError(e.to_string()))?;
                    for row in 0..batch.num_rows() {
                        rows.push(
                            formatters
                                .iter()
                                .zip(batch.columns())
                                .map(|(f, c)| {
                                    let text = f.value(row).to_string();
                                    // slt cannot show an empty cell; write it as (empty).
                                    if text.is_empty() && !c.is_null(row) {
                                        "(empty)".to_string()
                                    } else {
                                        text
                                    }
                                })
                                .collect(),
                        );
                    }
                }
                let types = schema
                    .fields()
                    .iter()
                    .map(|f| column_type(f.data_type()))
                    .collect();
                Ok(DBOutput::Rows { types, rows })
            }
            Err(e) => Err(SqlError(e.to_string())),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "eddy"
    }
}

fn run_file(path: &Path) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut runner = sqllogictest::Runner::new(|| async {
            Ok(EddyDb {
                engine: Engine::new(eddy_tests::session(), EngineConfig::default()),
            })
        });
        runner
            .run_file_async(path)
            .await
            .map_err(|e| Failed::from(e.display(true).to_string()))
    })
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/slt exists")
        .map(|e| e.expect("readable dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            slt_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files = Vec::new();
    slt_files(&root, &mut files);
    assert!(!files.is_empty(), "no .slt files under {}", root.display());
    let trials = files
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(&root)
                .expect("under root")
                .with_extension("")
                .display()
                .to_string();
            Trial::test(name, move || run_file(&path))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
