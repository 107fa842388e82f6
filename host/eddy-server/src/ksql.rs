//! `POST /ksql` (one entity per statement), `GET /info`, `GET /healthcheck`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use eddy_stream::{Engine, Kind, Output, QueryInfo, RelationInfo, Started, Statement};
use serde_json::{json, Value};
use tokio::sync::MutexGuard;

use crate::error::{code, read_body, ApiError};
use crate::AppState;

/// `GET /info`.
pub(crate) async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "KsqlServerInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "kafkaClusterId": state.config.kafka_cluster_id,
            "ksqlServiceId": state.config.service_id,
            "serverStatus": "RUNNING",
        }
    }))
}

/// `GET /healthcheck`.
pub(crate) async fn healthcheck() -> Json<Value> {
    Json(json!({
        "isHealthy": true,
        "details": {
            "metastore": {"isHealthy": true},
            "kafka": {"isHealthy": true},
        }
    }))
}

/// Parses a JSON request body into an object, or a ksqlDB-shaped 400.
pub(crate) fn parse_request(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "invalid JSON in the request body: {e}"
        ))),
    }
}

/// The statement text of a request (`ksql` for /ksql and /query, `sql` for /query-stream).
pub(crate) fn statement_text(
    request: &serde_json::Map<String, Value>,
    field: &str,
) -> Result<String, ApiError> {
    match request.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ApiError::bad_request(format!(
            "the request body needs a string field \"{field}\""
        ))),
    }
}

/// Properties one request sets (`streamsProperties`, or `SET` earlier in the same request):
/// they apply to that request only, never to other clients.
pub(crate) type Properties = BTreeMap<String, String>;

/// The properties object `field` of a request, values as strings.
pub(crate) fn request_properties(
    request: &serde_json::Map<String, Value>,
    field: &str,
) -> Result<Properties, ApiError> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(Properties::new()),
        Some(Value::Object(map)) => Ok(map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect()),
        Some(_) => Err(ApiError::bad_request(format!(
            "\"{field}\" must be a JSON object of property names and values"
        ))),
    }
}

/// `POST /ksql`: runs each statement in order; the first failure ends the request with its error
/// (the statements before it stay done, as in ksqlDB). The engine is locked per statement, and
/// a DataFusion statement runs outside the lock, so a long request holds up no other client.
pub(crate) async fn ksql(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let request = parse_request(&bytes)?;
    let text = statement_text(&request, "ksql")?;
    let mut properties = request_properties(&request, "streamsProperties")?;
    let statements = eddy_sql::split_statements(&text);
    if statements.is_empty() {
        return Err(ApiError::bad_request("no statement in \"ksql\""));
    }
    let mut variables = crate::variables::Variables::from_request(&request)?;
    let mut entities = Vec::new();
    for (_, statement) in statements {
        let shown = format!("{};", statement.trim().trim_end_matches(';'));
        // Parsed once, by the variables step; the engine parses the text once more when it
        // runs it.
        let (statement, parsed) = match variables.step(&statement, &shown)? {
            crate::variables::Step::Handled(entity) => {
                entities.extend(entity);
                continue;
            }
            crate::variables::Step::Run { text, parsed } => (text, parsed),
        };
        if let Ok(Statement::ShowTopics { all }) = parsed {
            entities.push(crate::topics::list(&state.config, all, &shown).await?);
            continue;
        }
        crate::udf::check_path(&state.config, parsed.as_ref().ok(), &shown)?;
        if let Ok(Statement::Set { key, value }) = parsed {
            entities.push(json!({
                "@type": "currentStatus",
                "statementText": shown,
                "commandId": format!("property/`{key}`/set"),
                "commandStatus": {
                    "status": "SUCCESS",
                    "message": format!("'{key}' is '{value}' for the rest of this request"),
                    "queryId": null,
                },
                "commandSequenceNumber": -1,
                "warnings": [],
            }));
            properties.insert(key, value);
            continue;
        }
        // A component compiles before the engine is taken: seconds for a large one.
        let warm_up = state.engine.lock().await.session().warm_up(&statement);
        if let Some(job) = warm_up {
            job.run().await;
        }
        let engine = state.engine.lock().await;
        entities.push(run(engine, &statement, parsed, &shown, &properties).await?);
    }
    Ok(Json(Value::Array(entities)))
}

