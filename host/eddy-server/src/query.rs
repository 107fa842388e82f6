//! `POST /query`, `/query-stream`, `/close-query` and `/inserts-stream`.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eddy_stream::{Output, PushQuery};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use crate::error::{code, read_body, ApiError};
use crate::ksql::{parse_request, statement_error, statement_text};
use crate::rows;
use crate::AppState;

/// The delimited format of `/query-stream`: one JSON document per line.
const DELIMITED: &str = "application/vnd.ksqlapi.delimited.v1";

/// How rows are framed on the wire.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    /// `/query`: a JSON array of `{"header"}`, `{"row": {"columns"}}`, `{"finalMessage"}`.
    Query,
    /// `/query-stream` delimited: header object, then one array per line.
    Delimited,
    /// `/query-stream` with `Accept: application/json`: the same items in one JSON array.
    JsonArray,
}

/// What a query produced, before it is framed.
enum Source {
    Push(PushQuery),
    Pull(Vec<RecordBatch>),
}

struct Streamed {
    id: String,
    schema: SchemaRef,
    columns: Vec<usize>,
    source: Source,
}

async fn start(state: &AppState, sql: &str) -> Result<Streamed, ApiError> {
    let statements = eddy_sql::split_statements(sql);
    let [(_, statement)] = statements.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "expected exactly one SELECT statement, found {}",
            statements.len()
        )));
    };
    let shown = format!("{};", statement.trim().trim_end_matches(';'));
    let first = statement
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_uppercase();
    if first != "SELECT" {
        return Err(ApiError::statement(
            code::QUERY_ENDPOINT,
            "only SELECT statements can be sent to this endpoint: send other statements to /ksql",
            &shown,
        ));
    }
    let mut engine = state.engine.lock().await;
    let output = engine
        .execute(statement)
        .await
        .map_err(|e| statement_error(e, &shown))?;
    drop(engine);
    Ok(match output {
        Output::Push(push) => Streamed {
            id: push.id.clone(),
            columns: rows::visible_fields(&push.schema, statement),
            schema: push.schema.clone(),
            source: Source::Push(push),
        },
        Output::Rows { schema, batches } => Streamed {
            id: format!("pull_{}", state.http.next_pull()),
            columns: rows::visible_fields(&schema, statement),
            schema,
            source: Source::Pull(batches),
        },
        Output::Message(m) => {
            return Err(ApiError::statement(code::QUERY_ENDPOINT, m, &shown));
        }
    })
}

/// `POST /query`: `{"ksql": "SELECT …;", "streamsProperties": {}}`, answered as ksqlDB's chunked
/// JSON array. A push query runs until its LIMIT, its input ends, or the client goes away.
pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let request = parse_request(&bytes)?;
    let sql = statement_text(&request, "ksql")?;
    let streamed = start(&state, &sql).await?;
    Ok(respond(&state, streamed, Format::Query, None))
}

/// `POST /query-stream`: `{"sql": "SELECT …;", "properties": {}}`, answered in the delimited
/// format or, with `Accept: application/json`, as one JSON array. `/close-query` ends it.
pub(crate) async fn query_stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let request = parse_request(&bytes)?;
    let sql = statement_text(&request, "sql")?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = if accept.contains("application/json") && !accept.contains(DELIMITED) {
        Format::JsonArray
    } else {
        Format::Delimited
    };
    let streamed = start(&state, &sql).await?;
    let (close, closed) = oneshot::channel();
    state
        .closers
        .lock()
        .expect("closers lock")
        .insert(streamed.id.clone(), close);
    Ok(respond(&state, streamed, format, Some(closed)))
}

/// `POST /close-query`: `{"queryId": "…"}`; 200 when it was running, 400 otherwise.
pub(crate) async fn close_query(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let request = parse_request(&bytes)?;
    let id = statement_text(&request, "queryId")?;
    let closer = state.closers.lock().expect("closers lock").remove(&id);
    match closer.map(|c| c.send(())) {
        Some(Ok(())) => Ok(StatusCode::OK.into_response()),
        _ => Err(ApiError::bad_request(format!("No query with id {id}"))),
    }
}

enum Phase {
    Header,
    Rows,
    Done,
}

struct Stream {
    format: Format,
    id: String,
    schema: SchemaRef,
    columns: Vec<usize>,
    source: Source,
    pending: std::collections::VecDeque<Bytes>,
    phase: Phase,
    closed: Option<oneshot::Receiver<()>>,
    stopping: watch::Receiver<bool>,
    state: Arc<AppState>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // The client went away or the query ended: /close-query no longer finds it.
        if let Ok(mut closers) = self.state.closers.lock() {
            closers.remove(&self.id);
        }
        self.state.http.push_ended();
    }
}

impl Stream {
    fn header(&self) -> Bytes {
        let text = match self.format {
            Format::Query => format!(
                "[{}",
                json!({"header": {
                    "queryId": self.id,
                    "schema": rows::schema_string(&self.schema, &self.columns),
                }})
            ),
            Format::Delimited | Format::JsonArray => {
                let header = json!({
                    "queryId": self.id,
                    "columnNames": rows::column_names(&self.schema, &self.columns),
                    "columnTypes": rows::column_types(&self.schema, &self.columns),
                });
                if self.format == Format::JsonArray {
                    format!("[{header}")
                } else {
                    format!("{header}\n")
                }
            }
        };
        Bytes::from(text)
    }

