//! The HTTP transport: one accept loop driving hyper's HTTP/1.1 + HTTP/2 (prior knowledge)
//! connection builder, with the limits `axum::serve` cannot express.
//!
//! - At most `max_connections` connections: one more is accepted and closed at once, so a flood
//!   of idle sockets costs no file descriptors beyond the cap and the listener keeps draining.
//! - A watchdog per connection closes it when it holds no request and: its request head is not
//!   complete within `header_timeout` of its first byte (or of the connection, for the first
//!   request), or it sent nothing for `idle_timeout` after its last response.
//! - A request body must arrive whole within `body_timeout` of its head (408 otherwise);
//!   `/inserts-stream` is exempt here, it times the gap between lines itself.
//!
//! A connection with a request in flight (a streaming push response, an open `/inserts-stream`)
//! is never timed out by the watchdog: those are long-lived by design.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tower::ServiceExt;

use crate::metrics::TimeoutKind;
use crate::{AppState, ServerConfig};

/// What every connection task shares.
struct Shared {
    state: Arc<AppState>,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accepts connections from `listener` until `stopping` turns true, then asks each open
/// connection to finish and waits for all of them.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    router: Router,
    mut stopping: watch::Receiver<bool>,
) {
    let config = &state.config;
    let cap = config.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(cap));
    let shared = Arc::new(Shared {
        builder: auto::Builder::new(TokioExecutor::new()),
        router,
        tls: config
            .tls
            .as_ref()
            .map(|tls| tokio_rustls::TlsAcceptor::from(tls.0.clone())),
        state: state.clone(),
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|s| *s) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // EMFILE and friends: the condition passes once connections close; a tight
                // retry loop would only burn the CPU meanwhile.
                tracing::warn!("accepting an HTTP connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the cap: closing at once frees the descriptor; a client retries later.
            state.http.transport.refused();
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            shared.state.http.transport.opened();
            connection(tcp, &shared, stopping).await;
            shared.state.http.transport.closed();
            drop(permit);
        });
    }
    // Every permit back means every connection task has ended.
    let _ = slots.acquire_many(cap as u32).await;
}

/// Serves one accepted TCP connection (after the TLS handshake, when TLS is on).
async fn connection(tcp: tokio::net::TcpStream, shared: &Shared, stopping: watch::Receiver<bool>) {
    let activity = Arc::new(Activity::new());
    let Some(acceptor) = &shared.tls else {
        return serve_io(tcp, shared, stopping, activity).await;
    };
    // The handshake is part of the request head: a client that stalls it is cut off the same.
    let header_timeout = shared.state.config.header_timeout;
    match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve_io(tls, shared, stopping, activity).await,
        Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
        Err(_) => shared.state.http.transport.timed_out(TimeoutKind::Header),
    }
}

async fn serve_io<I>(
    io: I,
    shared: &Shared,
    mut stopping: watch::Receiver<bool>,
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Watched {
        inner: io,
        activity: activity.clone(),
        sniffed: Vec::new(),
    });
    let service = {
        let activity = activity.clone();
        let router = shared.router.clone();
        let state = shared.state.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = Busy::start(activity.clone());
            let (parts, body) = request.into_parts();
            // /inserts-stream is long-lived: it bounds the gap between lines instead.
            let deadline = (parts.uri.path() != "/inserts-stream")
                .then(|| tokio::time::Instant::now() + state.config.body_timeout);
            let body = Body::new(TimedBody {
                inner: body,
                deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
                timed_out: false,
                state: state.clone(),
            });
            let request = Request::from_parts(parts, body);
            let router = router.clone();
            async move {
                let response = match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                // The connection counts as busy until the response body is done or dropped,
                // so a streaming push response is never mistaken for an idle connection.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        inner: body,
                        _busy: busy,
                    })
                }))
            }
        })
    };
    let config = &shared.state.config;
    let conn = shared.builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("HTTP connection: {e}");
                }
                return;
            }
            _ = stopping.wait_for(|s| *s), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            kind = activity.expired(config) => {
                // Nothing is in flight: dropping the connection closes the socket.
                shared.state.http.transport.timed_out(kind);
                return;
            }
        }
    }
}

