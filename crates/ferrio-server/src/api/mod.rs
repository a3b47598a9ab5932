//! The HTTP API under `/api/` for backends in any language: emit to rooms, make sockets join
//! or leave rooms, disconnect them, list who is in a room, and the node's numbers. Every call
//! goes through the namespace's adapter, so with a cluster adapter it reaches every node.
//! `docs/openapi.yaml` describes it.

// An early answer travels as the `Err` of a helper, once per request: boxing it buys nothing.
#![allow(clippy::result_large_err)]

pub mod keys;
pub mod requests;

use std::sync::Arc;

use bytes::Bytes;
use ferrio::engine::ResponseBody;
use ferrio::{Io, Namespace};
use http::{Method, Request, Response, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use keys::ApiKeys;
use requests::Invalid;

/// What the API needs from the server.
#[derive(Debug)]
pub struct Api {
    pub io: Io,
    pub keys: Arc<ApiKeys>,
    pub max_body: usize,
    /// The deadline and minimum rate of a body (`limits.body_timeout`, `body_min_rate`).
    pub body_limits: ferrio::body::BodyLimits,
    /// The bytes API bodies in flight hold together, at most.
    pub bodies: Arc<ferrio::body::BodyBudget>,
    pub node_id: String,
    pub clustered: bool,
    /// The dashboard's own namespace, left out of `/api/stats`.
    pub internal_namespace: Option<String>,
    /// The event names only the server emits: `/api/emit` refuses them.
    pub reserved: Arc<crate::events::ServerEvents>,
}

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(ResponseBody::from(body.to_string()))
        .unwrap_or_default()
}

fn error(status: StatusCode, code: &str, message: Option<String>) -> Response<ResponseBody> {
    let mut body = json!({ "ok": false, "error": code });
    if let Some(message) = message {
        body["message"] = Value::String(message);
    }
    json_response(status, &body)
}

fn bad_request((field, message): Invalid) -> Response<ResponseBody> {
    let message = if field.is_empty() {
        message
    } else {
        format!("`{field}` {message}")
    };
    error(StatusCode::BAD_REQUEST, "invalid_body", Some(message))
}

fn ok(extra: Value) -> Response<ResponseBody> {
    let mut body = json!({ "ok": true });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    json_response(StatusCode::OK, &body)
}

/// Percent-decodes a path segment (`chat%3Alobby`); `None` if it is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query_param(req: &Request<impl Sized>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v)).flatten()
    })
}

