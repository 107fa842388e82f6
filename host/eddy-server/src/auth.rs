//! Optional bearer-token (or Basic, password = token) authentication.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{code, ApiError};
use crate::AppState;

/// Lets a request through when no token is configured, for `/healthcheck`, or when it carries
/// the token; otherwise 401 with ksqlDB's error entity.
pub(crate) async fn check(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    state.http.request(&path);
    let started = std::time::Instant::now();
    let response = authorized(&state, request, next).await;
    state.http.observe(&path, started.elapsed().as_secs_f64());
    response
}

async fn authorized(state: &AppState, request: Request, next: Next) -> Response {
    let Some(token) = &state.config.auth_token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthcheck" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ok = credentials_ok(given, token);
    if ok {
        next.run(request).await
    } else {
        let mut response = ApiError::generic(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "Unauthorized: send Authorization: Bearer <token from --auth-token-file>",
        )
        .into_response();
        // RFC 9110 11.6.1: a 401 names the schemes it takes, one header each.
        for challenge in CHALLENGES {
            response.headers_mut().append(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The `WWW-Authenticate` challenges of a 401.
const CHALLENGES: [&str; 2] = ["Bearer realm=\"eddy\"", "Basic realm=\"eddy\""];

/// Whether an `Authorization` value carries `token`, as a bearer token or a Basic password.
fn credentials_ok(given: &str, token: &str) -> bool {
    // The scheme is case-insensitive (RFC 9110 11.1): `bearer` is as good as `Bearer`.
    let given = given.trim();
    let (scheme, credentials) = given.split_once(' ').unwrap_or((given, ""));
    if scheme.eq_ignore_ascii_case("Bearer") {
        constant_time_eq(credentials.trim().as_bytes(), token.as_bytes())
    } else if scheme.eq_ignore_ascii_case("Basic") {
        decode_base64(credentials.trim())
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|d| d.split_once(':').map(|(_, p)| p.to_string()))
            .is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()))
    } else {
        false
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn schemes_are_case_insensitive_and_the_token_must_match() {
        use super::credentials_ok;
        for given in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER  s3cret ",
            "basic OnMzY3JldA==",
        ] {
            assert!(credentials_ok(given, "s3cret"), "{given}");
        }
        for given in [
            "",
            "Bearer",
            "Bearer wrong",
            "Token s3cret",
            "Bearers3cret",
            "s3cret",
        ] {
            assert!(!credentials_ok(given, "s3cret"), "{given}");
        }
    }

    #[test]
    fn decodes_basic_credentials() {
        assert_eq!(
            super::decode_base64("dXNlcjpzZWNyZXQ=").unwrap(),
            b"user:secret"
        );
    }
}
