//! `POST /query`, `/query-stream`, `/close-query` and `/inserts-stream`.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eddy_stream::{Output, PushQuery, Started};
use futures::stream::{BoxStream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use crate::error::{code, read_body, ApiError};
use crate::ksql::{parse_request, request_properties, statement_error, statement_text, Properties};
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
    /// A pull query's rows as they are computed: never collected whole, so a huge result costs
    /// only what the client has not read yet.
    Pull(BoxStream<'static, Result<RecordBatch, String>>),
}

struct Streamed {
    id: String,
    schema: SchemaRef,
    columns: Vec<usize>,
    source: Source,
}

async fn start(state: &AppState, sql: &str, properties: &Properties) -> Result<Streamed, ApiError> {
    let statements = eddy_sql::split_statements(sql);
    let [(_, statement)] = statements.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "expected exactly one SELECT statement, found {}",
            statements.len()
        )));
    };
    let shown = format!("{};", statement.trim().trim_end_matches(';'));
    use eddy_stream::Statement;
    let parsed = eddy_stream::parse(statement).map_err(|e| statement_error(e, &shown))?;
    if !matches!(
        parsed,
        Statement::Query(_) | Statement::Push { .. } | Statement::Print { .. }
    ) {
        return Err(ApiError::statement(
            code::QUERY_ENDPOINT,
            "only SELECT and PRINT statements can be sent to this endpoint: send other statements to /ksql",
            &shown,
        ));
    }
    // Only what needs the engine runs under its lock; the query itself runs outside it.
    let started = state
        .engine
        .lock()
        .await
        .start(statement, Some(properties))
        .await
        .map_err(|e| statement_error(e, &shown))?;
    let output = match started {
        Started::Done(output) => output,
        Started::Pull(query) => {
            let stream = query
                .stream()
                .await
                .map_err(|e| statement_error(e, &shown))?;
            let schema = stream.schema();
            return Ok(Streamed {
                id: format!("pull_{}", state.http.next_pull()),
                columns: rows::visible_fields(&schema, statement),
                schema,
                source: Source::Pull(stream.map(|b| b.map_err(|e| e.to_string())).boxed()),
            });
        }
    };
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
            source: Source::Pull(futures::stream::iter(batches.into_iter().map(Ok)).boxed()),
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
    let properties = request_properties(&request, "streamsProperties")?;
    let sql = crate::variables::Variables::from_request(&request)?.substitute(&sql, &sql)?;
    let streamed = start(&state, &sql, &properties).await?;
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
    let properties = request_properties(&request, "properties")?;
    let sql = crate::variables::Variables::from_request(&request)?.substitute(&sql, &sql)?;
    let format = if json_array_wanted(&headers) {
        Format::JsonArray
    } else {
        Format::Delimited
    };
    let streamed = start(&state, &sql, &properties).await?;
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

    /// Ends the response with an error after rows were sent, as ksqlDB does: the status line
    /// has gone out already.
    fn fail(&mut self, message: &str) {
        let error = json!({
            "@type": "generic_error",
            "error_code": code::SERVER_ERROR,
            "message": message,
        });
        let text = match self.format {
            Format::Query => format!(",\n{}]\n", json!({"errorMessage": error})),
            Format::JsonArray => format!(",\n{error}]\n"),
            Format::Delimited => format!("{error}\n"),
        };
        self.pending.push_back(Bytes::from(text));
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
                Source::Pull(rows) => {
                    let stopping = self.stopping.wait_for(|s| *s);
                    let event = tokio::select! {
                        batch = rows.next() => batch,
                        _ = stopping => Some(Err("the server is shutting down".to_string())),
                    };
                    match event {
                        Some(Ok(batch)) => self.push_rows(&batch),
                        Some(Err(message)) => self.fail(&message),
                        None => self.end(None),
                    }
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

/// `POST /inserts-stream`: `{"target": "STREAM"}` then one JSON object per line, over a request
/// that may stay open for as long as the client keeps sending. Each row is inserted as soon as its
/// line is complete and answered at once with `{"status": "ok", "seq": N}` or `{"status":
/// "error", …}`; the response ends when the request body does. `max_body_bytes` caps each LINE,
/// not the whole body, since the body of a long-lived stream has no natural size.
///
/// With `Accept: application/json` (and not the delimited type), the acks form one JSON array
/// instead, streamed as they come, as ksqlDB answers such clients (the npm `ksqldb-client`).
/// Each line must be complete within the body timeout of the previous one.
pub(crate) async fn inserts_stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let array = json_array_wanted(&headers);
    let mut lines = Lines::new(body, state.config.max_body_bytes);
    lines.gap = Some(state.config.body_timeout);
    // The first line decides the answer's status: a bad target is a 4xx error entity.
    let first = async {
        loop {
            match lines.next().await? {
                Some(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Some(line) => return Ok::<_, ApiError>(line),
                None => return Ok(Vec::new()),
            }
        }
    };
    let mut stopping = state.stopping.clone();
    let first = tokio::select! {
        first = first => first.inspect_err(|e| count_timeout(&state, e))?,
        // A client that never sends its target must not hold graceful shutdown up.
        _ = stopping.wait_for(|s| *s) => {
            return Err(ApiError::generic(
                StatusCode::SERVICE_UNAVAILABLE,
                code::SERVER_ERROR,
                "the server is shutting down",
            ))
        }
    };
    let first = parse_request(&first)?;
    let target = statement_text(&first, "target")?;
    let inserts = Inserts {
        lines,
        target,
        seq: 0,
        stopping: state.stopping.clone(),
        state,
        done: false,
    };
    if !array {
        let acks = futures::stream::unfold(inserts, |mut inserts| async move {
            let chunk = inserts.next().await?;
            Some((Ok::<_, std::convert::Infallible>(chunk), inserts))
        });
        return Ok(([(header::CONTENT_TYPE, DELIMITED)], Body::from_stream(acks)).into_response());
    }
    // One JSON array: "[" before the first ack, "," between acks, "]" once the body ended.
    let acks = futures::stream::unfold(Some((inserts, true)), |open| async move {
        let (mut inserts, first) = open?;
        let Some(chunk) = inserts.next().await else {
            let end = if first { "[]" } else { "]" };
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from(end)), None));
        };
        let text = String::from_utf8_lossy(&chunk);
        let mut out = String::new();
        for (i, ack) in text.lines().filter(|l| !l.is_empty()).enumerate() {
            out.push_str(if first && i == 0 { "[" } else { "," });
            out.push_str(ack);
        }
        let first = first && out.is_empty();
        Some((Ok(Bytes::from(out)), Some((inserts, first))))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(acks),
    )
        .into_response())
}

