//! A guest's stdout/stderr: kept in a bounded buffer, drained into the host log after each call.
//!
//! Writes past the bound are dropped and counted rather than failing, so a guest printing in a
//! loop cannot fill host memory, and cannot be made to trap by a full pipe either.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes kept between drains; more is dropped.
const CAPACITY: usize = 64 << 10;

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

/// Shared buffer behind the guest's stdout and stderr.
#[derive(Clone, Default)]
pub(crate) struct GuestOutput {
    buffer: Arc<Mutex<Buffer>>,
}

impl GuestOutput {
    fn append(&self, bytes: &[u8]) {
        let mut buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = CAPACITY.saturating_sub(buf.bytes.len());
        let kept = bytes.len().min(room);
        buf.bytes.extend_from_slice(&bytes[..kept]);
        buf.dropped += bytes.len() - kept;
    }

    /// Takes what the guest wrote since the last drain, logging it as `udf`'s; returns the text.
    pub(crate) fn drain(&self, udf: &str) -> String {
        let (bytes, dropped) = {
            let mut buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = std::mem::take(&mut buf.dropped);
            (std::mem::take(&mut buf.bytes), dropped)
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: "eddy::udf", udf, "guest output: {line}");
        }
        if dropped > 0 {
            tracing::warn!(target: "eddy::udf", udf, dropped, "guest output over the limit was dropped");
        }
        text
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(CAPACITY)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
