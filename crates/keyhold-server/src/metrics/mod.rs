//! Prometheus metrics, kept in fixed arrays of atomics indexed by small enums
//! and by the route's position in the route table (api/routes.rs). Recording a
//! request is a few relaxed atomic adds: no label strings are built, no lock is
//! taken and nothing is allocated on the hot path. Strings are made only when
//! `/metrics` is scraped ([`render`]).
//!
//! Process-wide on purpose: the crypto unit, the caches and the store record
//! from deep inside the service, where no request state reaches, and a
//! Prometheus target is a process.
//!
//! Other parts feed gauges through small hooks, e.g. the audit queue calls
//! [`set_audit_queue_depth`].

mod unit;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::Method;
use keyhold_crypto::{CryptoError, CryptoUnit, SealState};
use keyhold_store::Store;

pub use unit::MeteredUnit;

/// The exposition format `/metrics` answers in.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The route label of requests no route matched (the fallback).
pub const UNMATCHED: &str = "unmatched";

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OTHER"];
/// Every status the server sends; anything else is counted as "other".
const STATUSES: [u16; 16] = [
    200, 201, 204, 400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 429, 500, 503,
];
/// Latency histogram bucket bounds in microseconds (`le` in seconds when rendered).
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        _ => 6,
    }
}

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len())
}

#[derive(Default)]
struct RouteCells {
    /// [method][status index; the last one is "other"].
    count: [[AtomicU64; STATUSES.len() + 1]; METHODS.len()],
    /// Non-cumulative bucket counts; the last one is +Inf.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

struct Http {
    /// Route templates; index 0 is [`UNMATCHED`].
    routes: Vec<&'static str>,
    index: HashMap<&'static str, usize>,
    cells: Vec<RouteCells>,
}

static HTTP: OnceLock<Http> = OnceLock::new();

/// Registers the route templates (once per process; the table is static).
pub(crate) fn init_routes(templates: impl IntoIterator<Item = &'static str>) {
    HTTP.get_or_init(|| {
        let mut routes = vec![UNMATCHED];
        for t in templates {
            if !routes.contains(&t) {
                routes.push(t);
            }
        }
        let index = routes.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        let cells = routes.iter().map(|_| RouteCells::default()).collect();
        Http {
            routes,
            index,
            cells,
        }
    });
}

/// The route's metric slot and its template (for log lines), from the matched path.
pub(crate) fn route(matched: Option<&str>) -> (usize, &'static str) {
    let Some(http) = HTTP.get() else {
        return (0, UNMATCHED);
    };
    match matched.and_then(|m| http.index.get(m)) {
        Some(i) => (*i, http.routes[*i]),
        None => (0, UNMATCHED),
    }
}

pub(crate) fn record_request(route: usize, method: &Method, status: u16, elapsed: Duration) {
    let Some(cells) = HTTP.get().and_then(|h| h.cells.get(route)) else {
        return;
    };
    cells.count[method_index(method)][status_index(status)].fetch_add(1, Ordering::Relaxed);
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let bucket = BUCKETS_US
        .iter()
        .position(|b| us <= *b)
        .unwrap_or(BUCKETS_US.len());
    cells.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    cells.sum_us.fetch_add(us, Ordering::Relaxed);
}

/// What a crypto unit was asked to do.
#[derive(Clone, Copy)]
pub(crate) enum CryptoOp {
    /// Wrap a DEK under a root key version (wrap, and the re-wrap in unwrap/rewrap).
    WrapDek,
    /// Unwrap a DEK (unwrap, rewrap).
    UnwrapDek,
    /// Generate key material inside the unit (create, rotate).
    GenerateKey,
    /// Wrap caller material under the master key (import).
    WrapMaterial,
    /// Unwrap a standard key's payload.
    UnwrapMaterial,
    GenerateImportKey,
    ImportDecrypt,
}

const CRYPTO_OPS: [&str; 7] = [
    "wrap_dek",
    "unwrap_dek",
    "generate_key",
    "wrap_material",
    "unwrap_material",
    "generate_import_key",
    "import_decrypt",
];
const OUTCOMES: [&str; 7] = [
    "ok",
    "unauthentic",
    "invalid_input",
    "integrity",
    "unit_failure",
    "sealed",
    "zeroized",
];
/// Unit kinds as [`CryptoUnit::kind`] names them; the last slot is any other.
const UNITS: [&str; 4] = ["soft", "soft-sealable", "pkcs11", "other"];

fn outcome_index(r: Result<(), &CryptoError>) -> usize {
    match r {
        Ok(()) => 0,
        Err(CryptoError::Unauthentic) => 1,
        Err(CryptoError::InvalidInput(_)) => 2,
        Err(CryptoError::BlobIntegrity) => 3,
        Err(CryptoError::Unit(_)) => 4,
        Err(CryptoError::Sealed) => 5,
        Err(CryptoError::Zeroized) => 6,
    }
}

pub(crate) fn unit_index(kind: &str) -> usize {
    UNITS
        .iter()
        .position(|u| *u == kind)
        .unwrap_or(UNITS.len() - 1)
}

type CryptoCells = [[[AtomicU64; OUTCOMES.len()]; CRYPTO_OPS.len()]; UNITS.len()];
static CRYPTO: OnceLock<CryptoCells> = OnceLock::new();

fn crypto_cells() -> &'static CryptoCells {
    CRYPTO.get_or_init(Default::default)
}