async fn run(
    mut engine: MutexGuard<'_, Engine>,
    statement: &str,
    parsed: eddy_stream::Result<Statement>,
    shown: &str,
    properties: &Properties,
) -> Result<Value, ApiError> {
    let parsed = parsed.map_err(|e| statement_error(e, shown))?;
    match &parsed {
        Statement::Query(_) | Statement::Push { .. } => Err(ApiError::statement(
            code::QUERY_ENDPOINT,
            "The following statement types should be issued to the websocket endpoint '/query': SELECT (send queries to /query or /query-stream)",
            shown,
        )),
        // It streams records until its LIMIT or the client goes away: not a /ksql answer.
        Statement::Print { .. } => Err(ApiError::statement(
            code::QUERY_ENDPOINT,
            "The following statement types should be issued to the websocket endpoint '/query': PRINT (send it to /query or /query-stream)",
            shown,
        )),
        Statement::ShowStreams | Statement::ShowTables => {
            reap(&mut engine).await;
            let kind = if parsed == Statement::ShowStreams {
                Kind::Stream
            } else {
                Kind::Table
            };
            let key = if kind == Kind::Stream { "streams" } else { "tables" };
            let list: Vec<Value> = engine
                .relations()
                .iter()
                .filter(|r| r.kind == kind)
                .map(relation_summary)
                .collect();
            Ok(json!({"@type": key, "statementText": shown, key: list, "warnings": []}))
        }
        Statement::ShowQueries => {
            reap(&mut engine).await;
            let queries: Vec<Value> = engine.queries().iter().map(query_summary).collect();
            Ok(json!({"@type": "queries", "statementText": shown, "queries": queries, "warnings": []}))
        }
        Statement::ShowProperties => Ok(json!({
            "@type": "properties",
            "statementText": shown,
            "properties": [
                {"name": "ksql.service.id", "scope": "KSQL", "value": "eddy"},
                {"name": "ksql.streams.auto.offset.reset", "scope": "KSQL", "value": "latest"},
            ],
            "overwrittenProperties": [],
            "defaultProperties": [],
            "warnings": [],
        })),
        Statement::Function(eddy_sql::Statement::ShowFunctions) => {
            let functions: Vec<Value> = engine
                .session()
                .functions()
                .iter()
                .map(|(name, f)| {
                    json!({
                        "name": eddy_stream::display_name(name),
                        "type": "SCALAR",
                        "category": "WASM",
                        "version": f.component().hash,
                        "shadowVersion": f.shadow().map(|s| s.component.hash.clone()),
                        "previousVersion": f.previous().map(|p| p.hash.clone()),
                    })
                })
                .collect();
            Ok(json!({"@type": "function_names", "statementText": shown, "functions": functions, "warnings": []}))
        }
        Statement::Function(eddy_sql::Statement::DescribeFunction { name, extended }) => {
            describe_function(&mut engine, name, *extended, shown)
        }
        Statement::Describe { name, extended } => {
            describe(&mut engine, name, *extended, shown).await
        }
        _ => run_in_engine(engine, statement, command_id(&parsed), shown, properties).await,
    }
}

/// Lets the engine forget push queries whose clients went away.
pub(crate) async fn reap(engine: &mut Engine) {
    let _ = engine.execute("SHOW QUERIES").await;
}

pub(crate) async fn execute(
    engine: MutexGuard<'_, Engine>,
    statement: &str,
    shown: &str,
    properties: &Properties,
) -> Result<Value, ApiError> {
    let command = match eddy_stream::parse(statement) {
        Ok(parsed) => command_id(&parsed),
        Err(_) => command_id(&Statement::Other(String::new())),
    };
    run_in_engine(engine, statement, command, shown, properties).await
}

/// Runs `statement` in the engine; `command` is its ksqlDB `commandId`.
async fn run_in_engine(
    mut engine: MutexGuard<'_, Engine>,
    statement: &str,
    command: String,
    shown: &str,
    properties: &Properties,
) -> Result<Value, ApiError> {
    let before: Vec<String> = engine.queries().into_iter().map(|q| q.id).collect();
    let started = engine
        .start(statement, Some(properties))
        .await
        .map_err(|e| statement_error(e, shown))?;
    let (output, query_id) = match started {
        Started::Done(output) => {
            let query_id = engine
                .queries()
                .into_iter()
                .map(|q| q.id)
                .find(|id| !before.contains(id));
            (output, query_id)
        }
        Started::Pull(query) => {
            // An INSERT or DataFusion DDL: it runs without the engine.
            drop(engine);
            let output = query
                .collect()
                .await
                .map_err(|e| statement_error(e, shown))?;
            (output, None)
        }
    };
    let message = match output {
        Output::Message(m) => m,
        Output::Rows { batches, .. } => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            format!("{rows} row(s)")
        }
        // Push queries are refused above; dropping it ends the query.
        Output::Push(push) => format!("push query {} ended: send push queries to /query", push.id),
    };
    Ok(json!({
        "@type": "currentStatus",
        "statementText": shown,
        "commandId": command,
        "commandStatus": {"status": "SUCCESS", "message": message, "queryId": query_id},
        "commandSequenceNumber": -1,
        "warnings": [],
    }))
}

