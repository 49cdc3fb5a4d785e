//! The HTTP API: Key Protect v2 routes plus the IAM token endpoints. Handlers
//! parse, call the service on the blocking pool, and render; every failure is
//! a Key Protect error envelope.

mod actions;
pub mod audit;
mod body;
mod ceremony;
mod ctx;
mod error;
mod iam;
mod identities;
mod instances;
mod keys;
mod openapi;
mod ops;
mod policies;
mod render;
mod resources;
mod routes;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use keyhold_core::{Error, Reason};
use serde_json::Value;

pub use ctx::{Caller, Ctx};

/// Which listener a request arrived on; `allowedNetwork: private-only`
/// instances answer only on the private one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Public,
    Private,
}
pub use error::{ApiError, OpContext};

pub(crate) type ApiResult = std::result::Result<Response, ApiError>;

use crate::auth::token::TokenService;
use crate::auth::Authorizer;
use crate::service::{Directory, InstancePolicies, Service};

#[derive(Clone)]
pub struct AppState(pub Arc<AppInner>);

pub struct AppInner {
    pub svc: Arc<Service>,
    pub tokens: Arc<TokenService>,
    pub authz: Arc<dyn Authorizer>,
    pub plain_json: bool,
    pub body_limit: usize,
    pub request_timeout: Duration,
    /// How long a request waits for the store before answering 503.
    pub store_timeout: Duration,
    /// The port this node serves on, reported by `allowed_ip_port`.
    pub port: u16,
    /// Host names (host[:port]) of this deployment's public and private
    /// endpoints, as connection info reports them.
    pub public_host: String,
    pub private_host: String,
    /// The master-key ceremony, when the master key comes from one (`--master-key ceremony`).
    pub ceremony: OnceLock<Arc<crate::ceremony::Ceremony>>,
    /// Set while a `/ready` store probe runs (at most one at a time).
    ready_probe: Arc<AtomicBool>,
    /// The audit trail; unset with `serve --audit off`.
    pub audit: OnceLock<Arc<crate::audit::Audit>>,
}

impl AppState {
    pub fn new(
        svc: Arc<Service>,
        tokens: Arc<TokenService>,
        authz: Arc<dyn Authorizer>,
        cfg: &crate::config::ServerConfig,
        port: u16,
    ) -> Self {
        AppState(Arc::new(AppInner {
            svc,
            tokens,
            authz,
            plain_json: cfg.plain_json,
            body_limit: cfg.body_limit,
            request_timeout: cfg.request_timeout,
            store_timeout: cfg.store_timeout,
            port,
            public_host: cfg
                .public_host
                .clone()
                .unwrap_or_else(|| format!("127.0.0.1:{port}")),
            private_host: cfg
                .private_host
                .clone()
                .or_else(|| cfg.public_host.clone())
                .unwrap_or_else(|| format!("127.0.0.1:{port}")),
            ceremony: OnceLock::new(),
            ready_probe: Arc::new(AtomicBool::new(false)),
            audit: OnceLock::new(),
        }))
    }

    /// Serves the ceremony's endpoints from this node.
    pub fn with_ceremony(self, c: Arc<crate::ceremony::Ceremony>) -> Self {
        let _ = self.0.ceremony.set(c);
        self
    }

    /// Records every call in the audit trail `a`.
    pub fn with_audit(self, a: Arc<crate::audit::Audit>) -> Self {
        let _ = self.0.audit.set(a);
        self
    }

    /// The instance's policies: from the node's cache without blocking, else loaded.
    pub(crate) async fn instance_policies(
        &self,
        instance_id: &str,
    ) -> Result<Arc<InstancePolicies>, Error> {
        if let Some(p) = self.0.svc.cached_instance_policies(instance_id) {
            return Ok(p);
        }
        let id = instance_id.to_string();
        blocking(self, move |svc| svc.instance_policies(&id)).await
    }

    /// The directory of instances and authorizations: from the node's memory
    /// without blocking when current, else loaded.
    pub(crate) async fn directory(&self) -> Result<Arc<Directory>, Error> {
        if let Some(d) = self.0.svc.cached_directory() {
            return Ok(d);
        }
        blocking(self, |svc| svc.directory()).await
    }
}

/// Runs service work on the blocking pool (SQLite and HSM calls block).
pub(crate) async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&Service) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    blocking_within(st, st.0.store_timeout, f).await
}

/// [`blocking`] with its own deadline, for work that is slow by nature (RSA key generation).
/// Past the deadline the caller gets 503 at once; the work itself finishes in the
/// background (a store that hangs must not hang the request).
pub(crate) async fn blocking_within<T: Send + 'static>(
    st: &AppState,
    deadline: Duration,
    f: impl FnOnce(&Service) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let svc = st.0.svc.clone();
    // The work runs as the request, so its log lines carry the request id.
    let work = crate::request_id::carry(move || f(&svc));
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "service task failed");
            Err(Error::internal())
        }
        Err(_) => {
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "the store did not answer in time"
            );
            Err(Error::unavailable(
                "The key store did not answer in time; retry later",
            ))
        }
    }
}