impl Api {
    /// Answers one request under `/api/`.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (endpoint, res) = self.route(req).await;
        crate::metrics::api_request(endpoint, res.status().as_u16());
        res
    }

    async fn route<B>(&self, req: Request<B>) -> (&'static str, Response<ResponseBody>)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if !self.keys.any() {
            return ("none", error(StatusCode::NOT_FOUND, "not_found", None));
        }
        let authorized = keys::presented(req.headers()).is_some_and(|key| self.keys.accepts(key));
        if !authorized {
            return (
                "unauthorized",
                error(StatusCode::UNAUTHORIZED, "unauthorized", None),
            );
        }
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let post = method == Method::POST;
        match path.as_str() {
            "/api/emit" if post => ("emit", self.emit(req).await),
            "/api/rooms/join" if post => ("rooms_join", self.rooms(req, true).await),
            "/api/rooms/leave" if post => ("rooms_leave", self.rooms(req, false).await),
            "/api/disconnect" if post => ("disconnect", self.disconnect(req).await),
            "/api/stats" if method == Method::GET => ("stats", self.stats()),
            _ if method == Method::GET && path.starts_with("/api/presence/") => {
                let room = percent_decode(&path["/api/presence/".len()..]);
                let namespace = query_param(&req, "namespace").unwrap_or_else(|| "/".into());
                let res = match room {
                    Some(room) if !room.is_empty() => self.presence(&namespace, &room).await,
                    _ => bad_request((
                        "room".into(),
                        "must be a non-empty, percent-encoded UTF-8 name".into(),
                    )),
                };
                ("presence", res)
            }
            _ if method == Method::GET && path.starts_with("/api/history/") => {
                let room = percent_decode(&path["/api/history/".len()..]);
                let res = match room {
                    Some(room) if !room.is_empty() && room.len() <= ferrio::builtins::MAX_NAME_LEN => {
                        self.history(&req, &room).await
                    }
                    _ => bad_request((
                        "room".into(),
                        "must be a non-empty, percent-encoded UTF-8 name of at most 256 bytes".into(),
                    )),
                };
                ("history", res)
            }
            "/api/emit" | "/api/rooms/join" | "/api/rooms/leave" | "/api/disconnect" | "/api/stats" => (
                "method_not_allowed",
                error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            ),
            _ => ("not_found", error(StatusCode::NOT_FOUND, "not_found", None)),
        }
    }

    /// Reads and decodes a JSON body.
    async fn body<B, T>(&self, req: Request<B>) -> Result<T, Response<ResponseBody>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
        T: DeserializeOwned,
    {
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                Some(format!("the body may be at most {} bytes", self.max_body)),
            )
        };
        let declared = ferrio::body::declared_length(req.headers());
        let limits = ferrio::body::BodyLimits {
            max_bytes: self.max_body,
            ..self.body_limits
        };
        let read = ferrio::body::read_body(
            req.into_body(),
            declared,
            limits,
            &self.bodies,
            std::future::pending(),
        )
        .await;
        let bytes = match read {
            Ok((bytes, _held)) => bytes,
            Err(ferrio::body::BodyError::TooLarge(_)) => return Err(too_large()),
            Err(e @ ferrio::body::BodyError::Unreadable(_)) => {
                tracing::debug!(error = ?e.to_string(), "API body unreadable");
                return Err(error(StatusCode::BAD_REQUEST, "body_unreadable", None));
            }
            Err(e) => return Err(error(e.status(), e.label(), Some(e.to_string()))),
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
        if let (Ok(_), Err(e)) = (&parsed, de.end()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                Some(e.to_string()),
            ));
        }
        Err(match parsed {
            Ok(body) => return Ok(body),
            Err(e) => {
                let field = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_syntax() || inner.is_eof() {
                    error(StatusCode::BAD_REQUEST, "malformed_json", Some(inner.to_string()))
                } else {
                    let field = if field == "." { String::new() } else { field };
                    bad_request((field, inner.to_string()))
                }
            }
        })
    }

    fn namespace(&self, name: &str) -> Result<Namespace, Response<ResponseBody>> {
        self.io.of(name).ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "unknown_namespace",
                Some(format!("no namespace {name:?} on this server")),
            )
        })
    }

    async fn emit<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let body: requests::Emit = match self.body(req).await {
            Ok(b) => b,
            Err(res) => return res,
        };
        if let Err(invalid) = body.check() {
            return bad_request(invalid);
        }
        let ns = match self.namespace(&body.namespace) {
            Ok(ns) => ns,
            Err(res) => return res,
        };
        if self.reserved.is_reserved(ns.name(), &body.event) {
            return bad_request(("event".into(), "is a reserved event name".into()));
        }
        let mut op = if body.rooms.is_empty() {
            ns.broadcast()
        } else {
            ns.to(body.rooms)
        };
        if !body.except.is_empty() {
            op = op.except(body.except);
        }
        if body.volatile {
            op = op.volatile();
        }
        let payload = match body.data {
            Some(data) => ferrio::Payload::from(data),
            None => ferrio::Payload::default(),
        };
        // `ok` only once every node has it: a message other nodes will not see is answered
        // `unavailable`, with the local sockets it reached all the same.
        match op.emit_confirmed(&body.event, payload).await {
            Ok(local) => ok(json!({ "local_recipients": local })),
            Err(e) => unavailable(&e),
        }
    }

    async fn rooms<B>(&self, req: Request<B>, join: bool) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let body: requests::Rooms = match self.body(req).await {
            Ok(b) => b,
            Err(res) => return res,
        };
        let target = match body.check() {
            Ok(t) => t,
            Err(invalid) => return bad_request(invalid),
        };
        let ns = match self.namespace(&body.namespace) {
            Ok(ns) => ns,
            Err(res) => return res,
        };
        let op = ns.to(target);
        let done = if join {
            op.sockets_join(body.rooms).await
        } else {
            op.sockets_leave(body.rooms).await
        };
        match done {
            Ok(()) => ok(json!({})),
            Err(e) => adapter_error(e),
        }
    }

    async fn disconnect<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let body: requests::Disconnect = match self.body(req).await {
            Ok(b) => b,
            Err(res) => return res,
        };
        let target = match body.check() {
            Ok(t) => t,
            Err(invalid) => return bad_request(invalid),
        };
        let ns = match self.namespace(&body.namespace) {
            Ok(ns) => ns,
            Err(res) => return res,
        };
        match ns.to(target).disconnect_sockets(body.close).await {
            Ok(()) => ok(json!({})),
            Err(e) => adapter_error(e),
        }
    }

    async fn presence(&self, namespace: &str, room: &str) -> Response<ResponseBody> {
        let ns = match self.namespace(namespace) {
            Ok(ns) => ns,
            Err(res) => return res,
        };
        match crate::presence::snapshot(&ns, room).await {
            Ok(body) => ok(body),
            Err(e) => adapter_error(e),
        }
    }

    /// `GET /api/history/{room}?namespace=&since=&limit=`: the room's recent messages (binary
    /// arguments as `{"base64": ...}`).
    async fn history<B>(&self, req: &Request<B>, room: &str) -> Response<ResponseBody> {
        let namespace = query_param(req, "namespace").unwrap_or_else(|| "/".into());
        let ns = match self.namespace(&namespace) {
            Ok(ns) => ns,
            Err(res) => return res,
        };
        let since = query_param(req, "since");
        let limit = match query_param(req, "limit") {
            None => ferrio::builtins::DEFAULT_HISTORY_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=ferrio::builtins::MAX_HISTORY_LIMIT).contains(&n) => n,
                _ => return bad_request(("limit".into(), "must be an integer from 1 to 100".into())),
            },
        };
        match ns.history(room, since.as_deref(), limit).await {
            Ok(history) => {
                use base64::Engine as _;
                let messages: Vec<Value> = history
                    .messages
                    .iter()
                    .map(|m| {
                        ferrio::builtins::history_message(m, |bytes| {
                            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(&bytes) })
                        })
                    })
                    .collect();
                ok(json!({ "messages": messages, "complete": history.complete }))
            }
            Err(ferrio::HistoryError::NotKept) => error(
                StatusCode::NOT_FOUND,
                "not_kept",
                Some("no [history] rule covers this room".into()),
            ),
            Err(ferrio::HistoryError::UnknownOffset) => {
                bad_request(("since".into(), "is not an offset of this namespace".into()))
            }
            Err(ferrio::HistoryError::Unavailable) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                Some("the cluster's history store cannot be reached".into()),
            ),
        }
    }

    fn stats(&self) -> Response<ResponseBody> {
        let mut namespaces: Vec<Value> = self
            .io
            .namespaces()
            .iter()
            .filter(|ns| self.internal_namespace.as_deref() != Some(ns.name()))
            .map(|ns| {
                json!({
                    "name": ns.name(),
                    "sockets": ns.socket_count(),
                    "rooms": ns.adapter().local().room_count(),
                })
            })
            .collect();
        namespaces.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        ok(json!({
            "node": self.node_id,
            "clustered": self.clustered,
            "connections": self.io.connection_count(),
            "namespaces": namespaces,
        }))
    }
}

fn unavailable(e: &ferrio::EmitError) -> Response<ResponseBody> {
    let mut body = ferrio::builtins::unavailable(e);
    body["message"] = Value::String(e.error.to_string());
    json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
}

fn adapter_error(e: ferrio::AdapterError) -> Response<ResponseBody> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "adapter_error",
        Some(e.to_string()),
    )
}
