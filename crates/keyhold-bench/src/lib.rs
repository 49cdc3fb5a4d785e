//! `keyhold bench`: a load generator for Keyhold, OpenBao's transit engine and a baseline
//! endpoint. N keep-alive HTTP/1.1 connections, one task each, repeat one request mix for a
//! fixed time or a fixed number of requests, closed loop or at a fixed total rate; the
//! result is throughput, latency percentiles and counts of every status and failure.

pub mod args;
pub mod client;
pub mod stats;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use tokio::time::Instant;

use args::Auth;
pub use args::{BenchArgs, Mix, Plan, Stop, Target};
use client::{Conn, TransportError};
use stats::{Recorder, Summary};

/// Runs `keyhold bench` with parsed arguments: 0 when every measured request succeeded,
/// 1 when some failed (they are reported), 2 when the arguments or the set-up failed.
pub fn main(args: BenchArgs) -> ExitCode {
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("keyhold bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyhold bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(run(plan.clone())) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyhold bench: {e}");
            return ExitCode::from(2);
        }
    };
    if plan.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    if report.summary.errors > 0 {
        eprintln!(
            "keyhold bench: {} of {} requests failed (see the status and transport error counts)",
            report.summary.errors, report.summary.requests
        );
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub plan: Plan,
    pub summary: Summary,
}

impl Report {
    pub fn to_json(&self) -> Value {
        let p = &self.plan;
        let s = &self.summary;
        json!({
            "target": p.target.name(),
            "mix": p.mix.name(),
            "connections": p.connections,
            "dek_bytes": p.dek_bytes,
            "keys": p.keys,
            "rate": p.rate,
            "warmup_s": p.warmup.as_secs_f64(),
            "elapsed_s": s.elapsed_s,
            "requests": s.requests,
            "ok": s.ok,
            "errors": s.errors,
            "throughput": s.throughput,
            "latency_ms": s.latency_ms,
            "status": s.status,
            "transport_errors": s.transport_errors,
        })
    }

    pub fn to_table(&self) -> String {
        let p = &self.plan;
        let s = &self.summary;
        let mut out = String::new();
        let load = match p.rate {
            Some(r) => format!("open loop at {r:.0} req/s"),
            None => "closed loop".to_string(),
        };
        out += &format!(
            "target       {} {}  ({} connections, {}-byte DEK, {} key(s), {})\n",
            p.target.name(),
            p.mix.name(),
            p.connections,
            p.dek_bytes,
            p.keys,
            load
        );
        out += &format!(
            "measured     {:.2} s after {:.1} s warm-up\n",
            s.elapsed_s,
            p.warmup.as_secs_f64()
        );
        out += &format!(
            "requests     {}  (ok {}, errors {})\n",
            s.requests, s.ok, s.errors
        );
        out += &format!("throughput   {:.1} ops/s\n", s.throughput);
        match &s.latency_ms {
            Some(l) => {
                out += &format!(
                    "latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (mean {:.3})\n",
                    l.p50, l.p90, l.p99, l.max, l.mean
                )
            }
            None => out += "latency ms   (no successful request)\n",
        }
        let statuses: Vec<String> = s.status.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        out += &format!(
            "status       {}\n",
            if statuses.is_empty() {
                "-".to_string()
            } else {
                statuses.join(", ")
            }
        );
        if !s.transport_errors.is_empty() {
            let errs: Vec<String> = s
                .transport_errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            out += &format!("no answer    {}\n", errs.join(", "));
        }
        out
    }
}

/// Requests prepared in set-up; workers only pick from them.
struct Workload {
    mix: Mix,
    headers: HeaderMap,
    /// Per root key: wrap path, unwrap path, unwrap body, get path.
    keys: Vec<KeyPaths>,
    wrap_body: Bytes,
    /// Fixed path and body for the mixes without per-key parts.
    fixed_path: String,
    fixed_body: Bytes,
    /// Create: key names are unique across runs.
    run_tag: String,
    /// Connections in the run: together they step through the keys in turn, so every
    /// key is used once before any is used twice.
    connections: usize,
}

struct KeyPaths {
    wrap: String,
    unwrap: String,
    unwrap_body: Bytes,
    get: String,
}

