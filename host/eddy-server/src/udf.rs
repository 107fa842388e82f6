//! UDF management over HTTP: `POST /functions/{name}` with a component's bytes, `GET
//! /functions`, `DELETE /functions/{name}`; and the rule that `CREATE FUNCTION … FROM 'path'`
//! sent over HTTP reads only from the configured UDF directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{code, read_body, ApiError};
use crate::{AppState, ServerConfig};

fn udf_dir(config: &ServerConfig, shown: &str) -> Result<PathBuf, ApiError> {
    let dir = config.udf_dir.as_ref().ok_or_else(|| {
        ApiError::statement(
            code::BAD_STATEMENT,
            "this server takes no UDFs over HTTP: start it with --udf-dir DIR",
            shown,
        )
    })?;
    dir.canonicalize().map_err(|e| {
        ApiError::generic(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::SERVER_ERROR,
            format!("UDF directory {}: {e}", dir.display()),
        )
    })
}

/// Refuses `CREATE FUNCTION … FROM 'path'` unless `path` lies inside the UDF directory.
pub(crate) fn check_path(
    config: &ServerConfig,
    statement: Option<&eddy_stream::Statement>,
    shown: &str,
) -> Result<(), ApiError> {
    let Some(eddy_stream::Statement::Function(eddy_sql::Statement::CreateFunction {
        path, ..
    })) = statement
    else {
        return Ok(());
    };
    let dir = udf_dir(config, shown)?;
    // The engine reads relative paths from the server's working directory; so does this check.
    match Path::new(&path).canonicalize() {
        Ok(real) if real.starts_with(&dir) => Ok(()),
        _ => Err(ApiError::statement(
            code::BAD_STATEMENT,
            format!(
                "'{path}' is not a component inside the server's UDF directory {} (upload one with POST /functions/NAME)",
                dir.display()
            ),
            shown,
        )),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// `POST /functions/{name}`: the body is a wasm component. It is checked (magic, size), stored
/// in the UDF directory under a new file name, and registered with `CREATE OR REPLACE FUNCTION`,
/// which loads and validates it before anything is swapped; a refused upload leaves no file.
pub(crate) async fn upload(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let shown = format!("POST /functions/{name}");
    if !valid_name(&name) {
        return Err(ApiError::bad_request(format!(
            "'{name}' is not a function name (letters, digits and _)"
        )));
    }
    let dir = udf_dir(&state.config, &shown)?;
    let bytes = read_body(body, state.config.max_udf_bytes).await?;
    // A component: the wasm magic, then a layer field other than 1 (core modules have 1).
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" || bytes[6..8] != [1, 0] {
        return Err(ApiError::statement(
            code::BAD_STATEMENT,
            "the body is not a WebAssembly component (build one with `eddy udf build`)",
            &shown,
        ));
    }
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let file = dir.join(format!("{name}.{stamp}.wasm"));
    tokio::fs::write(&file, &bytes).await.map_err(|e| {
        ApiError::generic(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::SERVER_ERROR,
            format!("storing the component: {e}"),
        )
    })?;
    let sql = format!(
        "CREATE OR REPLACE FUNCTION {name} FROM '{}'",
        file.display().to_string().replace('\'', "''")
    );
    // Compiled before the engine is taken, so other clients wait for none of it.
    let warm_up = state.engine.lock().await.session().warm_up(&sql);
    if let Some(job) = warm_up {
        job.run().await;
    }
    let engine = state.engine.lock().await;
    let result = crate::ksql::execute(engine, &sql, &format!("{sql};"), &Default::default()).await;
    if result.is_ok() {
        // Only the serving file stays: otherwise every upload would leave one behind for good.
        // Under the engine lock, so the directory watcher never sees a half-pruned directory.
        let _engine = state.engine.lock().await;
        remove_files(&dir, &name, Some(file.as_path())).await;
    } else {
        let _ = tokio::fs::remove_file(&file).await;
    }
    Ok(Json(json!([result?])))
}

/// Removes the files in `dir` that serve function `name` (`NAME.wasm`, `NAME.*.wasm`), but
/// `keep`. A file that cannot be removed is logged: the function's state is already decided.
async fn remove_files(dir: &Path, name: &str, keep: Option<&Path>) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        if Some(path.as_path()) == keep {
            continue;
        }
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = file_name.strip_suffix(".wasm") else {
            continue;
        };
        let function = stem.split('.').next().unwrap_or(stem);
        if function.eq_ignore_ascii_case(name) {
            if let Err(e) = tokio::fs::remove_file(&path).await {
                tracing::warn!("removing {}: {e}", path.display());
            }
        }
    }
}

/// `GET /functions`: each wasm function with its version (the component's SHA-256) and source.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut engine = state.engine.lock().await;
    let functions: Vec<Value> = engine
        .session()
        .functions()
        .iter()
        .map(|(name, f)| {
            let component = f.component();
            json!({
                "name": name,
                "signature": f.description().display(),
                "version": component.hash,
                "source": component.source,
                "shadow": f.shadow().map(|s| s.component.hash.clone()),
                "previous": f.previous().map(|p| p.hash.clone()),
            })
        })
        .collect();
    Json(json!({"functions": functions}))
}

/// `DELETE /functions/{name}`: `DROP FUNCTION name`, and the function's files leave the UDF
/// directory, so neither its watcher nor the next start loads the function again.
pub(crate) async fn drop_function(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    if !valid_name(&name) {
        return Err(ApiError::bad_request(format!(
            "'{name}' is not a function name"
        )));
    }
    let sql = format!("DROP FUNCTION {name}");
    let engine = state.engine.lock().await;
    let entity =
        crate::ksql::execute(engine, &sql, &format!("{sql};"), &Default::default()).await?;
    // Under the engine lock: the watcher cannot reload a file between the drop and its removal.
    // (The watcher runs its scan under the same lock.)
    if let Some(dir) = &state.config.udf_dir {
        let _engine = state.engine.lock().await;
        remove_files(dir, &name, None).await;
    }
    Ok(Json(json!([entity])))
}
