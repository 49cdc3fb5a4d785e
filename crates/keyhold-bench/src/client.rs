//! One keep-alive HTTP/1.1 connection (hyper's low-level client), reconnecting when the
//! server closes it.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request got no answer.
#[derive(Debug)]
pub enum TransportError {
    Connect(String),
    Send(String),
    Body(String),
}

impl TransportError {
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Connect(_) => "connect",
            TransportError::Send(_) => "send",
            TransportError::Body(_) => "body",
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Connect(e) => write!(f, "connect: {e}"),
            TransportError::Send(e) => write!(f, "send: {e}"),
            TransportError::Body(e) => write!(f, "reading the body: {e}"),
        }
    }
}

/// A connection to one server; requests go one at a time.
pub struct Conn {
    authority: String,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(authority: &str) -> Conn {
        Conn {
            authority: authority.to_string(),
            host: HeaderValue::from_str(authority).unwrap_or(HeaderValue::from_static("localhost")),
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, TransportError> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| TransportError::Connect(format!("{}: {e}", self.authority)))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| TransportError::Connect(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just set"))
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(u16, Bytes), TransportError> {
        let host = self.host.clone();
        let sender = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(body))
            .map_err(|e| TransportError::Send(e.to_string()))?;
        *req.headers_mut() = headers.clone();
        req.headers_mut().insert(http::header::HOST, host);
        let result = async {
            sender
                .ready()
                .await
                .map_err(|e| TransportError::Send(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| TransportError::Send(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| TransportError::Body(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        if result.is_err() {
            // Start over on a fresh connection next time.
            self.sender = None;
        }
        result
    }
}
