//! Runs `tests/slt/**/*.slt`: SQL behaviour as data, one trial per file, each on a fresh session.
//!
//! `$UDFS` in a statement is replaced by the directory of the components built from `udfs/`.
//! Run one file: `cargo test -p eddy-tests --test slt -- udf/temperature`.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_sql::{Output, Session};
use libtest_mimic::{Arguments, Failed, Trial};
use sqllogictest::{DBOutput, DefaultColumnType};

/// A session under sqllogictest.
struct EddyDb {
    session: Session,
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
        match self.session.execute(&sql).await {
            Ok(Output::Message(_)) => Ok(DBOutput::StatementComplete(0)),
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
                session: eddy_tests::session(),
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
