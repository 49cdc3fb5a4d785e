//! The HTTP plumbing every call shares: the IAM token (fetched with the API key and
//! refreshed before it expires), the Key Protect headers, retries, and turning error
//! answers into [`ClientError`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::retry::{self, RetryPolicy};

/// Where the service is and who is calling.
#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL of the Key Protect API, e.g. `http://127.0.0.1:8080` (no `/api/v2`).
    pub url: String,
    /// Base URL of the IAM token service; `POST {iam_url}/identity/token`.
    pub iam_url: String,
    /// The key-management instance (`Bluemix-Instance`).
    pub instance_id: String,
    pub apikey: Zeroizing<String>,
    /// Sent as `X-Kms-Key-Ring` when set.
    pub key_ring: Option<String>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

impl std::fmt::Debug for ClientConfig {
    // The API key is left out on purpose: configs end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("iam_url", &self.iam_url)
            .field("instance_id", &self.instance_id)
            .field("key_ring", &self.key_ring)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    pub fn new(url: &str, iam_url: &str, instance_id: &str, apikey: &str) -> ClientConfig {
        ClientConfig {
            url: url.trim_end_matches('/').to_string(),
            iam_url: iam_url.trim_end_matches('/').to_string(),
            instance_id: instance_id.to_string(),
            apikey: Zeroizing::new(apikey.to_string()),
            key_ring: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

struct Token {
    access: Zeroizing<String>,
    /// When to fetch a new one: 80 % into the token's lifetime, as the IBM SDKs do, so a
    /// request never leaves with a token about to expire.
    refresh_at: Instant,
}

/// A typed async client for the Key Protect v2 API. Cheap to clone; clones share the
/// connection pool and the token.
#[derive(Clone)]
pub struct Client {
    pub(crate) cfg: Arc<ClientConfig>,
    pub(crate) http: reqwest::Client,
    token: Arc<Mutex<Option<Token>>>,
}

/// A raw answer: status, headers and body.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// One request, before it is sent (kept so it can be sent again on retry).
pub(crate) struct Call<'a> {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'a str, String)>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
    /// An account-level call (resource controller, authorizations): `path` is
    /// from the server root and no `Bluemix-Instance` is sent.
    pub account: bool,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, path: impl Into<String>) -> Call<'a> {
        Call {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            account: false,
        }
    }

    /// An account-level call to `path` (from the server root, e.g. `v2/resource_instances`).
    pub fn account(method: Method, path: impl Into<String>) -> Call<'a> {
        Call {
            account: true,
            ..Call::new(method, path)
        }
    }
    pub fn query(mut self, k: &'a str, v: impl ToString) -> Self {
        self.query.push((k, v.to_string()));
        self
    }
    pub fn query_opt(self, k: &'a str, v: Option<impl ToString>) -> Self {
        match v {
            Some(v) => self.query(k, v),
            None => self,
        }
    }
    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("keyhold-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            cfg: Arc::new(cfg),
            http,
            token: Arc::new(Mutex::new(None)),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// A bearer token, fetched or refreshed when needed.
    pub(crate) async fn bearer(&self, force: bool) -> Result<Zeroizing<String>> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            if !force && Instant::now() < t.refresh_at {
                return Ok(t.access.clone());
            }
        }
        let fresh = self.fetch_token().await?;
        let access = fresh.access.clone();
        *slot = Some(fresh);
        Ok(access)
    }

    async fn fetch_token(&self) -> Result<Token> {
        let url = format!("{}/identity/token", self.cfg.iam_url);
        let form = [
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", self.cfg.apikey.as_str()),
            ("response_type", "cloud_iam"),
        ];
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let sent = self
                .http
                .post(&url)
                .header(ACCEPT, "application/json")
                .form(&form)
                .send()
                .await;
            let err = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await.map_err(|e| transport(&url, &e))?;
                    if (200..300).contains(&status) {
                        let t: TokenResponse = serde_json::from_slice(&body)
                            .map_err(|e| ClientError::Decode(format!("token response: {e}")))?;
                        let life = Duration::from_secs(t.expires_in.unwrap_or(3600));
                        return Ok(Token {
                            access: Zeroizing::new(t.access_token),
                            refresh_at: started + life.mul_f64(0.8),
                        });
                    }
                    let err = ClientError::Auth {
                        status,
                        message: iam_message(&body),
                    };
                    if !RetryPolicy::retryable_status(status, true) {
                        return Err(err);
                    }
                    err
                }
                Err(e) => transport(&url, &e),
            };
            if attempt >= self.cfg.retry.max_retries {
                return Err(err);
            }
            tokio::time::sleep(self.cfg.retry.delay(attempt, None, retry::draw())).await;
            attempt += 1;
        }
    }

    /// Sends a call: adds the token and the instance, retries what may be retried, and
    /// turns a non-2xx answer into an error.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Answer> {
        // Key Protect paths are relative to /api/v2/; IAM paths are absolute
        // (`/v1/…`), and account-level calls (instances, authorizations) are
        // relative to the server's root.
        let url = if call.path.starts_with('/') {
            format!("{}{}", self.cfg.url, call.path)
        } else if call.account {
            format!("{}/{}", self.cfg.url, call.path)
        } else {
            format!("{}/api/v2/{}", self.cfg.url, call.path)
        };
        let idempotent = matches!(
            call.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        );
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            let token = self.bearer(false).await?;
            let mut req = self
                .http
                .request(call.method.clone(), &url)
                .header(AUTHORIZATION, format!("Bearer {}", token.as_str()))
                .header("Correlation-Id", uuid::Uuid::new_v4().to_string())
                .header(ACCEPT, "application/json");
            if !call.account {
                req = req.header("Bluemix-Instance", self.cfg.instance_id.as_str());
            }
            if let Some(ring) = &self.cfg.key_ring {
                req = req.header("X-Kms-Key-Ring", ring.as_str());
            }
            for (k, v) in &call.headers {
                req = req.header(*k, v.as_str());
            }
            if !call.query.is_empty() {
                req = req.query(&call.query);
            }
            if let Some(body) = &call.body {
                let bytes = serde_json::to_vec(body)
                    .map_err(|e| ClientError::Invalid(format!("request body: {e}")))?;
                req = req
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(bytes);
            }
            let (retry_after, err) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await.map_err(|e| transport(&url, &e))?;
                    if status.is_success() {
                        return Ok(Answer {
                            status: status.as_u16(),
                            headers,
                            body,
                        });
                    }
                    let err = ClientError::from_response(status.as_u16(), &body);
                    // A token the server no longer accepts (restarted server, revoked
                    // key): fetch a new one once before giving up.
                    if status == StatusCode::UNAUTHORIZED && !reauthed {
                        reauthed = true;
                        self.bearer(true).await?;
                        continue;
                    }
                    if !RetryPolicy::retryable_status(status.as_u16(), idempotent) {
                        return Err(err);
                    }
                    (retry_after(&headers), err)
                }
                Err(e) => {
                    // A request that may have reached the server is sent again only if
                    // repeating it is harmless; one that never connected always is.
                    if !(idempotent || e.is_connect()) {
                        return Err(transport(&url, &e));
                    }
                    (None, transport(&url, &e))
                }
            };
            if attempt >= self.cfg.retry.max_retries {
                return Err(err);
            }
            let wait = self.cfg.retry.delay(attempt, retry_after, retry::draw());
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Sends a call and decodes its JSON body.
    pub(crate) async fn send_json<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<T> {
        self.send(call).await?.json()
    }
}

fn transport(url: &str, e: &reqwest::Error) -> ClientError {
    // Name the base, never the query (which could in principle carry a search term).
    let base = url.split('?').next().unwrap_or(url);
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    ClientError::Transport {
        url: base.to_string(),
        message,
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn iam_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct IamError {
        #[serde(default)]
        error_message: Option<String>,
        #[serde(default)]
        error_code: Option<String>,
    }
    match serde_json::from_slice::<IamError>(body) {
        Ok(IamError {
            error_message: Some(m),
            error_code,
        }) => match error_code {
            Some(c) => format!("{m} ({c})"),
            None => m,
        },
        _ => match serde_json::from_slice::<Value>(body) {
            Ok(v) => v.to_string(),
            Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}
