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
mod keys;
mod policies;
mod render;
mod resources;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use keyhold_core::model::Instance;
use keyhold_core::{Error, Reason};
use serde_json::Value;

pub use ctx::Ctx;
pub use error::{ApiError, OpContext};

pub(crate) type ApiResult = std::result::Result<Response, ApiError>;

use crate::auth::token::TokenService;
use crate::auth::Authorizer;
use crate::service::{InstancePolicies, Service};

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
    /// Instances never change under a running node yet, so they are cached for good.
    instances: RwLock<HashMap<String, Arc<Instance>>>,
    /// The master-key ceremony, when the master key comes from one (`--master-key ceremony`).
    pub ceremony: OnceLock<Arc<crate::ceremony::Ceremony>>,
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
            instances: RwLock::new(HashMap::new()),
            ceremony: OnceLock::new(),
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

    pub(crate) async fn instance(&self, id: &str) -> Result<Option<Arc<Instance>>, Error> {
        if let Some(i) = self
            .0
            .instances
            .read()
            .ok()
            .and_then(|m| m.get(id).cloned())
        {
            return Ok(Some(i));
        }
        let id_owned = id.to_string();
        let found = blocking(self, move |svc| svc.instance(&id_owned)).await?;
        Ok(found.map(|i| {
            let i = Arc::new(i);
            if let Ok(mut m) = self.0.instances.write() {
                m.insert(i.id.clone(), i.clone());
            }
            i
        }))
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
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(move || f(&svc))).await {
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

async fn health() -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

/// Request id, timeout, the audit event and one structured log line per request.
async fn envelope(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
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
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // A call the audit trail cannot record now is refused before it runs, but still
    // answered like any other error below (connection handling, request id, log line).
    let (audit, mut resp) = match audit::begin(&st, &mut req, &route) {
        Err(audit::SinkDown) => (None, audit::unavailable()),
        Ok(audit) => match tokio::time::timeout(st.0.request_timeout, next.run(req)).await {
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
        resp = audit::finish(a, &request_id, route.clone(), resp).await;
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("correlation-id", v.clone());
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = %route,
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

pub fn router(st: AppState) -> Router {
    use axum::routing::delete;
    let api = Router::new()
        .route(
            "/api/v2/keys",
            get(keys::list).head(keys::count).post(keys::create),
        )
        .route(
            "/api/v2/keys_with_policy_overrides",
            post(keys::create_with_overrides),
        )
        .route(
            "/api/v2/keys/registrations",
            get(resources::list_all_registrations),
        )
        .route(
            "/api/v2/keys/{id}",
            get(keys::get)
                .post(actions::query_action)
                .patch(keys::patch)
                .delete(keys::delete),
        )
        .route("/api/v2/keys/{id}/metadata", get(keys::metadata))
        .route("/api/v2/keys/{id}/purge", delete(keys::purge))
        .route("/api/v2/keys/{id}/restore", post(keys::restore))
        .route("/api/v2/keys/{id}/versions", get(keys::versions))
        .route(
            "/api/v2/keys/{id}/actions/{action}",
            post(actions::path_action),
        )
        .route(
            "/api/v2/keys/{id}/policies",
            get(policies::get_key_policies).put(policies::put_key_policies),
        )
        .route(
            "/api/v2/keys/{id}/registrations",
            get(resources::list_key_registrations).post(resources::registration_action),
        )
        .route(
            "/api/v2/keys/{id}/registrations/{crn}",
            post(resources::create_registration)
                .patch(resources::update_registration)
                .put(resources::replace_registration)
                .delete(resources::delete_registration),
        )
        .route(
            "/api/v2/keys/{id}/aliases/{alias}",
            post(resources::create_alias).delete(resources::delete_alias),
        )
        .route(
            "/api/v2/instance/policies",
            get(policies::get_instance_policies).put(policies::put_instance_policies),
        )
        .route(
            "/api/v2/instance/allowed_ip_port",
            get(policies::allowed_ip_port),
        )
        .route(
            "/api/v2/import_token",
            get(resources::get_import_token).post(resources::create_import_token),
        )
        .route("/api/v2/key_rings", get(resources::list_rings))
        .route(
            "/api/v2/key_rings/{ring}",
            post(resources::create_ring).delete(resources::delete_ring),
        )
        .route("/identity/token", post(iam::token))
        .route("/oidc/token", post(iam::token))
        .route("/identity/keys", get(iam::jwks))
        .route("/ceremony/v1/status", get(ceremony::status))
        .route("/ceremony/v1/commands", post(ceremony::command))
        .route("/audit/v1/events", get(audit::events))
        .route("/audit/v1/export", get(audit::export))
        .route("/audit/v1/keys", get(audit::keys))
        .route("/health", get(health))
        .fallback(not_found);
    api.layer(middleware::from_fn_with_state(st.clone(), envelope))
        .with_state(st)
}