impl Workload {
    fn request(&self, worker: usize, i: u64) -> (Method, String, Bytes) {
        let k = || {
            let turn = (i as usize)
                .wrapping_mul(self.connections)
                .wrapping_add(worker);
            &self.keys[turn % self.keys.len()]
        };
        match self.mix {
            Mix::Wrap => (Method::POST, k().wrap.clone(), self.wrap_body.clone()),
            Mix::Unwrap => (Method::POST, k().unwrap.clone(), k().unwrap_body.clone()),
            Mix::WrapUnwrap if i & 1 == 0 => {
                (Method::POST, k().wrap.clone(), self.wrap_body.clone())
            }
            Mix::WrapUnwrap => (Method::POST, k().unwrap.clone(), k().unwrap_body.clone()),
            Mix::Get => (Method::GET, k().get.clone(), Bytes::new()),
            Mix::Create => (
                Method::POST,
                self.fixed_path.clone(),
                Bytes::from(create_body(&format!("{}-{worker}-{i}", self.run_tag))),
            ),
            Mix::List | Mix::Health => (Method::GET, self.fixed_path.clone(), Bytes::new()),
            Mix::Encrypt | Mix::Decrypt | Mix::Datakey => (
                Method::POST,
                self.fixed_path.clone(),
                self.fixed_body.clone(),
            ),
        }
    }
}

/// The first `plan.keys` active root keys the instance already has, in id order (the
/// list endpoint's default), for runs over a store seeded beforehand.
async fn existing_root_keys(
    conn: &mut Conn,
    plan: &Plan,
    headers: &HeaderMap,
) -> Result<Vec<String>, String> {
    const PAGE: usize = 5000;
    let mut ids = Vec::with_capacity(plan.keys);
    while ids.len() < plan.keys {
        let path = format!(
            "{}/api/v2/keys?extractable=false&state=1&limit={PAGE}&offset={}",
            plan.url.prefix,
            ids.len()
        );
        let v = must(
            conn,
            "list root keys",
            Method::GET,
            &path,
            headers,
            Bytes::new(),
        )
        .await?;
        let page = v
            .pointer("/resources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for key in &page {
            if ids.len() < plan.keys {
                ids.push(field(key, "/id", "list root keys")?.to_string());
            }
        }
        if page.len() < PAGE {
            break;
        }
    }
    if ids.len() < plan.keys {
        return Err(format!(
            "--existing-keys: the instance has {} active root keys, {} wanted",
            ids.len(),
            plan.keys
        ));
    }
    Ok(ids)
}

fn create_body(name: &str) -> String {
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false}]
    })
    .to_string()
}

/// Deterministic filler for the DEK: the content does not matter to the server.
fn dek(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    h
}

fn header(v: &str, what: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(v).map_err(|_| format!("{what} is not a valid header value"))
}

/// One set-up call that must succeed; returns the parsed JSON answer (Null for no body).
async fn must(
    conn: &mut Conn,
    what: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Value, String> {
    let (status, answer) = conn
        .send(method, path, headers, body)
        .await
        .map_err(|e| format!("set-up, {what}: {e}"))?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "set-up, {what}: HTTP {status}: {}",
            String::from_utf8_lossy(&answer)
        ));
    }
    if answer.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&answer).map_err(|e| format!("set-up, {what}: answer is not JSON: {e}"))
}

fn field<'a>(v: &'a Value, pointer: &str, what: &str) -> Result<&'a str, String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("set-up, {what}: no {pointer} in the answer: {v}"))
}

