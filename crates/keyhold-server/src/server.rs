//! Starting a node: bind, announce, serve (HTTP on loopback or HTTPS), and
//! run the background auto-purge.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

// Responses go out as header and body writes; without TCP_NODELAY, Nagle's
// algorithm and delayed ACKs would stall keep-alive clients for ~40 ms.
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;

use crate::api::{router_on, AppState, Network};
use crate::audit::{Audit, AuditConfig, Signer};
use crate::auth::s2s::S2sAuthorizer;
use crate::auth::PolicyAuthorizer;
use crate::config::ServerConfig;
use crate::dev::{self, DevInfo};
use crate::service::Service;

const AUTO_PURGE_EVERY: Duration = Duration::from_secs(60);

/// Serves the dev deployment until SIGINT/SIGTERM.
pub async fn serve_dev(cfg: ServerConfig) -> Result<(), String> {
    serve(cfg, true).await
}

/// Serves a dev deployment (`dev`) or one initialised by `keyhold init`.
pub async fn serve(mut cfg: ServerConfig, dev: bool) -> Result<(), String> {
    cfg.check_transport()?;
    // Opening the store blocks (and the PostgreSQL client runs its own runtime).
    let (dir, store, lifetime, entries, source, unit) = (
        cfg.data_dir.clone(),
        cfg.store.clone(),
        cfg.token_lifetime.as_secs() as i64,
        cfg.key_cache_entries,
        cfg.master_key,
        cfg.crypto_unit.clone(),
    );
    // The audit store gives up on a lock a little before the request-side timeout,
    // so a blocked sink is reported as failing rather than only as slow.
    let audit_wait = cfg.audit.then(|| cfg.audit_timeout / 2);
    let deployment = tokio::task::spawn_blocking(move || {
        dev::open(
            &dir,
            store.as_deref(),
            lifetime,
            entries,
            source,
            &unit,
            dev::Mode { dev, audit_wait },
        )
    })
    .await
    .map_err(|e| format!("start-up failed: {e}"))??;
    let listener = TcpListener::bind(cfg.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let private = match cfg.private_listen {
        Some(a) => {
            let l = TcpListener::bind(a).map_err(|e| format!("cannot listen on {a}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Some(l)
        }
        None => None,
    };
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", host_port(addr));
    // Connection info names the bound addresses unless told the hosts clients use.
    if cfg.public_host.is_none() {
        cfg.public_host = Some(host_port(addr));
    }
    if let (None, Some(l)) = (&cfg.private_host, &private) {
        cfg.private_host = Some(host_port(l.local_addr().map_err(|e| e.to_string())?));
    }
    let info = DevInfo {
        url: url.clone(),
        iam_url: url.clone(),
        ..deployment.info.clone()
    };

    let svc = Arc::new(Service::new(
        deployment.store.clone(),
        deployment.unit.clone(),
        cfg.rules,
    ));
    // Service instances act through their authorizations; everyone else
    // through the account's IAM access policies.
    let authz = Arc::new(S2sAuthorizer {
        inner: Arc::new(PolicyAuthorizer::new(svc.clone())),
        svc: svc.clone(),
    });
    let mut state = AppState::new(
        svc.clone(),
        deployment.tokens.clone(),
        authz,
        &cfg,
        addr.port(),
    );
    if let Some(c) = &deployment.ceremony {
        let cached = Arc::downgrade(&svc);
        c.set_forget_cached_keys(Box::new(move || {
            if let Some(svc) = cached.upgrade() {
                svc.forget_cached_keys();
            }
        }));
        state = state.with_ceremony(c.clone());
        tracing::warn!("master key from the key ceremony: the crypto unit is SEALED; key operations answer 503 CRYPTO_UNIT_SEALED_ERR until administrators load the key parts (keyhold ceremony unseal, or the first ceremony's activate)");
    }
    let audit = match &deployment.audit {
        Some(parts) => {
            let audit = Audit::start(
                parts.store.clone(),
                Signer::new(&parts.signing_key)?,
                audit_stream(cfg.audit_log.as_deref())?,
                AuditConfig {
                    timeout: cfg.audit_timeout,
                    checkpoint_every: cfg.audit_checkpoint_every,
                    ..AuditConfig::default()
                },
            )?;
            state = state.with_audit(audit.clone());
            Some(audit)
        }
        None => {
            tracing::warn!("the audit trail is OFF (--audit off): no call is recorded");
            None
        }
    };
    let app = router_on(state.clone(), Network::Public);
    let private_app = router_on(state.clone(), Network::Private);

    let tls = match &cfg.tls {
        Some(t) => Some(
            RustlsConfig::from_pem_file(&t.cert, &t.key)
                .await
                .map_err(|e| format!("cannot load TLS certificate/key: {e}"))?,
        ),
        None => None,
    };

    if let Some(account) = &deployment.account {
        // An initialised deployment announces where it listens; it holds no dev secrets.
        println!(
            "{}",
            serde_json::json!({"url": url, "iam_url": url, "account_id": account})
        );
        tracing::info!(%url, account_id = %account, data_dir = %cfg.data_dir.display(), master_key = cfg.master_key.as_str(), "keyhold serving");
    } else {
        let announcement = serde_json::to_string(&info).map_err(|e| e.to_string())?;
        dev::write_private(&dev::dev_json_path(&cfg.data_dir), announcement.as_bytes())?;
        println!("{announcement}");
        tracing::info!(%url, instance_id = %info.instance_id, data_dir = %cfg.data_dir.display(), master_key = cfg.master_key.as_str(), "keyhold serving (dev mode)");
    }

    tokio::spawn(async move {
        loop {
            tokio::time::sleep(AUTO_PURGE_EVERY).await;
            let svc = svc.clone();
            match tokio::task::spawn_blocking(move || svc.auto_purge()).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(
                    purged = n,
                    "auto-purged keys deleted beyond the retention period"
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "auto-purge failed"),
                _ => {}
            }
        }
    });

    let handle = Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let header_timeout = cfg.request_timeout;
    if let Some(l) = private {
        tracing::info!(private_host = %state.0.private_host, "private endpoint listening");
        let (tls, handle) = (tls.clone(), handle.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_on(l, private_app, tls, handle, header_timeout).await {
                tracing::error!(error = %e, "the private listener stopped");
            }
        });
    }
    let served = serve_on(listener, app, tls, handle, header_timeout).await;
    if let Some(audit) = audit {
        // Queued events of the last requests reach the store before the process exits.
        let _ = tokio::task::spawn_blocking(move || audit.drain(Duration::from_secs(3))).await;
    }
    served
}

/// `host:port` of a bound address, loopback for an unspecified one.
fn host_port(addr: std::net::SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    if host.contains(':') {
        format!("[{host}]:{}", addr.port())
    } else {
        format!("{host}:{}", addr.port())
    }
}

/// Serves `app` on one listener until the handle shuts it down.
async fn serve_on(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<RustlsConfig>,
    handle: Handle,
    header_timeout: Duration,
) -> Result<(), String> {
    let make = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match tls {
        Some(tls) => {
            let acceptor = RustlsAcceptor::new(tls)
                .handshake_timeout(header_timeout)
                .acceptor(NoDelayAcceptor::new());
            let mut server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle);
            server
                .http_builder()
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            server.serve(make).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)
                .acceptor(NoDelayAcceptor::new())
                .handle(handle);
            server
                .http_builder()
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            server.serve(make).await
        }
    }
    .map_err(|e| format!("server error: {e}"))
}

/// Where `--audit-log` sends each record: a file (appended, created mode 0600) or stdout.
fn audit_stream(
    path: Option<&std::path::Path>,
) -> Result<Option<Box<dyn std::io::Write + Send>>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    Ok(match path {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Some(p) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| format!("cannot open the audit log {}: {e}", p.display()))?,
        )),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