    fn push_rows(&mut self, batch: &RecordBatch) {
        for row in rows::rows(batch, &self.columns) {
            let text = match self.format {
                Format::Query => format!(",\n{}", json!({"row": {"columns": row}})),
                Format::JsonArray => format!(",\n{}", Value::Array(row)),
                Format::Delimited => format!("{}\n", Value::Array(row)),
            };
            self.pending.push_back(Bytes::from(text));
        }
    }

    fn end(&mut self, message: Option<&str>) {
        let text = match (self.format, message) {
            (Format::Query, Some(m)) => format!(",\n{}]\n", json!({"finalMessage": m})),
            (Format::Query | Format::JsonArray, _) => "]\n".to_string(),
            (Format::Delimited, _) => String::new(),
        };
        if !text.is_empty() {
            self.pending.push_back(Bytes::from(text));
        }
        self.phase = Phase::Done;
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Header => {
                    self.phase = Phase::Rows;
                    return Some(self.header());
                }
                Phase::Rows => {}
            }
            match &mut self.source {
                Source::Pull(batches) => {
                    let batches = std::mem::take(batches);
                    for batch in &batches {
                        self.push_rows(batch);
                    }
                    self.end(None);
                }
                Source::Push(push) => {
                    let closed = async {
                        match self.closed.as_mut() {
                            Some(c) => {
                                let _ = c.await;
                            }
                            None => std::future::pending().await,
                        }
                    };
                    let stopping = self.stopping.wait_for(|s| *s);
                    let event = tokio::select! {
                        batch = push.rows.recv() => match batch {
                            Some(batch) => Ok(batch),
                            None => Err("Limit Reached"),
                        },
                        _ = closed => Err("Query closed"),
                        _ = stopping => Err("Server shutting down"),
                    };
                    match event {
                        Ok(batch) => self.push_rows(&batch),
                        Err(message) => self.end(Some(message)),
                    }
                }
            }
        }
    }
}

fn respond(
    state: &Arc<AppState>,
    streamed: Streamed,
    format: Format,
    closed: Option<oneshot::Receiver<()>>,
) -> Response {
    state.http.push_started();
    let stream = Stream {
        format,
        id: streamed.id,
        schema: streamed.schema,
        columns: streamed.columns,
        source: streamed.source,
        pending: Default::default(),
        phase: Phase::Header,
        closed,
        stopping: state.stopping.clone(),
        state: state.clone(),
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), stream))
    });
    let content_type = match format {
        Format::Query => "application/json",
        Format::JsonArray => "application/json",
        Format::Delimited => DELIMITED,
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

/// `POST /inserts-stream`: `{"target": "STREAM"}` then one JSON object per line; answers one
/// ack per row, `{"status": "ok", "seq": N}` or `{"status": "error", …}` for a row that failed.
pub(crate) async fn inserts_stream(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = parse_request(lines.next().unwrap_or_default().as_bytes())?;
    let target = statement_text(&first, "target")?;
    let mut acks = String::new();
    let mut engine = state.engine.lock().await;
    for (seq, line) in lines.enumerate() {
        let ack = match insert_statement(&target, line) {
            Ok(sql) => match engine.execute(&sql).await {
                Ok(_) => json!({"status": "ok", "seq": seq}),
                Err(e) => {
                    json!({"status": "error", "seq": seq, "error_code": code::BAD_STATEMENT, "message": e.to_string()})
                }
            },
            Err(message) => {
                json!({"status": "error", "seq": seq, "error_code": code::BAD_REQUEST, "message": message})
            }
        };
        acks.push_str(&ack.to_string());
        acks.push('\n');
    }
    drop(engine);
    Ok(([(header::CONTENT_TYPE, DELIMITED)], acks).into_response())
}

/// `INSERT INTO target (cols) VALUES (…)` for one JSON row.
fn insert_statement(target: &str, line: &str) -> Result<String, String> {
    let Ok(Value::Object(row)) = serde_json::from_str::<Value>(line) else {
        return Err(format!("each row must be a JSON object, got: {line}"));
    };
    if row.is_empty() {
        return Err("a row needs at least one column".into());
    }
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for (name, value) in &row {
        columns.push(identifier(name)?);
        values.push(literal(value)?);
    }
    Ok(format!(
        "INSERT INTO {} ({}) VALUES ({})",
        identifier(target)?,
        columns.join(", "),
        values.join(", ")
    ))
}

fn identifier(name: &str) -> Result<String, String> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name.to_lowercase())
    } else {
        Err(format!("'{name}' is not a column or stream name"))
    }
}

fn literal(value: &Value) -> Result<String, String> {
    Ok(match value {
        Value::Null => "NULL".into(),
        Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => {
            return Err(format!(
                "unsupported value {other}: only scalars can be inserted"
            ))
        }
    })
}
