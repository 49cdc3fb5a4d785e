//! The id of the request being served, for log lines. It is a tokio task-local
//! while the request's future runs, and is carried into the blocking work the
//! request hands off; the log writer adds it to every line written meanwhile
//! ([`current`]).
//!
//! A tracing span per request did the same at about 15 % of wrap throughput
//! (a registry entry, formatted fields and an enter/exit on every poll); setting
//! a task-local costs a few nanoseconds a poll.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Runs `fut` as the request `id`.
pub fn scope<F: Future>(id: Arc<str>, fut: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, fut)
}

/// Wraps blocking work handed off by the current request so it runs as that request.
pub fn carry<T>(f: impl FnOnce() -> T) -> impl FnOnce() -> T {
    let id = current();
    move || match id {
        Some(id) => REQUEST_ID.sync_scope(id, f),
        None => f(),
    }
}

/// The id of the request this code runs for, if any.
pub fn current() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_follows_the_request_into_blocking_work() {
        assert!(current().is_none());
        let seen = scope(Arc::from("r-1"), async {
            let inside = current();
            let handed_off = tokio::task::spawn_blocking(carry(current))
                .await
                .ok()
                .flatten();
            (inside, handed_off)
        })
        .await;
        assert_eq!(seen.0.as_deref(), Some("r-1"));
        assert_eq!(seen.1.as_deref(), Some("r-1"));
        assert!(current().is_none());
    }
}
