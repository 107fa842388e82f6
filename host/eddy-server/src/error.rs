//! ksqlDB's error entity: `{"@type", "error_code", "message", "statementText"?, "entities"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// ksqlDB error codes (`io.confluent.ksql.rest.Errors`).
pub(crate) mod code {
    /// Malformed request.
    pub(crate) const BAD_REQUEST: u32 = 40000;
    /// A statement that does not parse or cannot run.
    pub(crate) const BAD_STATEMENT: u32 = 40001;
    /// A statement sent to the wrong endpoint (push query to `/ksql`, DDL to `/query`).
    pub(crate) const QUERY_ENDPOINT: u32 = 40002;
    /// Missing or wrong credentials.
    pub(crate) const UNAUTHORIZED: u32 = 40100;
    /// Not something this client may do (host files, server settings, crate builds).
    pub(crate) const FORBIDDEN: u32 = 40300;
    /// No such endpoint.
    pub(crate) const NOT_FOUND: u32 = 40400;
    /// Wrong HTTP method.
    pub(crate) const METHOD_NOT_ALLOWED: u32 = 40500;
    /// The request (body, or the next `/inserts-stream` line) did not arrive in time.
    pub(crate) const TIMEOUT: u32 = 40800;
    /// Body over the limit.
    pub(crate) const TOO_LARGE: u32 = 41300;
    /// Anything else.
    pub(crate) const SERVER_ERROR: u32 = 50000;
}

/// An error response as ksqlDB shapes it.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: u32,
    message: String,
    statement: Option<String>,
}

impl ApiError {
    /// `generic_error` with `status` and `code`.
    pub(crate) fn generic(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: "generic_error",
            code,
            message: message.into(),
            statement: None,
        }
    }

    /// A 400 `generic_error` 40000.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::generic(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message)
    }

    /// A 400 `statement_error` for `statement`.
    pub(crate) fn statement(code: u32, message: impl Into<String>, statement: &str) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "statement_error",
            code,
            message: message.into(),
            statement: Some(statement.to_string()),
        }
    }

    /// A 403 `statement_error` 40300: the statement reaches beyond what a client may do.
    pub(crate) fn forbidden(message: impl Into<String>, statement: &str) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            ..Self::statement(code::FORBIDDEN, message, statement)
        }
    }

    /// The ksqlDB error code.
    pub(crate) fn code(&self) -> u32 {
        self.code
    }

    /// The message, without the code.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The JSON entity.
    pub(crate) fn body(&self) -> serde_json::Value {
        let mut body = json!({
            "@type": self.kind,
            "error_code": self.code,
            "message": self.message,
        });
        if let Some(statement) = &self.statement {
            body["statementText"] = json!(statement);
            body["entities"] = json!([]);
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Unknown paths: ksqlDB answers 404 with an error entity.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::generic(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        format!("Eddy does not serve {} (ksqlDB endpoints it has: /ksql, /query, /query-stream, /close-query, /inserts-stream, /info, /healthcheck, /metrics)", uri.path()),
    )
}

/// A known path with the wrong method: 405 with an error entity.
pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::generic(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

/// Reads a whole request body, refusing more than `limit` bytes with 413.
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if crate::conn::is_body_timeout(&e) {
            return timeout(e);
        }
        let too_large =
            format!("{e:?}").contains("LengthLimit") || e.to_string().contains("length limit");
        if too_large {
            ApiError::generic(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::TOO_LARGE,
                format!("request body is larger than the server's limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

/// 408 for a request body that did not arrive within the body timeout.
pub(crate) fn timeout(e: impl std::fmt::Display) -> ApiError {
    ApiError::generic(StatusCode::REQUEST_TIMEOUT, code::TIMEOUT, e.to_string())
}