pub(crate) fn record_crypto(unit: usize, op: CryptoOp, outcome: Result<(), &CryptoError>) {
    if let Some(per_unit) = crypto_cells().get(unit) {
        per_unit[op as usize][outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }
}

/// The per-node caches whose hit ratios are exported.
#[derive(Clone, Copy)]
pub(crate) enum Cache {
    /// Verified access tokens (auth/token.rs).
    Token,
    /// Key records and versions for the crypto path (service/cache.rs).
    Key,
    /// Instance policies (service/cache.rs).
    InstancePolicy,
    /// Each account's IAM access policies (service/cache.rs).
    AccountAccess,
}

const CACHES: [&str; 4] = ["token", "key", "instance_policy", "account_access"];
static CACHE: [[AtomicU64; 2]; CACHES.len()] = [
    [AtomicU64::new(0), AtomicU64::new(0)],
    [AtomicU64::new(0), AtomicU64::new(0)],
    [AtomicU64::new(0), AtomicU64::new(0)],
    [AtomicU64::new(0), AtomicU64::new(0)],
];

pub(crate) fn record_cache(cache: Cache, hit: bool) {
    CACHE[cache as usize][usize::from(!hit)].fetch_add(1, Ordering::Relaxed);
}

/// Store failures as the service sees them (service::store_err).
#[derive(Clone, Copy)]
pub(crate) enum StoreFailure {
    Unavailable,
    Rejected,
    Corrupt,
    /// Compare-and-swap retries exhausted.
    Contention,
}

const STORE_FAILURES: [&str; 4] = ["unavailable", "rejected", "corrupt", "contention"];
static STORE_ERRORS: [AtomicU64; STORE_FAILURES.len()] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

pub(crate) fn record_store_error(kind: StoreFailure) {
    STORE_ERRORS[kind as usize].fetch_add(1, Ordering::Relaxed);
}

static AUDIT_QUEUE_DEPTH: AtomicU64 = AtomicU64::new(0);

/// The audit queue reports how many events wait to be written
/// (`keyhold_audit_queue_depth`). Call it whenever the depth changes; it is one store.
pub fn set_audit_queue_depth(n: u64) {
    AUDIT_QUEUE_DEPTH.store(n, Ordering::Relaxed);
}

fn seconds(us: u64) -> String {
    let s = us as f64 / 1e6;
    format!("{s}")
}

/// The exposition text (Prometheus text format 0.0.4). Gauges that describe the
/// node's parts (store pool, crypto unit state) are read now.
pub fn render(store: &dyn Store, unit: &dyn CryptoUnit) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let w = &mut out;
    if let Some(http) = HTTP.get() {
        let _ = writeln!(w, "# HELP keyhold_http_requests_total HTTP requests by route template, method and status.");
        let _ = writeln!(w, "# TYPE keyhold_http_requests_total counter");
        for (r, cells) in http.cells.iter().enumerate() {
            for (m, per_method) in cells.count.iter().enumerate() {
                for (s, c) in per_method.iter().enumerate() {
                    let n = c.load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    let status = STATUSES
                        .get(s)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "other".into());
                    let _ = writeln!(
                        w,
                        "keyhold_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                        http.routes[r], METHODS[m]
                    );
                }
            }
        }
        let _ = writeln!(w, "# HELP keyhold_http_request_duration_seconds Time to answer a request, by route template.");
        let _ = writeln!(w, "# TYPE keyhold_http_request_duration_seconds histogram");
        for (r, cells) in http.cells.iter().enumerate() {
            let counts: Vec<u64> = cells
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let route = http.routes[r];
            let mut cumulative = 0;
            for (i, n) in counts.iter().enumerate() {
                cumulative += n;
                let le = BUCKETS_US
                    .get(i)
                    .map(|b| seconds(*b))
                    .unwrap_or_else(|| "+Inf".into());
                let _ = writeln!(w, "keyhold_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(
                w,
                "keyhold_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                seconds(cells.sum_us.load(Ordering::Relaxed))
            );
            let _ = writeln!(
                w,
                "keyhold_http_request_duration_seconds_count{{route=\"{route}\"}} {cumulative}"
            );
        }
    }

    let _ = writeln!(w, "# HELP keyhold_crypto_operations_total Crypto unit operations by unit, operation and outcome.");
    let _ = writeln!(w, "# TYPE keyhold_crypto_operations_total counter");
    for (u, per_unit) in crypto_cells().iter().enumerate() {
        for (o, per_op) in per_unit.iter().enumerate() {
            for (x, c) in per_op.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        w,
                        "keyhold_crypto_operations_total{{unit=\"{}\",operation=\"{}\",outcome=\"{}\"}} {n}",
                        UNITS[u], CRYPTO_OPS[o], OUTCOMES[x]
                    );
                }
            }
        }
    }

    let _ = writeln!(
        w,
        "# HELP keyhold_crypto_unit_state 1 for the crypto unit's current seal state."
    );
    let _ = writeln!(w, "# TYPE keyhold_crypto_unit_state gauge");
    let state = unit.seal_state();
    for s in SealState::ALL {
        let _ = writeln!(
            w,
            "keyhold_crypto_unit_state{{unit=\"{}\",state=\"{}\"}} {}",
            unit.kind(),
            s.as_str(),
            u8::from(s == state)
        );
    }

    // Each family's samples must be one group in the exposition format.
    let cache_counts: Vec<(u64, u64)> = CACHE
        .iter()
        .map(|c| (c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed)))
        .collect();
    let _ = writeln!(
        w,
        "# HELP keyhold_cache_requests_total Lookups in the node's caches, by result."
    );
    let _ = writeln!(w, "# TYPE keyhold_cache_requests_total counter");
    for (name, (hit, miss)) in CACHES.iter().zip(&cache_counts) {
        let _ = writeln!(
            w,
            "keyhold_cache_requests_total{{cache=\"{name}\",result=\"hit\"}} {hit}"
        );
        let _ = writeln!(
            w,
            "keyhold_cache_requests_total{{cache=\"{name}\",result=\"miss\"}} {miss}"
        );
    }
    let _ = writeln!(
        w,
        "# HELP keyhold_cache_hit_ratio Hits / lookups since start (NaN before the first lookup)."
    );
    let _ = writeln!(w, "# TYPE keyhold_cache_hit_ratio gauge");
    for (name, (hit, miss)) in CACHES.iter().zip(&cache_counts) {
        let ratio = if hit + miss == 0 {
            "NaN".to_string()
        } else {
            format!("{}", *hit as f64 / (hit + miss) as f64)
        };
        let _ = writeln!(w, "keyhold_cache_hit_ratio{{cache=\"{name}\"}} {ratio}");
    }

    let pool = store.pool_status();
    let _ = writeln!(w, "# HELP keyhold_store_connections Store connections by state (max_idle: kept open at most while idle).");
    let _ = writeln!(w, "# TYPE keyhold_store_connections gauge");
    let _ = writeln!(
        w,
        "keyhold_store_connections{{state=\"in_use\"}} {}",
        pool.in_use
    );
    let _ = writeln!(
        w,
        "keyhold_store_connections{{state=\"idle\"}} {}",
        pool.idle
    );
    let _ = writeln!(
        w,
        "keyhold_store_connections{{state=\"max_idle\"}} {}",
        pool.max_idle
    );
    let _ = writeln!(
        w,
        "# HELP keyhold_store_errors_total Store failures seen by the service, by kind."
    );
    let _ = writeln!(w, "# TYPE keyhold_store_errors_total counter");
    for (i, kind) in STORE_FAILURES.iter().enumerate() {
        let _ = writeln!(
            w,
            "keyhold_store_errors_total{{kind=\"{kind}\"}} {}",
            STORE_ERRORS[i].load(Ordering::Relaxed)
        );
    }

    let _ = writeln!(
        w,
        "# HELP keyhold_audit_queue_depth Audit events waiting to be written."
    );
    let _ = writeln!(w, "# TYPE keyhold_audit_queue_depth gauge");
    let _ = writeln!(
        w,
        "keyhold_audit_queue_depth {}",
        AUDIT_QUEUE_DEPTH.load(Ordering::Relaxed)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_method_slots() {
        assert_eq!(status_index(200), 0);
        assert_eq!(status_index(503), STATUSES.len() - 1);
        assert_eq!(status_index(418), STATUSES.len());
        assert_eq!(method_index(&Method::OPTIONS), METHODS.len() - 1);
        assert_eq!(unit_index("pkcs11"), 2);
        assert_eq!(unit_index("hsm-x"), UNITS.len() - 1);
    }
}
