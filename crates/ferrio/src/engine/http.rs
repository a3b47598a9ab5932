//! HTTP entry of the engine: verifies a request exactly as the reference does (same order,
//! same error codes), answers CORS, and hands polling requests and WebSockets to the session's
//! driver.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::connection::{Connection, Control, Frame, PollReply, PostReply, TransportKind};
use super::driver::Driver;
use super::{Engine, SessionFactory};
use crate::config::Cors;
use crate::{Handshake, Sid};

/// Request bodies ferrio can read.
pub trait RequestBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}
impl<B> RequestBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

/// The body of every response ferrio writes.
pub type ResponseBody = Full<Bytes>;

/// The peer's address, as a request extension. ferrio's own server inserts it; an app that
/// mounts ferrio on its own HTTP stack inserts it too if sockets should see the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// The reference's error codes (`engine.io/lib/server.ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineError {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    UnsupportedProtocolVersion = 5,
}

impl EngineError {
    fn message(self) -> &'static str {
        match self {
            Self::UnknownTransport => "Transport unknown",
            Self::UnknownSid => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest => "Bad request",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }
}

#[derive(Debug, Default)]
struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
}

fn parse_query(q: &str) -> Query<'_> {
    let mut out = Query::default();
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "EIO" => out.eio = Some(v),
            "transport" => out.transport = Some(v),
            "sid" => out.sid = Some(v),
            _ => {}
        }
    }
    out
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    req.method() == Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
}

/// Handles one request under the engine's path.
pub(crate) async fn handle_request<F, B>(engine: &Arc<Engine<F>>, req: Request<B>) -> Response<ResponseBody>
where
    F: SessionFactory,
    B: RequestBody,
{
    let cors = cors_headers(&engine.config.cors, &req);
    let mut res = route(engine, req).await;
    if let Some(cors) = cors {
        res.headers_mut().extend(cors);
    }
    res
}

async fn route<F, B>(engine: &Arc<Engine<F>>, req: Request<B>) -> Response<ResponseBody>
where
    F: SessionFactory,
    B: RequestBody,
{
    if req.method() == Method::OPTIONS && engine.config.cors != Cors::Off {
        return preflight(&req);
    }
    let query_string = req.uri().query().unwrap_or("").to_owned();
    let query = parse_query(&query_string);
    let upgrade = is_websocket_upgrade(&req);

    // The order of checks is the reference's: transport, Origin characters, sid, method.
    let transport = match query.transport {
        Some("polling") if engine.config.transports.polling => TransportKind::Polling,
        Some("websocket") if engine.config.transports.websocket => TransportKind::WebSocket,
        _ => return error(EngineError::UnknownTransport),
    };
    if let Some(origin) = req.headers().get(header::ORIGIN)
        && origin.as_bytes().iter().any(|&b| b < 0x20 && b != b'\t')
    {
        return error(EngineError::BadRequest);
    }

    if let Some(sid) = query.sid {
        let Some(conn) = sid.parse::<Sid>().ok().and_then(|sid| engine.session(&sid)) else {
            return error(EngineError::UnknownSid);
        };
        return match transport {
            TransportKind::WebSocket if upgrade => {
                if !engine.config.allow_upgrades {
                    return error(EngineError::BadRequest);
                }
                let max_message = engine.config.max_payload_for(&conn);
                upgrade_to_websocket(
                    req,
                    max_message,
                    move |ws| {
                        if let Err(Control::WebSocket(ws)) = conn.control(Control::WebSocket(Box::new(ws))) {
                            drop(ws);
                        }
                    },
                    || {},
                )
            }
            TransportKind::WebSocket => error(EngineError::BadRequest),
            TransportKind::Polling => {
                if conn.transport() != TransportKind::Polling {
                    return error(EngineError::BadRequest);
                }
                polling_request(engine, &conn, req).await
            }
        };
    }

    if req.method() != Method::GET {
        return error(EngineError::BadHandshakeMethod);
    }
    if transport == TransportKind::WebSocket && !upgrade {
        return error(EngineError::BadRequest);
    }
    if let Some(allow) = &engine.config.allow_request {
        let request = crate::config::HandshakeRequest {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            remote: super::remote_of(&req),
        };
        if let Err(message) = allow(&request) {
            return forbidden(&message);
        }
    }
    if query.eio != Some("4") {
        return error(EngineError::UnsupportedProtocolVersion);
    }

    let handshake = Arc::new(Handshake::from_request(&req, &query_string));
    match transport {
        TransportKind::Polling => {
            let sid = Sid::random();
            let conn = new_connection(engine, sid, TransportKind::Polling);
            let open = engine.open_packet(
                &sid,
                engine.config.transports.websocket && engine.config.allow_upgrades,
            );
            let handler = engine.factory.open(&conn, handshake);
            engine.insert(conn.clone());
            tokio::spawn(Driver::polling(engine.clone(), conn, handler));
            text_response(open.into_bytes())
        }
        TransportKind::WebSocket => {
            let (engine2, engine3) = (engine.clone(), engine.clone());
            let abandoned = handshake.clone();
            let max_message = engine
                .config
                .max_payload_before_connect
                .min(engine.config.max_payload);
            upgrade_to_websocket(
                req,
                max_message,
                move |ws| {
                    let sid = Sid::random();
                    let conn = new_connection(&engine2, sid, TransportKind::WebSocket);
                    let open = engine2.open_packet(&sid, false);
                    let _ = conn.push(&[Frame::text(open)], false);
                    let handler = engine2.factory.open(&conn, handshake);
                    engine2.insert(conn.clone());
                    tokio::spawn(Driver::websocket(engine2, conn, handler, ws));
                },
                // Whoever counted the handshake hears that nothing came of it.
                move || engine3.factory.abandoned(&abandoned),
            )
        }
    }
}