/// Whether the client asked for one JSON array rather than delimited lines.
fn json_array_wanted(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    accept.contains("application/json") && !accept.contains(DELIMITED)
}

/// Counts a line that did not arrive in time as a body timeout in `/metrics`.
fn count_timeout(state: &AppState, e: &ApiError) {
    if e.code() == code::TIMEOUT {
        state
            .http
            .transport
            .timed_out(crate::metrics::TimeoutKind::Body);
    }
}

/// At most this many lines already received are inserted under one engine lock.
const INSERT_BATCH: usize = 256;

/// The rows of one `/inserts-stream` request, turned into acks batch by batch.
struct Inserts {
    lines: Lines,
    target: String,
    seq: u64,
    stopping: watch::Receiver<bool>,
    state: Arc<AppState>,
    done: bool,
}

impl Inserts {
    /// The acks of the next lines to arrive, once they are inserted; `None` when the body ended.
    async fn next(&mut self) -> Option<Bytes> {
        while !self.done {
            // Wait for a line without holding the engine: other clients keep running meanwhile.
            let stopping = self.stopping.wait_for(|s| *s);
            let line = tokio::select! {
                line = self.lines.next() => line,
                // A stream left open would otherwise hold graceful shutdown up forever.
                _ = stopping => Ok(None),
            };
            let mut batch = match line {
                Ok(Some(line)) => vec![line],
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    count_timeout(&self.state, &e);
                    return Some(Bytes::from(self.error_ack(e.code(), e.message())));
                }
            };
            // Lines that arrived meanwhile share one turn at the engine.
            while batch.len() < INSERT_BATCH {
                match self.lines.buffered() {
                    Some(line) if line.len() <= self.lines.limit => batch.push(line),
                    Some(line) => {
                        // Too long: answered (as the error it is) on the next call.
                        self.lines.unread(line);
                        break;
                    }
                    None => break,
                }
            }
            batch.retain(|line| !line.iter().all(u8::is_ascii_whitespace));
            if batch.is_empty() {
                continue;
            }
            let mut acks = String::new();
            for line in &batch {
                let seq = self.seq;
                self.seq += 1;
                let statement = std::str::from_utf8(line)
                    .map_err(|_| "the row is not UTF-8".to_string())
                    .and_then(|line| insert_statement(&self.target, line));
                let ack = match statement {
                    Ok(sql) => match insert(&self.state, &sql).await {
                        Ok(()) => json!({"status": "ok", "seq": seq}),
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
            return Some(Bytes::from(acks));
        }
        None
    }

    fn error_ack(&mut self, error_code: u32, message: &str) -> String {
        let seq = self.seq;
        self.seq += 1;
        let ack =
            json!({"status": "error", "seq": seq, "error_code": error_code, "message": message});
        format!("{ack}\n")
    }
}

/// Runs one INSERT. The engine is held only to plan it: the insert itself (which first waits
/// for running queries to take in earlier rows, and may wait for a broker) runs without it.
async fn insert(state: &AppState, sql: &str) -> eddy_stream::Result<()> {
    let started = state.engine.lock().await.start(sql, None).await?;
    if let Started::Pull(query) = started {
        query.collect().await?;
    }
    Ok(())
}

/// A request body split into lines as its chunks arrive, each line capped at `limit` bytes.
struct Lines {
    body: axum::body::BodyDataStream,
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no newline.
    scanned: usize,
    ended: bool,
    limit: usize,
    /// How long the next line may take to complete.
    gap: Option<std::time::Duration>,
}

impl Lines {
    fn new(body: Body, limit: usize) -> Lines {
        Lines {
            body: body.into_data_stream(),
            buffer: Vec::new(),
            scanned: 0,
            ended: false,
            limit,
            gap: None,
        }
    }

    /// A complete line already received, without its newline.
    fn buffered(&mut self) -> Option<Vec<u8>> {
        self.scanned = self.scanned.min(self.buffer.len());
        let at = self.buffer[self.scanned..].iter().position(|&b| b == b'\n');
        match at {
            Some(at) => {
                let end = self.scanned + at;
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                Some(line)
            }
            None => {
                self.scanned = self.buffer.len();
                None
            }
        }
    }

    /// Puts a line taken by [`Lines::buffered`] back in front.
    fn unread(&mut self, mut line: Vec<u8>) {
        line.push(b'\n');
        line.append(&mut self.buffer);
        self.buffer = line;
        self.scanned = 0;
    }

    /// The next line, waiting for it; the unterminated rest when the body ends; then `None`.
    /// With a gap set, a line not complete within it is a 408 error.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        let deadline = self.gap.map(|gap| tokio::time::Instant::now() + gap);
        loop {
            if let Some(line) = self.buffered() {
                return self.capped(line).map(Some);
            }
            if self.buffer.len() > self.limit {
                return Err(self.too_large());
            }
            if self.ended {
                self.scanned = 0;
                return Ok((!self.buffer.is_empty()).then(|| std::mem::take(&mut self.buffer)));
            }
            let chunk = futures::StreamExt::next(&mut self.body);
            let chunk = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, chunk).await {
                    Ok(chunk) => chunk,
                    Err(_) => {
                        self.ended = true;
                        return Err(crate::error::timeout(format!(
                            "no complete line within {:?} of the previous one",
                            self.gap.unwrap_or_default()
                        )));
                    }
                },
                None => chunk.await,
            };
            match chunk {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    self.ended = true;
                    return Err(ApiError::bad_request(format!(
                        "could not read the request body: {e}"
                    )));
                }
                None => self.ended = true,
            }
        }
    }

    fn capped(&self, line: Vec<u8>) -> Result<Vec<u8>, ApiError> {
        if line.len() > self.limit {
            Err(self.too_large())
        } else {
            Ok(line)
        }
    }

    fn too_large(&self) -> ApiError {
        ApiError::generic(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::TOO_LARGE,
            format!(
                "a line of the request body is larger than the server's limit of {} bytes",
                self.limit
            ),
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static str]) -> Body {
        let chunks: Vec<Result<Bytes, std::convert::Infallible>> =
            chunks.iter().map(|c| Ok(Bytes::from(*c))).collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    async fn all(lines: &mut Lines) -> Vec<Result<String, u32>> {
        let mut out = Vec::new();
        loop {
            match lines.next().await {
                Ok(Some(line)) => out.push(Ok(String::from_utf8(line).unwrap())),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.code()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn lines_are_split_across_chunks_and_capped_one_by_one() {
        let mut lines = Lines::new(body(&["{\"a\"", ":1}\r\n{\"b\":2}\n\n", "{\"c\":3}"]), 8);
        assert_eq!(
            all(&mut lines).await,
            vec![
                Ok("{\"a\":1}".into()),
                Ok("{\"b\":2}".into()),
                Ok(String::new()),
                Ok("{\"c\":3}".into())
            ]
        );
        // The cap is per line: many short lines pass, one long line is refused.
        let mut lines = Lines::new(body(&["12345678\n12345678\n", "123456789\n"]), 8);
        assert_eq!(
            all(&mut lines).await,
            vec![
                Ok("12345678".into()),
                Ok("12345678".into()),
                Err(code::TOO_LARGE)
            ]
        );
        // A line over the cap is refused before its newline arrives.
        let mut lines = Lines::new(body(&["123456", "789"]), 8);
        assert_eq!(all(&mut lines).await, vec![Err(code::TOO_LARGE)]);
    }
}
