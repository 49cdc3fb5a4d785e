//! A small HTTP/1.1 client for the ceremony endpoints: exchanges the API key
//! for a token, then GETs status and POSTs signed commands. Plain HTTP only
//! (the server allows it on loopback); one connection per request.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::CliError;

pub struct Client {
    authority: String,
    apikey: String,
    token: Option<String>,
    rt: tokio::runtime::Runtime,
}

/// A non-2xx answer, shown as the server's reason code and message.
fn refused(status: u16, body: &[u8]) -> CliError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let reason = &v["resources"][0]["reasons"][0];
    match (reason["code"].as_str(), reason["message"].as_str()) {
        (Some(code), Some(msg)) => CliError::Refused(format!("{status} {code}: {msg}")),
        _ => CliError::Refused(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )),
    }
}

impl Client {
    pub fn new(url: &str, apikey: &str) -> Result<Client, CliError> {
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "the ceremony CLI speaks plain HTTP to a loopback server; {url:?} is not an http:// URL"
                ))
            })?
            .trim_end_matches('/')
            .to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Io(format!("cannot start a runtime: {e}")))?;
        Ok(Client {
            authority,
            apikey: apikey.into(),
            token: None,
            rt,
        })
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), CliError> {
        let authority = self.authority.clone();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority.as_str())
            .header("accept", "application/json")
            .header("content-type", ctype);
        if let Some(t) = auth {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CliError::Io(e.to_string()))?;
        self.rt.block_on(async move {
            let unreachable =
                |e: String| CliError::Io(format!("cannot reach the server at {authority}: {e}"));
            let stream = TcpStream::connect(&authority)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        })
    }

    fn token(&mut self) -> Result<String, CliError> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let form = format!(
            "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={}",
            self.apikey
        );
        let (status, body) = self.send(
            Method::POST,
            "/identity/token",
            "application/x-www-form-urlencoded",
            None,
            form.into_bytes(),
        )?;
        if status != 200 {
            return Err(CliError::Refused(format!(
                "the API key was not accepted ({status})"
            )));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            CliError::Io("the token endpoint answered something else than JSON".into())
        })?;
        let t = v["access_token"]
            .as_str()
            .ok_or_else(|| CliError::Io("the token endpoint gave no access_token".into()))?
            .to_string();
        self.token = Some(t.clone());
        Ok(t)
    }

    pub fn status(&mut self) -> Result<Value, CliError> {
        let t = self.token()?;
        let (status, body) = self.send(
            Method::GET,
            "/ceremony/v1/status",
            "application/json",
            Some(&t),
            Vec::new(),
        )?;
        if status != 200 {
            return Err(refused(status, &body));
        }
        serde_json::from_slice(&body).map_err(|_| CliError::Io("status is not JSON".into()))
    }

    /// Posts a signed command; returns the HTTP status and the answer.
    pub fn submit(&mut self, body: &Value) -> Result<Value, CliError> {
        let t = self.token()?;
        let (status, resp) = self.send(
            Method::POST,
            "/ceremony/v1/commands",
            "application/json",
            Some(&t),
            body.to_string().into_bytes(),
        )?;
        if !(200..300).contains(&status) {
            return Err(refused(status, &resp));
        }
        serde_json::from_slice(&resp).map_err(|_| CliError::Io("the answer is not JSON".into()))
    }
}
