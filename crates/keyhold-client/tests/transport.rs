//! The client's transport rules against a stub server on loopback: the token is fetched
//! once, reused, and refreshed before it expires; 429/503 are retried (honouring
//! Retry-After), a 500 on a create is not; errors keep the reason code.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use keyhold_client::{Client, ClientConfig, RetryPolicy};
use serde_json::json;

#[derive(Default)]
struct Counts {
    tokens: AtomicU32,
    gets: AtomicU32,
    creates: AtomicU32,
    /// How many answers to fail before answering properly.
    fail_first: AtomicU32,
    fail_status: AtomicU32,
    token_life: AtomicU32,
}

async fn token(State(c): State<Arc<Counts>>) -> Response {
    let n = c.tokens.fetch_add(1, Ordering::SeqCst);
    axum::Json(
        json!({"access_token": format!("tok-{n}"), "token_type": "Bearer",
        "expires_in": c.token_life.load(Ordering::SeqCst)}),
    )
    .into_response()
}

fn key_list() -> Response {
    axum::Json(json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 0},
        "resources": []}))
    .into_response()
}

async fn keys(State(c): State<Arc<Counts>>, headers: HeaderMap) -> Response {
    c.gets.fetch_add(1, Ordering::SeqCst);
    assert!(headers.get("bluemix-instance").is_some());
    if c.fail_first.load(Ordering::SeqCst) > 0 {
        c.fail_first.fetch_sub(1, Ordering::SeqCst);
        let status = StatusCode::from_u16(c.fail_status.load(Ordering::SeqCst) as u16)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, [("retry-after", "0")], "busy").into_response();
    }
    // Echo which token was used, so the test can see refreshes.
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut r = key_list();
    r.headers_mut()
        .insert("x-seen-token", auth.parse().unwrap());
    r
}

async fn create(State(c): State<Arc<Counts>>) -> Response {
    c.creates.fetch_add(1, Ordering::SeqCst);
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},
        "resources": [{"errorMsg": "Internal Server Error: boom", "reasons": [{"code": "INTERNAL_SERVER_ERR", "message": "boom", "status": 500}]}]})))
    .into_response()
}

async fn stub(life: u32) -> (String, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    counts.token_life.store(life, Ordering::SeqCst);
    let app = Router::new()
        .route("/identity/token", post(token))
        .route("/api/v2/keys", get(keys).post(create))
        .with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), counts)
}

fn client(url: &str) -> Client {
    let mut cfg = ClientConfig::new(url, url, "inst", "apikey");
    cfg.retry = RetryPolicy {
        max_retries: 3,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(20),
    };
    Client::new(cfg).unwrap()
}

#[tokio::test]
async fn token_is_reused_then_refreshed_before_expiry() {
    let (url, c) = stub(1).await;
    let kh = client(&url);
    kh.list_keys(&Default::default()).await.unwrap();
    kh.list_keys(&Default::default()).await.unwrap();
    assert_eq!(
        c.tokens.load(Ordering::SeqCst),
        1,
        "one token for two calls"
    );
    // 80 % of a 1 s lifetime: after 0.85 s the client fetches a new token before using it.
    tokio::time::sleep(Duration::from_millis(850)).await;
    kh.list_keys(&Default::default()).await.unwrap();
    assert_eq!(
        c.tokens.load(Ordering::SeqCst),
        2,
        "refreshed before expiry"
    );
}

#[tokio::test]
async fn busy_answers_are_retried() {
    let (url, c) = stub(3600).await;
    let kh = client(&url);
    for status in [503, 429, 502] {
        c.gets.store(0, Ordering::SeqCst);
        c.fail_status.store(status, Ordering::SeqCst);
        c.fail_first.store(2, Ordering::SeqCst);
        kh.list_keys(&Default::default()).await.unwrap();
        assert_eq!(
            c.gets.load(Ordering::SeqCst),
            3,
            "status {status}: two failures, then success"
        );
    }
    // More failures than retries: the last error comes back.
    c.gets.store(0, Ordering::SeqCst);
    c.fail_status.store(503, Ordering::SeqCst);
    c.fail_first.store(10, Ordering::SeqCst);
    let e = kh.list_keys(&Default::default()).await.unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert_eq!(c.gets.load(Ordering::SeqCst), 4, "1 try + 3 retries");
}

#[tokio::test]
async fn a_failed_create_is_not_repeated_and_keeps_its_reason() {
    let (url, c) = stub(3600).await;
    let kh = client(&url);
    let e = kh
        .create_key(&keyhold_client::model::NewKey {
            name: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        c.creates.load(Ordering::SeqCst),
        1,
        "500 on a POST is not retried"
    );
    assert_eq!(e.code(), Some("INTERNAL_SERVER_ERR"));
    assert_eq!(e.status(), Some(500));
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    let kh = client("http://127.0.0.1:9");
    let e = kh.list_keys(&Default::default()).await.unwrap_err();
    assert!(
        matches!(e, keyhold_client::ClientError::Transport { .. }),
        "{e}"
    );
}