async fn setup(plan: &Plan) -> Result<Workload, String> {
    let prefix = &plan.url.prefix;
    let mut conn = Conn::new(&plan.url.authority);
    let b64 = base64::engine::general_purpose::STANDARD;
    let dek_b64 = b64.encode(dek(plan.dek_bytes));
    let run_tag = format!(
        "bench-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let mut wl = Workload {
        mix: plan.mix,
        headers: json_headers(),
        keys: Vec::new(),
        wrap_body: Bytes::new(),
        fixed_path: String::new(),
        fixed_body: Bytes::new(),
        run_tag,
        connections: plan.connections.max(1),
    };
    match plan.target {
        Target::Baseline => {
            wl.headers = HeaderMap::new();
            wl.fixed_path = format!("{prefix}/health");
        }
        Target::Keyhold => {
            let token = match plan.auth.as_ref().expect("keyhold plans carry auth") {
                Auth::Token(t) => t.clone(),
                Auth::ApiKey { iam_url, apikey } => {
                    let iam = args::Endpoint::parse(iam_url)?;
                    let mut iam_conn = Conn::new(&iam.authority);
                    let mut h = HeaderMap::new();
                    h.insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    );
                    h.insert(
                        http::header::ACCEPT,
                        HeaderValue::from_static("application/json"),
                    );
                    let body = format!(
                        "grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey={}",
                        form_encode(apikey)
                    );
                    let v = must(
                        &mut iam_conn,
                        "token",
                        Method::POST,
                        &format!("{}/identity/token", iam.prefix),
                        &h,
                        Bytes::from(body),
                    )
                    .await?;
                    field(&v, "/access_token", "token")?.to_string()
                }
            };
            wl.headers.insert(
                http::header::AUTHORIZATION,
                header(&format!("Bearer {token}"), "the token")?,
            );
            wl.headers.insert(
                "bluemix-instance",
                header(plan.instance.as_deref().unwrap_or_default(), "--instance")?,
            );
            wl.wrap_body = Bytes::from(json!({ "plaintext": dek_b64 }).to_string());
            match plan.mix {
                Mix::Create => wl.fixed_path = format!("{prefix}/api/v2/keys"),
                Mix::List => wl.fixed_path = format!("{prefix}/api/v2/keys?limit=20"),
                _ => {
                    let needs_ct = matches!(plan.mix, Mix::Unwrap | Mix::WrapUnwrap);
                    let ids = if plan.existing_keys {
                        existing_root_keys(&mut conn, plan, &wl.headers).await?
                    } else {
                        let mut ids = Vec::with_capacity(plan.keys);
                        for n in 0..plan.keys {
                            let v = must(
                                &mut conn,
                                "create root key",
                                Method::POST,
                                &format!("{prefix}/api/v2/keys"),
                                &wl.headers,
                                Bytes::from(create_body(&format!("{}-root-{n}", wl.run_tag))),
                            )
                            .await?;
                            ids.push(field(&v, "/resources/0/id", "create root key")?.to_string());
                        }
                        ids
                    };
                    for id in ids {
                        let wrap = format!("{prefix}/api/v2/keys/{id}/actions/wrap");
                        let unwrap = format!("{prefix}/api/v2/keys/{id}/actions/unwrap");
                        let unwrap_body = if needs_ct {
                            let v = must(
                                &mut conn,
                                "wrap",
                                Method::POST,
                                &wrap,
                                &wl.headers,
                                wl.wrap_body.clone(),
                            )
                            .await?;
                            let ct = field(&v, "/ciphertext", "wrap")?;
                            Bytes::from(json!({ "ciphertext": ct }).to_string())
                        } else {
                            Bytes::new()
                        };
                        wl.keys.push(KeyPaths {
                            wrap,
                            unwrap,
                            unwrap_body,
                            get: format!("{prefix}/api/v2/keys/{id}"),
                        });
                    }
                }
            }
        }
        Target::Openbao => {
            wl.headers.insert(
                "x-vault-token",
                header(plan.bao_token.as_deref().unwrap_or_default(), "--bao-token")?,
            );
            let key = &plan.bao_key;
            if plan.bao_create_key {
                must(
                    &mut conn,
                    "create transit key",
                    Method::POST,
                    &format!("{prefix}/v1/transit/keys/{key}"),
                    &wl.headers,
                    Bytes::from(r#"{"type":"aes256-gcm96"}"#),
                )
                .await?;
            }
            let encrypt_body = Bytes::from(json!({ "plaintext": dek_b64 }).to_string());
            let encrypt_path = format!("{prefix}/v1/transit/encrypt/{key}");
            match plan.mix {
                Mix::Encrypt => {
                    wl.fixed_path = encrypt_path;
                    wl.fixed_body = encrypt_body;
                }
                Mix::Decrypt => {
                    let v = must(
                        &mut conn,
                        "encrypt",
                        Method::POST,
                        &encrypt_path,
                        &wl.headers,
                        encrypt_body,
                    )
                    .await?;
                    let ct = field(&v, "/data/ciphertext", "encrypt")?;
                    wl.fixed_path = format!("{prefix}/v1/transit/decrypt/{key}");
                    wl.fixed_body = Bytes::from(json!({ "ciphertext": ct }).to_string());
                }
                _ => {
                    wl.fixed_path = format!("{prefix}/v1/transit/datakey/plaintext/{key}");
                    wl.fixed_body = Bytes::from(json!({ "bits": plan.dek_bytes * 8 }).to_string());
                }
            }
        }
    }
    // One probe of the measured request, so that a wrong set-up fails loudly here rather
    // than as a run full of errors.
    let probes = if wl.mix == Mix::WrapUnwrap { 2 } else { 1 };
    for i in 0..probes {
        let (method, path, body) = wl.request(0, i);
        let (status, answer) = conn
            .send(method, &path, &wl.headers, body)
            .await
            .map_err(|e| format!("set-up, probe request: {e}"))?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "set-up, probe request {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&answer)
            ));
        }
    }
    Ok(wl)
}