/// ksqlDB's `commandId` for a statement that ran: `stream/`NAME`/create`, `table/`T`/drop`,
/// `function/`F`/create`, `statement/`CSAS_X_1`/terminate`, …
fn command_id(statement: &Statement) -> String {
    use eddy_sql::Statement as Function;
    let (object, name, action) = match statement {
        Statement::CreateSource { kind, name, .. } | Statement::CreateAs { kind, name, .. } => {
            (kind.as_str(), name.clone(), "create")
        }
        Statement::Drop { kind, name, .. } => (kind.as_str(), name.clone(), "drop"),
        Statement::Terminate(id) => (
            "statement",
            id.clone().unwrap_or_else(|| "ALL".into()),
            "terminate",
        ),
        Statement::Function(Function::CreateFunction { name, .. }) => {
            ("function", name.clone(), "create")
        }
        Statement::Function(Function::AlterFunction { name, .. }) => {
            ("function", name.clone(), "alter")
        }
        Statement::Function(Function::DropFunction { name, .. }) => {
            ("function", name.clone(), "drop")
        }
        _ => ("statement", String::new(), "execute"),
    };
    format!("{object}/`{}`/{action}", eddy_stream::display_name(&name))
}

fn relation_summary(r: &RelationInfo) -> Value {
    json!({
        "type": if r.kind == Kind::Stream { "STREAM" } else { "TABLE" },
        "name": eddy_stream::display_name(&r.name),
        "topic": r.topic.clone().unwrap_or_default(),
        "keyFormat": "KAFKA",
        "valueFormat": r.value_format,
        "isWindowed": r.windowed,
    })
}

fn query_summary(q: &QueryInfo) -> Value {
    let sinks: Vec<String> = q
        .sink
        .iter()
        .map(|s| eddy_stream::display_name(s))
        .collect();
    json!({
        "queryString": q.sql,
        "sinks": sinks,
        "sinkKafkaTopics": sinks,
        "id": q.id,
        "statusCount": {"RUNNING": 1},
        "queryType": if q.sink.is_some() { "PERSISTENT" } else { "PUSH" },
        "state": "RUNNING",
    })
}

async fn describe(
    engine: &mut Engine,
    name: &str,
    extended: bool,
    shown: &str,
) -> Result<Value, ApiError> {
    reap(engine).await;
    let wanted = name.trim_matches('`').trim_matches('"');
    let Some(relation) = engine
        .relations()
        .into_iter()
        .find(|r| r.name.eq_ignore_ascii_case(wanted))
    else {
        return Err(ApiError::statement(
            code::BAD_STATEMENT,
            format!(
                "Could not find STREAM/TABLE '{}' in the Metastore",
                wanted.to_uppercase()
            ),
            shown,
        ));
    };
    let queries = engine.queries();
    let reads = |q: &&QueryInfo| {
        q.sink.as_deref() != Some(relation.name.as_str())
            && q.reads
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&relation.name))
    };
    let read_queries: Vec<Value> = queries.iter().filter(reads).map(query_summary).collect();
    let write_queries: Vec<Value> = queries
        .iter()
        .filter(|q| q.sink.as_deref() == Some(relation.name.as_str()))
        .map(query_summary)
        .collect();
    let fields: Vec<Value> = relation
        .schema
        .fields()
        .iter()
        .filter(|f| f.name() != "rowtime")
        .map(|f| {
            let n = f.name();
            let mut field = json!({
                "name": eddy_stream::display_name(n),
                "schema": crate::rows::schema_info(f.data_type()),
            });
            if relation.keys.contains(n) {
                field["type"] = json!(if relation.kind == Kind::Table {
                    "PRIMARY_KEY"
                } else {
                    "KEY"
                });
            }
            field
        })
        .collect();
    Ok(json!({
        "@type": "sourceDescription",
        "statementText": shown,
        "sourceDescription": {
            "name": eddy_stream::display_name(&relation.name),
            "windowType": null,
            "readQueries": read_queries,
            "writeQueries": write_queries,
            "fields": fields,
            "type": if relation.kind == Kind::Stream { "STREAM" } else { "TABLE" },
            "timestamp": "",
            "statistics": "",
            "errorStats": "",
            "extended": extended,
            "keyFormat": "KAFKA",
            "valueFormat": relation.value_format,
            "topic": relation.topic.clone().unwrap_or_default(),
            "partitions": 0,
            "replication": 0,
            "statement": relation.sql,
            "sourceConstraints": [],
        },
        "warnings": [],
    }))
}

