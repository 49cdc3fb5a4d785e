//! Endpoints for operators and load balancers: liveness (`/health`), readiness
//! (`/ready`), Prometheus metrics (`/metrics`) and the OpenAPI document
//! (`/openapi.json`). None needs a token: they reveal no key or instance data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyhold_crypto::SealState;
use serde_json::json;

use super::AppState;

/// The longest `/ready` waits for the store: a probe must answer fast, and a
/// store slower than this is not ready to serve requests anyway.
pub(crate) const READY_STORE_BOUND: Duration = Duration::from_secs(1);

pub(crate) async fn health() -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

/// 200 when the store answers a query within [`READY_STORE_BOUND`] and the
/// crypto unit holds its master key; otherwise 503 naming what is not ready.
pub(crate) async fn ready(State(st): State<AppState>) -> Response {
    let unit_state = st.0.svc.unit().seal_state();
    let store = store_check(&st).await;
    let mut not_ready = Vec::new();
    if store != "ok" {
        not_ready.push("store");
    }
    if unit_state != SealState::Unsealed {
        not_ready.push("crypto_unit");
    }
    // A node whose audit trail cannot record calls refuses them (503): not ready.
    let audit = match st.0.audit.get() {
        None => "off",
        Some(a) if a.healthy() => "ok",
        Some(_) => "unavailable",
    };
    if audit == "unavailable" {
        not_ready.push("audit");
    }
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if not_ready.is_empty() { "ready" } else { "not_ready" },
        "not_ready": not_ready,
        "checks": {
            "store": store,
            "crypto_unit": {"kind": st.0.svc.unit().kind(), "state": unit_state.as_str()},
            "audit": audit,
        },
    });
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// "ok", or why the store is not ready. At most one probe query runs at a
/// time: while one hangs, later probes answer at once instead of piling up
/// blocked threads.
async fn store_check(st: &AppState) -> &'static str {
    let flag = st.0.ready_probe.clone();
    if flag.swap(true, Ordering::AcqRel) {
        return "an earlier check has not returned";
    }
    /// Clears the flag when the probe ends, however it ends.
    struct InFlight(Arc<AtomicBool>);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let in_flight = InFlight(flag);
    let store = st.0.svc.store().clone();
    let task = tokio::task::spawn_blocking(move || {
        let _in_flight = in_flight;
        store.ping()
    });
    match tokio::time::timeout(READY_STORE_BOUND, task).await {
        Ok(Ok(Ok(()))) => "ok",
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "readiness: the store failed its check");
            "failed"
        }
        Ok(Err(_)) => "failed",
        Err(_) => "did not answer in time",
    }
}

pub(crate) async fn metrics(State(st): State<AppState>) -> Response {
    let text = crate::metrics::render(st.0.svc.store().as_ref(), st.0.svc.unit().as_ref());
    (
        StatusCode::OK,
        [("content-type", crate::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

pub(crate) async fn openapi(State(st): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        super::openapi::document(st.0.plain_json).to_string(),
    )
        .into_response()
}