/// Shared timing of a run.
struct Clock {
    start: Instant,
    measure_start: Instant,
    /// Duration runs only.
    end: Option<Instant>,
}

#[derive(Default)]
struct Progress {
    done: AtomicU64,
    failed: AtomicU64,
    issued: AtomicU64,
}

async fn worker(
    id: usize,
    plan: Arc<Plan>,
    wl: Arc<Workload>,
    clock: Arc<Clock>,
    progress: Arc<Progress>,
) -> (Recorder, Option<Instant>) {
    let mut conn = Conn::new(&plan.url.authority);
    let mut rec = Recorder::new();
    let mut last_done = None;
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(plan.connections as f64 / r));
    // Connections take their turns evenly spread over one interval.
    let mut next_due = clock.start
        + interval
            .map(|iv| iv.mul_f64(id as f64 / plan.connections as f64))
            .unwrap_or_default();
    let mut prev_completion = clock.start;
    let mut i: u64 = 0;
    loop {
        let (due, started) = match interval {
            Some(iv) => {
                let due = next_due;
                next_due += iv;
                if let Some(end) = clock.end {
                    if due >= end {
                        break;
                    }
                }
                wait_until(due).await;
                // A request held up by the previous answer is charged from when it was due
                // (the server's queueing); one held up only by the timer, from when it left.
                let started = if prev_completion > due {
                    due
                } else {
                    Instant::now()
                };
                (due, started)
            }
            None => {
                let now = Instant::now();
                (now, now)
            }
        };
        if let Some(end) = clock.end {
            if due >= end {
                break;
            }
        }
        let measured = due >= clock.measure_start;
        if measured {
            if let Stop::Requests(n) = plan.stop {
                if progress.issued.fetch_add(1, Ordering::Relaxed) >= n {
                    break;
                }
            }
        }
        let (method, path, body) = wl.request(id, i);
        i += 1;
        let result = conn.send(method, &path, &wl.headers, body).await;
        let now = Instant::now();
        prev_completion = now;
        let ok = match &result {
            Ok((status, _)) => (200..300).contains(status),
            Err(_) => false,
        };
        if measured {
            match &result {
                Ok((status, _)) => rec.record_status(*status, now - started),
                Err(e) => rec.record_transport_error(e.kind()),
            }
            last_done = Some(now);
            progress.done.fetch_add(1, Ordering::Relaxed);
            if !ok {
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err(TransportError::Connect(_)) = result {
            // Do not spin on a server that refuses connections.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    (rec, last_done)
}

/// Tokio's timer fires on millisecond ticks, which would bunch an open-loop schedule
/// into bursts (every connection due within the same millisecond leaves at once) and
/// charge the timer's lateness to the server. So sleep to just short of `due` and then
/// yield until it arrives: the generator has its own core, and the sends stay spread
/// as scheduled to within a few microseconds.
async fn wait_until(due: Instant) {
    const TIMER_SLACK: Duration = Duration::from_millis(2);
    if let Some(early) = due.checked_sub(TIMER_SLACK) {
        if early > Instant::now() {
            tokio::time::sleep_until(early).await;
        }
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

fn progress_bar(plan: &Plan) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if plan.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match plan.stop {
        Stop::After(d) => {
            let total = (plan.warmup + d).as_millis() as u64;
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template("{spinner} [{bar:40}] {elapsed:>4} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            )
        }
        Stop::Requests(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

/// Sets up, warms up, measures.
pub async fn run(plan: Plan) -> Result<Report, String> {
    let wl = Arc::new(setup(&plan).await?);
    let plan = Arc::new(plan);
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let clock = Arc::new(Clock {
        start,
        measure_start,
        end: match plan.stop {
            Stop::After(d) => Some(measure_start + d),
            Stop::Requests(_) => None,
        },
    });
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(&plan);
    let stop_ticker = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (bar, plan, progress, stop_ticker) = (
            bar.clone(),
            plan.clone(),
            progress.clone(),
            stop_ticker.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !stop_ticker.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = Instant::now();
                let done = progress.done.load(Ordering::Relaxed);
                let failed = progress.failed.load(Ordering::Relaxed);
                if now < measure_start {
                    bar.set_message("warming up");
                } else {
                    let secs = (now - measure_start).as_secs_f64().max(1e-3);
                    bar.set_message(format!(
                        "{done} requests, {:.0}/s, {failed} errors",
                        done as f64 / secs
                    ));
                }
                match plan.stop {
                    Stop::After(_) => bar.set_position((now - start).as_millis() as u64),
                    Stop::Requests(_) => bar.set_position(done),
                }
            }
        })
    };
    let tasks: Vec<_> = (0..plan.connections)
        .map(|id| {
            tokio::spawn(worker(
                id,
                plan.clone(),
                wl.clone(),
                clock.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let mut total = Recorder::new();
    let mut last: Option<Instant> = None;
    for t in tasks {
        let (rec, done) = t
            .await
            .map_err(|e| format!("a connection task failed: {e}"))?;
        total.merge(&rec);
        last = last.max(done);
    }
    stop_ticker.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    bar.finish_and_clear();
    let elapsed = last
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(measure_start);
    Ok(Report {
        plan: (*plan).clone(),
        summary: total.summarize(elapsed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("abc-_.~XYZ09"), "abc-_.~XYZ09");
        assert_eq!(form_encode("a b+c/="), "a%20b%2Bc%2F%3D");
    }

    #[test]
    fn dek_has_the_asked_length_and_is_not_constant() {
        let d = dek(32);
        assert_eq!(d.len(), 32);
        assert!(d.iter().any(|b| *b != d[0]));
    }

    #[test]
    fn create_body_is_a_key_protect_collection() {
        let v: Value = serde_json::from_str(&create_body("k1")).unwrap();
        assert_eq!(v["metadata"]["collectionTotal"], 1);
        assert_eq!(v["resources"][0]["name"], "k1");
        assert_eq!(v["resources"][0]["extractable"], false);
    }
}

/// Runs against a minimal hand-written HTTP/1.1 server on loopback.
#[cfg(test)]
mod loopback_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    struct Server {
        url: String,
        requests: Arc<AtomicUsize>,
        connections: Arc<AtomicUsize>,
    }

    /// Answers every request with 200, except every `fail_every`-th (counting from 1)
    /// with 500. Keeps connections alive.
    async fn server(fail_every: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (req, conns) = (requests.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                conns.fetch_add(1, Ordering::SeqCst);
                let req = req.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        // GET requests only: no body to skip.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let k = req.fetch_add(1, Ordering::SeqCst) + 1;
                            let status = if k % fail_every == 0 {
                                "500 Internal Server Error"
                            } else {
                                "200 OK"
                            };
                            let answer =
                                format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
                            if sock.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Server {
            url,
            requests,
            connections,
        }
    }

    fn baseline_plan(url: &str, extra: &[&str]) -> Plan {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let mut argv = vec!["bench", "--target", "baseline", "--url", url, "--quiet"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args.plan().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_every_answer_and_keeps_connections_alive() {
        let s = server(5).await;
        let plan = baseline_plan(
            &s.url,
            &["--requests", "50", "--warmup", "0s", "--connections", "2"],
        );
        let report = run(plan).await.unwrap();
        let sum = &report.summary;
        // The set-up probe was request 1; the measured ones are 2..=51, of which
        // 5, 10, .., 50 failed.
        assert_eq!(s.requests.load(Ordering::SeqCst), 51);
        assert_eq!(sum.requests, 50);
        assert_eq!(sum.ok, 40);
        assert_eq!(sum.errors, 10);
        assert_eq!(sum.status.get("500"), Some(&10));
        assert_eq!(sum.status.get("200"), Some(&40));
        assert!(sum.latency_ms.is_some());
        // One connection for set-up, at most one per task (a task that finds the request
        // budget spent before it starts never connects): all kept alive.
        let conns = s.connections.load(Ordering::SeqCst);
        assert!((2..=3).contains(&conns), "{conns} connections");
        let json = report.to_json();
        assert_eq!(json["errors"], 10);
        assert_eq!(json["mix"], "health");
        assert!(report.to_table().contains("500: 10"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_sends_the_asked_rate() {
        let s = server(usize::MAX).await;
        let plan = baseline_plan(
            &s.url,
            &[
                "--rate",
                "200",
                "--duration",
                "500ms",
                "--warmup",
                "0s",
                "-c",
                "4",
            ],
        );
        let report = run(plan).await.unwrap();
        // 200/s for 0.5 s: 100 due slots, each sent even if late.
        let n = report.summary.requests;
        assert!((99..=101).contains(&n), "{n} requests");
        assert_eq!(report.summary.errors, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_server_is_a_set_up_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let plan = baseline_plan(&url, &["--requests", "5"]);
        let err = run(plan).await.unwrap_err();
        assert!(err.contains("connect"), "{err}");
    }
}
