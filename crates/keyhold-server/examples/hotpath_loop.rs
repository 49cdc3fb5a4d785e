//! A fixed, in-process wrap/unwrap loop through the whole HTTP stack (router,
//! authentication, instance scoping, service, crypto unit), without sockets.
//! `scripts/callgrind-guard` counts its instructions against a committed
//! baseline, so a slowdown of the hot path fails the build on any machine.
//!
//! Usage: hotpath_loop ITERATIONS [AUDIT_DIR]
//!
//! With `AUDIT_DIR`, every call is also recorded in an audit trail (SQLite,
//! in that directory), so the trail's own instructions can be counted.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keyhold_core::access::Role;
use keyhold_core::iam::AnyRole;
use keyhold_core::model::Instance;
use keyhold_crypto::SoftUnit;
use keyhold_server::api::{router, AppState};
use keyhold_server::audit::{Audit, AuditConfig, Signer};
use keyhold_server::auth::token::TokenService;
use keyhold_server::auth::{PolicyAuthorizer, Principal, PrincipalKind};
use keyhold_server::config::ServerConfig;
use keyhold_server::service::bootstrap_policy;
use keyhold_server::service::{CreateKey, Service};
use keyhold_store::{SqliteStore, Store};
use tower::ServiceExt;
use zeroize::Zeroizing;

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let audit_dir = std::env::args().nth(2).map(std::path::PathBuf::from);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(iterations, audit_dir));
}

async fn run(iterations: usize, audit_dir: Option<std::path::PathBuf>) {
    let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
    let instance = Instance::kms(
        "hot-instance".into(),
        "hot".into(),
        "acct".into(),
        "local".into(),
        0,
    );
    store.put_instance(&instance).expect("instance");
    // The real authorizer: the caller's roles come from an IAM policy, cached per account.
    store
        .insert_iam_object(
            &bootstrap_policy(
                "acct",
                "hot-policy",
                "hot-user",
                &[AnyRole::Service(Role::Writer)],
            )
            .expect("policy"),
        )
        .expect("policy");
    let unit = Arc::new(SoftUnit::new(Zeroizing::new([7u8; 32]), 1024));
    let cfg = ServerConfig::dev_defaults("unused".into());
    let svc = Arc::new(Service::new(store, unit, cfg.rules));
    let tokens = Arc::new(
        TokenService::new(&TokenService::generate_signing_key().expect("key"), 3600)
            .expect("tokens"),
    );
    let principal = Principal {
        id: "hot-user".into(),
        kind: PrincipalKind::User,
        account_id: "acct".into(),
    };
    let token = tokens.issue(&principal).expect("token").access_token;
    let create = CreateKey {
        name: "hot-key".into(),
        description: None,
        tags: vec![],
        aliases: vec![],
        extractable: false,
        expiration: None,
        material: None,
        key_ring: None,
        overrides: None,
    };
    let key_id = svc
        .create_key(&instance.id, &principal, create)
        .expect("create")
        .0
        .id;
    let mut state = AppState::new(
        svc.clone(),
        tokens,
        Arc::new(PolicyAuthorizer::new(svc.clone())),
        &cfg,
        0,
    );
    let audit = audit_dir.map(|dir| {
        let store = keyhold_server::dev::open_audit_store(&dir, None, Duration::from_secs(2))
            .expect("audit store");
        let signer = Signer::new(&Signer::generate().expect("signing key")).expect("signer");
        Audit::start(store, signer, None, AuditConfig::default()).expect("audit")
    });
    if let Some(a) = &audit {
        state = state.with_audit(a.clone());
    }
    let app = router(state);

    let dek = STANDARD.encode([42u8; 32]);
    let wrap_body = format!(r#"{{"plaintext":"{dek}","aad":["hot-path"]}}"#);
    for _ in 0..iterations {
        let wrapped = call(
            &app,
            &token,
            &format!("/api/v2/keys/{key_id}/actions/wrap"),
            wrap_body.clone(),
        )
        .await;
        let ciphertext = wrapped["ciphertext"]
            .as_str()
            .expect("ciphertext")
            .to_string();
        let unwrap_body = format!(r#"{{"ciphertext":"{ciphertext}","aad":["hot-path"]}}"#);
        let unwrapped = call(
            &app,
            &token,
            &format!("/api/v2/keys/{key_id}/actions/unwrap"),
            unwrap_body,
        )
        .await;
        assert_eq!(unwrapped["plaintext"].as_str(), Some(dek.as_str()));
    }
    if let Some(a) = audit {
        a.drain(Duration::from_secs(60));
    }
}

async fn call(app: &axum::Router, token: &str, path: &str, body: String) -> serde_json::Value {
    let req = Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("bluemix-instance", "hot-instance")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    assert!(resp.status().is_success(), "status {}", resp.status());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json")
}
