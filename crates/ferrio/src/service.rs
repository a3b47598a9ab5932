//! Mounting ferrio: as a tower [`Service`] of its own, as a [`FerrioLayer`] in front of an
//! app's routes on the same port, or with [`serve`], a complete HTTP/1.1 server loop with
//! graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::{Layer, Service};

use crate::Io;
use crate::adapter::BoxFuture;
use crate::engine::{self, Engine, RemoteAddr, ResponseBody, SessionFactory};

pub use crate::engine::RequestBody;

fn handles(engine_path: &str, req_path: &str) -> bool {
    req_path.starts_with(engine_path)
}

pub(crate) fn call_engine<F: SessionFactory, B: RequestBody>(
    engine: &Arc<Engine<F>>,
    req: Request<B>,
) -> BoxFuture<'static, Result<Response<ResponseBody>, Infallible>> {
    if !handles(&engine.config.path, req.uri().path()) {
        return Box::pin(async {
            Ok(Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(ResponseBody::default())
                .unwrap_or_default())
        });
    }
    let engine = engine.clone();
    Box::pin(async move { Ok(engine::handle_request(&engine, req).await) })
}

impl<B: RequestBody> Service<Request<B>> for Io {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Serves the engine's path; anything else is 404.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        call_engine(&self.0.engine, req)
    }
}

impl Io {
    /// A layer that serves ferrio's path and passes every other request to the app.
    pub fn layer(&self) -> FerrioLayer {
        FerrioLayer { io: self.clone() }
    }
}

/// Puts ferrio in front of an app: requests under ferrio's path go to ferrio, the rest to
/// the app.
#[derive(Debug, Clone)]
pub struct FerrioLayer {
    io: Io,
}

impl<S> Layer<S> for FerrioLayer {
    type Service = FerrioService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FerrioService {
            io: self.io.clone(),
            inner,
        }
    }
}

/// The service [`FerrioLayer`] makes.
#[derive(Debug, Clone)]
pub struct FerrioService<S> {
    io: Io,
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for FerrioService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: RequestBody,
{
    type Response = Response<Either<ResponseBody, ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if handles(&self.io.config().path, req.uri().path()) {
            let engine = self.io.0.engine.clone();
            return Box::pin(async move {
                let res = engine::handle_request(&engine, req).await;
                Ok(res.map(Either::Left))
            });
        }
        // The clone that was made ready is the one that serves (tower's convention).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { Ok(inner.call(req).await?.map(Either::Right)) })
    }
}

/// Limits of the HTTP server loop [`serve_with`] runs.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long a client may take to send a request's headers (against slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; larger ones get 431.
    pub max_header_bytes: usize,
    /// How long in-flight requests may take to finish after `shutdown`.
    pub drain: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            drain: Duration::from_secs(5),
        }
    }
}

/// Serves HTTP/1.1 on `listener` with `service` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish (up to `drain`) and returns.
///
/// Each request carries its peer address as a [`RemoteAddr`] extension. Long-polling and
/// WebSocket upgrades work; close the [`Io`] itself (see [`Io::close`]) to say goodbye to
/// its clients.
pub async fn serve<S, ResBody>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static,
{
    let options = ServeOptions {
        drain,
        ..ServeOptions::default()
    };
    serve_with(listener, service, shutdown, options).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with<S, ResBody>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static,
{
    // HTTP/1.1 only (what Socket.IO clients speak), and hyper's own connection type, so an
    // upgraded WebSocket gets the bare TCP stream back (see engine::ws_io).
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // hyper's floor for its read buffer is 8 KiB.
        .max_buf_size(options.max_header_bytes.max(8192));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = with_remote_addr(service.clone(), peer);
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    connections.close();
    let _ = tokio::time::timeout(options.drain, connections.wait()).await;
    Ok(())
}

fn with_remote_addr<S, ResBody>(
    service: S,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ResBody>,
    Error = Infallible,
    Future = S::Future,
> + Clone
where
    S: Service<Request<Incoming>, Response = Response<ResBody>, Error = Infallible> + Clone,
    ResBody: http_body::Body,
{
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(RemoteAddr(peer));
        service.clone().call(req)
    })
}
