//! A small HTTP/1.1 client on hyper: one kept-alive connection per user (the long-poll
//! reader and the writer each have their own, as a browser would).

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::ClientOptions;

/// A response read in full.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// One HTTP/1.1 connection to the server, opened on first use and again when the server
/// closed it between requests.
#[derive(Debug)]
pub(crate) struct HttpConn {
    authority: String,
    headers: Vec<(String, String)>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpConn {
    pub(crate) fn new(options: &ClientOptions) -> Self {
        Self {
            authority: options.endpoint.authority.clone(),
            headers: options.headers.clone(),
            sender: None,
        }
    }

    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if let Some(sender) = &mut self.sender
            && !sender.is_closed()
            && sender.ready().await.is_ok()
        {
            // Reborrow outside the `if let` to satisfy the borrow checker.
            return self.sender.as_mut().ok_or_else(|| "connection lost".to_owned());
        }
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("connect {}: {e}", self.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// Sends one request and reads the whole response.
    pub(crate) async fn request(
        &mut self,
        method: Method,
        target: &str,
        body: Option<Bytes>,
    ) -> Result<Response, String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "*/*");
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "text/plain;charset=UTF-8");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("bad request: {e}"))?;
        let sender = self.ready_sender().await?;
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(format!("http: {e}"));
            }
        };
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.sender = None;
                return Err(format!("http body: {e}"));
            }
        };
        Ok(Response { status, body })
    }
}
