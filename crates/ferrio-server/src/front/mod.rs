//! The HTTP front of `ferrio serve`: `/api/`, `/metrics`, `/healthz`, `/readyz` and
//! `/dashboard` on the server's port; new handshakes are refused (503) while draining; everything else goes to
//! the connection gate and the Socket.IO server.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferrio::engine::ResponseBody;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tower::Service;

use crate::api::{Api, json_response};
use crate::dashboard::Dashboard;
use crate::health::Readiness;
use crate::limits::Gate;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Routes the operations endpoints and passes the rest on.
#[derive(Clone, Debug)]
pub struct Front {
    gate: Gate,
    api: Arc<Api>,
    readiness: Arc<Readiness>,
    metrics: Option<PrometheusHandle>,
    dashboard: Option<Arc<Dashboard>>,
}

impl Front {
    pub fn new(
        gate: Gate,
        api: Arc<Api>,
        readiness: Arc<Readiness>,
        metrics: Option<PrometheusHandle>,
        dashboard: Option<Arc<Dashboard>>,
    ) -> Self {
        Self {
            gate,
            api,
            readiness,
            metrics,
            dashboard,
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(ResponseBody::from(body))
        .unwrap_or_default()
}

impl Service<Request<Incoming>> for Front {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let path = req.uri().path();
        if path == "/api" || path.starts_with("/api/") {
            let api = self.api.clone();
            return Box::pin(async move { Ok(api.handle(req).await) });
        }
        let answer = match path {
            "/healthz" => Some(text(StatusCode::OK, "text/plain", "ok\n".into())),
            "/readyz" => {
                let (ready, why) = self.readiness.check();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Some(text(status, "text/plain", format!("{why}\n")))
            }
            "/metrics" => Some(match &self.metrics {
                Some(handle) => {
                    // Refreshes the adapter gauge at every scrape.
                    let _ = self.readiness.check();
                    handle.run_upkeep();
                    text(StatusCode::OK, "text/plain; version=0.0.4", handle.render())
                }
                None => text(StatusCode::NOT_FOUND, "text/plain", "metrics are off\n".into()),
            }),
            "/dashboard" => Some(match &self.dashboard {
                Some(dashboard) => dashboard.respond(&req, self.gate.client_ip(&req)),
                None => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
            }),
            _ if self.readiness.draining() && self.gate.is_handshake(&req) => Some(json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "code": 4, "message": "server draining" }),
            )),
            _ => None,
        };
        match answer {
            Some(res) => Box::pin(std::future::ready(Ok(res))),
            None => Box::pin(self.gate.call(req)),
        }
    }
}