fn describe_function(
    engine: &mut Engine,
    name: &str,
    extended: bool,
    shown: &str,
) -> Result<Value, ApiError> {
    let wanted = name.trim_matches('`').trim_matches('"').to_lowercase();
    let Some(f) = engine.session().functions().get(&wanted).cloned() else {
        return Err(ApiError::statement(
            code::BAD_STATEMENT,
            format!(
                "Can't find any functions with the name '{}' (SHOW FUNCTIONS lists them)",
                wanted.to_uppercase()
            ),
            shown,
        ));
    };
    let d = f.description();
    let component = f.component();
    let arguments: Vec<Value> = d
        .params
        .iter()
        .map(|(n, t)| json!({"name": n, "type": crate::rows::ksql_type_name(t.sql_name()), "description": "", "isVariadic": false}))
        .collect();
    let mut entity = json!({
        "@type": "describe_function",
        "statementText": shown,
        "name": eddy_stream::display_name(&d.name),
        "description": d.doc,
        "author": "",
        "version": component.hash,
        "path": component.source,
        "type": "SCALAR",
        "functions": [{
            "arguments": arguments,
            "returnType": crate::rows::ksql_type_name(d.returns.sql_name()),
            "description": d.doc,
            "argumentTypes": d.params.iter().map(|(_, t)| crate::rows::ksql_type_name(t.sql_name())).collect::<Vec<_>>(),
        }],
        "warnings": [],
    });
    // ksqlDB's entity has no place for versions; EXTENDED adds Eddy's own field.
    if extended {
        entity["versions"] = crate::rollout::versions(&f);
    }
    Ok(entity)
}

/// The error entity for an engine error, by what went wrong: a statement reaching beyond what
/// a network client may do is 403 (40300); Kafka, the state store or another system failing
/// under a good statement, 500 (50000); anything else is a bad statement, 400 (40001) — a name that does
/// not exist included, as ksqlDB answers it: clients rely on that code (ksql-python's
/// `get_stream_info` returns None on 40001).
pub(crate) fn statement_error(e: eddy_stream::Error, shown: &str) -> ApiError {
    use eddy_stream::Error;
    match &e {
        Error::Sql(eddy_sql::Error::Refused(_)) => ApiError::forbidden(e.to_string(), shown),
        Error::Connector(eddy_connector::Error::Io(_)) | Error::State(_) => {
            ApiError::unavailable(e.to_string(), shown)
        }
        _ => ApiError::statement(code::BAD_STATEMENT, e.to_string(), shown),
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    /// Each kind of engine error gets its own ksqlDB code and HTTP status.
    #[test]
    fn engine_errors_map_to_codes_and_statuses_by_variant() {
        use eddy_stream::Error;
        let cases: Vec<(Error, u16, u32)> = vec![
            (Error::Syntax("expected FROM".into()), 400, 40001),
            (Error::Plan("no field named x".into()), 400, 40001),
            (Error::Catalog("'s' already exists".into()), 400, 40001),
            (
                Error::NotFound("stream 's' does not exist".into()),
                400,
                40001,
            ),
            (
                Error::Sql(eddy_sql::Error::Refused("COPY".into())),
                403,
                40300,
            ),
            (
                Error::Connector(eddy_connector::Error::Io(
                    "kafka 10.0.0.1:9092: down".into(),
                )),
                500,
                50000,
            ),
            (
                Error::Connector(eddy_connector::Error::Config("no kafka_topic".into())),
                400,
                40001,
            ),
            (
                Error::State("writing checkpoints in /var/eddy: disk full".into()),
                500,
                50000,
            ),
        ];
        for (error, status, code) in cases {
            let text = error.to_string();
            let api = statement_error(error, "X;");
            assert_eq!(api.code(), code, "{text}");
            assert_eq!(api.message(), text);
            let response = api.into_response();
            assert_eq!(response.status().as_u16(), status, "{text}");
        }
    }
}