fn new_connection<F>(engine: &Engine<F>, sid: Sid, transport: TransportKind) -> Arc<Connection> {
    Arc::new(Connection::new(
        sid,
        transport,
        engine.config.max_queued_packets,
        engine.config.max_queued_bytes,
    ))
}

async fn polling_request<F, B>(
    engine: &Arc<Engine<F>>,
    conn: &Arc<Connection>,
    req: Request<B>,
) -> Response<ResponseBody>
where
    F: SessionFactory,
    B: RequestBody,
{
    match *req.method() {
        Method::GET => {
            let (tx, rx) = oneshot::channel();
            if conn.control(Control::Poll(tx)).is_err() {
                return error(EngineError::UnknownSid);
            }
            match rx.await {
                Ok(PollReply::Payload(body)) => text_response(body),
                Ok(PollReply::BadRequest) | Err(_) => error(EngineError::BadRequest),
                Ok(PollReply::Overlapping) => status(StatusCode::BAD_REQUEST),
            }
        }
        Method::POST => {
            if !conn.begin_post() {
                // Overlapping POSTs: the reference refuses the second and ends the session.
                crate::metrics::protocol_error("overlapping_post");
                conn.close(super::CloseReason::TransportError);
                return error(EngineError::BadRequest);
            }
            // Released however the request ends, an aborted upload included.
            struct PostSlot<'a>(&'a Connection);
            impl Drop for PostSlot<'_> {
                fn drop(&mut self) {
                    self.0.end_post();
                }
            }
            let _slot = PostSlot(conn);
            post_request(engine, conn, req).await
        }
        _ => status(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn post_request<F, B>(
    engine: &Arc<Engine<F>>,
    conn: &Arc<Connection>,
    req: Request<B>,
) -> Response<ResponseBody>
where
    F: SessionFactory,
    B: RequestBody,
{
    // Binary payloads travel as base64 text in v4; a binary content type is a v3 client.
    let binary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/octet-stream"));
    if binary {
        crate::metrics::protocol_error("binary_post");
        conn.close(super::CloseReason::TransportError);
        return error(EngineError::BadRequest);
    }
    // Bounded in size, time and shared memory, and ended with its session: a body that
    // stalls cannot hold a request, a descriptor or its bytes past any of them.
    let declared = crate::body::declared_length(req.headers());
    let limits = crate::body::BodyLimits {
        max_bytes: engine.config.max_payload_for(conn),
        ..engine.config.body
    };
    let read = crate::body::read_body(req.into_body(), declared, limits, &engine.bodies, conn.ending()).await;
    let (body, _held) = match read {
        Ok(read) => read,
        Err(crate::body::BodyError::TooLarge(_)) => return payload_too_large(),
        Err(crate::body::BodyError::Cancelled) => {
            tracing::debug!(sid = %conn.sid, "polling body ended with its session");
            return error(EngineError::UnknownSid);
        }
        Err(e) => {
            crate::metrics::body_refused(e.label());
            tracing::debug!(sid = %conn.sid, reason = e.label(), "polling body refused");
            if !matches!(e, crate::body::BodyError::Busy) {
                // The reference ends the session when a POST fails mid-body.
                conn.close(super::CloseReason::TransportError);
            }
            return status(e.status());
        }
    };
    let (tx, rx) = oneshot::channel();
    if conn.control(Control::Post(body, tx)).is_err() {
        return error(EngineError::UnknownSid);
    }
    match rx.await {
        Ok(PostReply::Ok) => Response::builder()
            .header(header::CONTENT_TYPE, "text/html")
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap_or_default(),
        Ok(PostReply::BadRequest) | Err(_) => error(EngineError::BadRequest),
    }
}

/// Answers the WebSocket handshake and runs `on_open` with the stream once upgraded, or
/// `on_abandon` if the upgrade never completes.
fn upgrade_to_websocket<B>(
    mut req: Request<B>,
    max_message: usize,
    on_open: impl FnOnce(super::WsStream) + Send + 'static,
    on_abandon: impl FnOnce() + Send + 'static,
) -> Response<ResponseBody> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let (Some(key), true) = (key, version_ok) else {
        return error(EngineError::BadRequest);
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            on_abandon();
            return;
        };
        let (io, pre_read) = super::ws_io::WsIo::from_upgraded(upgraded);
        let ws = super::ws::WsConn::new(io, pre_read, max_message);
        on_open(ws);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
        .body(ResponseBody::default())
        .unwrap_or_default()
}

