//! The HTTP front of `ferrio serve`: admits each handshake against the connection limits
//! before the server sees it (429 or 503 with a JSON reason otherwise) and passes every other
//! request through.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferrio::Io;
use ferrio::engine::{RemoteAddr, ResponseBody};
use http::{Request, Response, StatusCode, header};
use tower::Service;

use super::ConnectionLimits;
use super::bodies::{BodyBytesPerIp, MeteredBody};
use super::connections::Refusal;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Wraps the server's service with the connection limits.
#[derive(Clone, Debug)]
pub struct Gate {
    io: Io,
    limits: Arc<ConnectionLimits>,
    /// Polling POST body bytes per client address.
    bodies: Arc<BodyBytesPerIp>,
    path: Arc<str>,
}

impl Gate {
    pub fn new(io: Io, limits: Arc<ConnectionLimits>, bodies: Arc<BodyBytesPerIp>) -> Self {
        let path = Arc::from(io.config().path.as_str());
        Self {
            io,
            limits,
            bodies,
            path,
        }
    }

    /// The client's address of a request (behind trusted proxies, the one they name).
    pub fn client_ip<B>(&self, req: &Request<B>) -> std::net::IpAddr {
        let peer = req.extensions().get::<RemoteAddr>().map(|r| r.0);
        self.limits.proxies().client_ip(peer, req.headers())
    }

    /// A request that would open a new session: a GET under the path without a `sid`.
    pub fn is_handshake<B>(&self, req: &Request<B>) -> bool {
        req.method() == http::Method::GET
            && req.uri().path().starts_with(&*self.path)
            && !req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .any(|pair| pair.split('=').next() == Some("sid"))
    }
}

/// Whether a handshake could open a session at all (`EIO=4`, a known transport, a WebSocket
/// upgrade for `websocket`): only those are counted, so a malformed request the engine refuses
/// anyway never takes, or frees by eviction, a place.
fn could_open<B>(req: &Request<B>) -> bool {
    let (mut eio, mut transport) = (None, None);
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("EIO", v)) => eio = Some(v),
            Some(("transport", v)) => transport = Some(v),
            _ => {}
        }
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    eio == Some("4")
        && match transport {
            Some("polling") => true,
            Some("websocket") => upgrade,
            _ => false,
        }
}

fn refusal_response(refusal: Refusal) -> Response<ResponseBody> {
    let (status, retry_after) = match refusal {
        Refusal::NodeFull | Refusal::PendingFull => (StatusCode::SERVICE_UNAVAILABLE, 5),
        Refusal::TooManyFromIp | Refusal::TooManyPendingFromIp => (StatusCode::TOO_MANY_REQUESTS, 5),
        Refusal::Rate(wait) => (StatusCode::TOO_MANY_REQUESTS, wait.as_secs().max(1)),
    };
    let body = serde_json::json!({ "code": 4, "message": refusal.message() }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::RETRY_AFTER, retry_after)
        .body(ResponseBody::from(body))
        .unwrap_or_default()
}

impl<B> Service<Request<B>> for Gate
where
    B: Unpin,
    Io: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>
        + Service<Request<MeteredBody<B>>, Response = Response<ResponseBody>, Error = Infallible>,
    <Io as Service<Request<B>>>::Future: Send + 'static,
    <Io as Service<Request<MeteredBody<B>>>>::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.method() == http::Method::POST && req.uri().path().starts_with(&*self.path) {
            // A polling body counts against its address while it is read.
            let ip = self.client_ip(&req);
            let bodies = self.bodies.clone();
            let req = req.map(|body| MeteredBody::new(body, bodies, ip));
            return Box::pin(self.io.call(req));
        }
        if !self.is_handshake(&req) || !could_open(&req) {
            return Box::pin(self.io.call(req));
        }
        let ip = self.client_ip(&req);
        if let Err(refusal) = self.limits.admit(ip) {
            tracing::debug!(%ip, path = req.uri().path(), reason = refusal.message(), "handshake refused");
            return Box::pin(std::future::ready(Ok(refusal_response(refusal))));
        }
        let limits = self.limits.clone();
        let answer = self.io.call(req);
        Box::pin(async move {
            let res = answer.await?;
            // A polling session has opened by now; a WebSocket opens after the upgrade (and
            // its reservation lapses if it never does). Anything else opened nothing.
            if !matches!(res.status(), StatusCode::OK | StatusCode::SWITCHING_PROTOCOLS) {
                limits.release(ip);
            }
            Ok(res)
        })
    }
}