/// `Activity::read_while_idle` when nothing was read since the connection went idle.
const NONE: u64 = u64::MAX;

/// What the watchdog of one connection knows about it; times are ms since `started`.
struct Activity {
    started: Instant,
    /// Requests whose response is not finished.
    active: AtomicUsize,
    /// Requests whose head was read.
    requests: AtomicU64,
    /// When `active` last dropped to zero.
    idle_since: AtomicU64,
    /// When the first byte arrived after `idle_since`, or [`NONE`].
    read_while_idle: AtomicU64,
    /// 0 unknown yet, 1 HTTP/1, 2 HTTP/2.
    protocol: AtomicU8,
    /// Told when `active` drops to zero.
    idle: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            read_while_idle: AtomicU64::new(NONE),
            protocol: AtomicU8::new(0),
            idle: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    fn read(&self) {
        if self.active.load(Ordering::Acquire) == 0 {
            let _ = self.read_while_idle.compare_exchange(
                NONE,
                self.now(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// When the connection is to be closed and why, if nothing changes meanwhile; `None` while
    /// a request is in flight.
    fn deadline(&self, config: &ServerConfig) -> Option<(Instant, TimeoutKind)> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = self.at(self.idle_since.load(Ordering::Acquire));
        if self.protocol.load(Ordering::Relaxed) == 2 {
            // HTTP/2 frames (pings, settings) between requests are no request head.
            return Some((idle_since + config.idle_timeout, TimeoutKind::Idle));
        }
        if self.requests.load(Ordering::Acquire) == 0 {
            // A new connection owes its first request head from the start.
            return Some((self.started + config.header_timeout, TimeoutKind::Header));
        }
        match self.read_while_idle.load(Ordering::Acquire) {
            NONE => Some((idle_since + config.idle_timeout, TimeoutKind::Idle)),
            first => Some((self.at(first) + config.header_timeout, TimeoutKind::Header)),
        }
    }

    /// Resolves once the connection has outstayed a limit.
    async fn expired(&self, config: &ServerConfig) -> TimeoutKind {
        loop {
            // Registered before the check, so a request ending in between is not missed.
            let idle = self.idle.notified();
            match self.deadline(config) {
                None => idle.await,
                Some((at, kind)) => {
                    if Instant::now() >= at {
                        return kind;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
            }
        }
    }
}

/// Marks a request in flight on its connection until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.active.fetch_add(1, Ordering::AcqRel);
        activity.requests.fetch_add(1, Ordering::AcqRel);
        activity.read_while_idle.store(NONE, Ordering::Release);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.read_while_idle.store(NONE, Ordering::Release);
        if activity.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle.notify_one();
        }
    }
}

/// The socket, noting when bytes arrive and which protocol the client speaks.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
    /// The first bytes, until they tell HTTP/2's preface from an HTTP/1 request line.
    sniffed: Vec<u8>,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.activity.read();
            if this.activity.protocol.load(Ordering::Relaxed) == 0 {
                let wanted = H2_PREFACE.len() - this.sniffed.len();
                this.sniffed
                    .extend_from_slice(&read[..read.len().min(wanted)]);
                let protocol = if !H2_PREFACE.starts_with(&this.sniffed) {
                    1
                } else if this.sniffed.len() == H2_PREFACE.len() {
                    2
                } else {
                    0
                };
                this.activity.protocol.store(protocol, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The error a request body gives when it did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTimeout(Duration);

/// Whether `error` (or what it wraps) is a [`BodyTimeout`].
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
struct TimedBody {
    inner: Incoming,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: bool,
    state: Arc<AppState>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let timeout = || Box::new(BodyTimeout(this.state.config.body_timeout)) as axum::BoxError;
        if this.timed_out {
            return Poll::Ready(Some(Err(timeout())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.is_none() {
                    this.deadline = None;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Some(deadline) = &mut this.deadline {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.deadline = None;
                        this.timed_out = true;
                        this.state.http.transport.timed_out(TimeoutKind::Body);
                        return Poll::Ready(Some(Err(timeout())));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until it is done or dropped.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