/// Which Content-Type a JSON response carries (keyprotect-api.md §4.1).
#[derive(Clone, Copy)]
pub(crate) enum Body {
    Json,
    KeyVendor,
    KeyActionVendor,
}

pub(crate) fn reply(st: &AppState, status: StatusCode, kind: Body, value: &Value) -> Response {
    let ctype = match (st.0.plain_json, kind) {
        (true, _) | (_, Body::Json) => "application/json",
        (_, Body::KeyVendor) => "application/vnd.ibm.kms.key+json",
        (_, Body::KeyActionVendor) => "application/vnd.ibm.kms.key_action+json",
    };
    let mut resp = (status, value.to_string()).into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static(ctype));
    resp
}

pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Turns a handler result into a response, naming the operation in errors.
pub(crate) async fn run(
    op: &'static str,
    fut: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    match fut.await {
        Ok(r) => r,
        Err(mut e) => {
            if e.op == error::DEFAULT_OP {
                e.op = op;
            }
            e.into_response()
        }
    }
}

/// `Prefer: return=representation`?
pub(crate) fn wants_representation(headers: &HeaderMap) -> bool {
    headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("return=representation"))
}

async fn not_found() -> Response {
    ApiError {
        error: Error::new(Reason::NotFound, "No such endpoint"),
        op: "The request could not be routed",
    }
    .into_response()
}

/// Request id (also on every log line written while serving it: see
/// request_id.rs), timeout, the audit event, metrics and one structured log
/// line per request.
async fn envelope(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("correlation-id")
        .or_else(|| req.headers().get("x-correlation-id"))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let has_body = req.headers().contains_key("transfer-encoding")
        || req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let (route_slot, route) =
        crate::metrics::route(req.extensions().get::<MatchedPath>().map(|p| p.as_str()));
    let scoped_id: Arc<str> = Arc::from(request_id.as_str());
    // A call the audit trail cannot record now is refused before it runs, but still
    // answered like any other error below (connection handling, request id, log line).
    let (audit, mut resp) = match audit::begin(&st, &req, route) {
        Err(audit::SinkDown) => (None, audit::unavailable()),
        Ok(audit) => match crate::request_id::scope(
            scoped_id,
            audit::scope(
                audit.clone(),
                tokio::time::timeout(st.0.request_timeout, next.run(req)),
            ),
        )
        .await
        {
            Ok(r) => (audit, r),
            Err(_) => (
                audit,
                ApiError {
                    error: Error::new(
                        Reason::Unavailable,
                        "The request took too long and was abandoned",
                    ),
                    op: "The request could not be completed",
                }
                .into_response(),
            ),
        },
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && !resp.headers().contains_key("content-type")
    {
        resp = ApiError {
            error: Error::new(
                Reason::MethodNotAllowed,
                format!("{method} is not allowed here"),
            ),
            op: "The request could not be routed",
        }
        .into_response();
    }
    if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
        // The body may be unread (refused before parsing): say so rather than
        // leave the client to find a dropped keep-alive connection.
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
    }
    if let Some(a) = audit {
        resp = match audit::finish(&a, &request_id, route, resp) {
            audit::Finished::Ready(r) => r,
            audit::Finished::Commit(c) => c.wait().await,
        };
        audit::recycle(a);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("correlation-id", v.clone());
        resp.headers_mut().insert("x-request-id", v);
    }
    let elapsed = started.elapsed();
    crate::metrics::record_request(route_slot, &method, resp.status().as_u16(), elapsed);
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = route,
        status = resp.status().as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// The router for one listener, its requests tagged with its network.
pub fn router_on(st: AppState, network: Network) -> Router {
    router(st).layer(axum::Extension(network))
}

/// The API router, built from the route table (routes.rs).
pub fn router(st: AppState) -> Router {
    let table = routes::table();
    crate::metrics::init_routes(table.iter().map(|d| d.path));
    let mut api = Router::new();
    for d in table {
        api = api.route(d.path, d.handler);
    }
    api.fallback(not_found)
        .layer(middleware::from_fn_with_state(st.clone(), envelope))
        .with_state(st)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::Arc;

    use keyhold_crypto::SoftUnit;
    use keyhold_store::SqliteStore;
    use zeroize::Zeroizing;

    use super::{router as build, AppState};
    use crate::auth::token::TokenService;
    use crate::auth::AccountAuthorizer;
    use crate::config::ServerConfig;
    use crate::service::Service;

    /// A router over an in-memory store and a soft unit.
    pub fn router() -> axum::Router {
        let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
        let unit = Arc::new(SoftUnit::new(Zeroizing::new([7u8; 32]), 16));
        let cfg = ServerConfig::dev_defaults("unused".into());
        let svc = Arc::new(Service::new(store, unit, cfg.rules));
        let key = TokenService::generate_signing_key().expect("key");
        let tokens = Arc::new(TokenService::new(&key, 60).expect("tokens"));
        build(AppState::new(
            svc,
            tokens,
            Arc::new(AccountAuthorizer),
            &cfg,
            0,
        ))
    }
}