fn text_response(body: Vec<u8>) -> Response<ResponseBody> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn error(e: EngineError) -> Response<ResponseBody> {
    let body = format!(r#"{{"code":{},"message":"{}"}}"#, e as u8, e.message());
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// 403 `{"code":4,"message":...}`: `allow_request` refused the handshake.
fn forbidden(message: &str) -> Response<ResponseBody> {
    let message = if message.is_empty() { "Forbidden" } else { message };
    let body = serde_json::json!({ "code": 4, "message": message }).to_string();
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn payload_too_large() -> Response<ResponseBody> {
    status(StatusCode::PAYLOAD_TOO_LARGE)
}

fn status(code: StatusCode) -> Response<ResponseBody> {
    Response::builder()
        .status(code)
        .body(ResponseBody::default())
        .unwrap_or_default()
}

/// The CORS headers of a response, if the policy allows the request's origin.
fn cors_headers<B>(cors: &Cors, req: &Request<B>) -> Option<http::HeaderMap> {
    let mut h = http::HeaderMap::new();
    match cors {
        Cors::Off => return None,
        Cors::Any => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        Cors::Origins { credentials, .. } | Cors::Checked { credentials, .. } => {
            let origin = req.headers().get(header::ORIGIN)?;
            let ok = origin.to_str().is_ok_and(|o| cors.allows(o));
            // A preflight's answer also depends on the headers it asked for (as the reference).
            let vary = if req.method() == Method::OPTIONS
                && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_HEADERS)
            {
                "Origin, Access-Control-Request-Headers"
            } else {
                "Origin"
            };
            h.insert(header::VARY, HeaderValue::from_static(vary));
            if !ok {
                return Some(h);
            }
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if *credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
    }
    Some(h)
}

fn preflight<B>(req: &Request<B>) -> Response<ResponseBody> {
    let mut res = status(StatusCode::NO_CONTENT);
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
    );
    if let Some(requested) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        h.append(
            header::VARY,
            HeaderValue::from_static("Access-Control-Request-Headers"),
        );
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}
