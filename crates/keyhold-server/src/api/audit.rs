//! The audit trail's HTTP side: the per-request [`AuditSlot`] that the `Ctx`
//! extractor and a few handlers fill in, the two halves of the audit step that
//! `envelope` runs around every handler ([`begin`], [`finish`]), and the read
//! routes `/audit/v1/events`, `/audit/v1/export` and `/audit/v1/keys`.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body as AxumBody, Bytes};
use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::header::USER_AGENT;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyhold_core::{Error, Reason};
use keyhold_store::{AuditQuery, AuditRow};
use serde_json::json;

use super::error::{ApiError, ReasonCode};
use super::keys::query_pairs;
use super::{reply, run, AppState, Body};
use crate::audit::actions::{audited, classify};
use crate::audit::record::{self, Redacted};
use crate::audit::{Audit, Durability, EventBody, Receipt};
use crate::auth::Principal;

/// What the handler learns about the caller and the target. An empty string is
/// "not known"; the strings keep their capacity when the slot is reused.
#[derive(Default)]
struct SlotData {
    principal_id: String,
    principal_kind: &'static str,
    account_id: String,
    instance_id: String,
    key_version: String,
    /// The key the call created (its id is not in the path).
    key_id: String,
    /// Replaces the table's action name once the handler knows more (ceremony verbs).
    action: Option<String>,
}

impl SlotData {
    fn clear(&mut self) {
        self.principal_id.clear();
        self.principal_kind = "";
        self.account_id.clear();
        self.instance_id.clear();
        self.key_version.clear();
        self.key_id.clear();
        self.action = None;
    }
}

/// The request's audit step: what [`begin`] learnt from the request, and what
/// the handler learns about the caller and target, in one allocation; the
/// handler reaches it through [`current`] and [`note`].
/// Finished slots are kept per thread and reused ([`recycle`]), so at full load
/// a request's slot and the ids copied into it cost no allocation.
#[derive(Clone)]
pub struct AuditSlot(Arc<Slot>);

struct Slot {
    /// `None` only while the slot waits in the spares.
    begun: Option<Begun>,
    data: Mutex<SlotData>,
}

/// At most this many finished slots are kept per thread: about the requests
/// one worker has in flight at once.
const SPARES_MAX: usize = 256;

thread_local! {
    static SPARES: std::cell::RefCell<Vec<Arc<Slot>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A slot for a request that has just begun: a spare one when the thread has it.
fn new_slot(begun: Begun) -> AuditSlot {
    let spare = SPARES.with(|s| s.borrow_mut().pop());
    let slot = match spare {
        Some(mut slot) => match Arc::get_mut(&mut slot) {
            Some(s) => {
                s.begun = Some(begun);
                slot
            }
            None => fresh_slot(begun),
        },
        None => fresh_slot(begun),
    };
    AuditSlot(slot)
}

fn fresh_slot(begun: Begun) -> Arc<Slot> {
    Arc::new(Slot {
        begun: Some(begun),
        data: Mutex::new(SlotData::default()),
    })
}

/// Keeps a finished request's slot for the thread's next request, when nothing
/// else holds it (a handler still running after its request timed out may).
pub(crate) fn recycle(slot: AuditSlot) {
    let mut slot = slot.0;
    let Some(s) = Arc::get_mut(&mut slot) else {
        return;
    };
    // Releases the request's URI and headers now, not when the slot is next used.
    s.begun = None;
    match s.data.get_mut() {
        Ok(d) => d.clear(),
        Err(_) => return,
    }
    SPARES.with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < SPARES_MAX {
            spares.push(slot);
        }
    });
}

impl AuditSlot {
    fn with(&self, f: impl FnOnce(&mut SlotData)) {
        if let Ok(mut d) = self.0.data.lock() {
            f(&mut d);
        }
    }

    pub fn principal(&self, p: &Principal) {
        self.with(|d| {
            d.principal_id.clone_from(&p.id);
            d.principal_kind = p.kind.as_str();
            d.account_id.clone_from(&p.account_id);
        });
    }

    pub fn instance(&self, id: &str) {
        self.with(|d| replace(&mut d.instance_id, id));
    }

    pub fn key_id(&self, id: &str) {
        self.with(|d| replace(&mut d.key_id, id));
    }

    /// Takes the id (the handler is done with it) rather than copying it.
    pub fn key_version(&self, id: String) {
        self.with(|d| d.key_version = id);
    }

    pub fn action(&self, action: String) {
        self.with(|d| d.action = Some(action));
    }
}

/// Sets `s` to `v` in the capacity `s` has.
fn replace(s: &mut String, v: &str) {
    s.clear();
    s.push_str(v);
}

tokio::task_local! {
    /// The audit slot of the request being served, while its handler runs.
    static CURRENT: Option<AuditSlot>;
}

/// Runs `handler` with `slot` as its request's audit slot. A task-local rather
/// than a request extension: inserting the extension cost an allocation and a
/// map insertion per request, and every lookup a hash and a downcast.
pub(crate) fn scope<F: std::future::Future>(
    slot: Option<AuditSlot>,
    handler: F,
) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(slot, handler)
}

/// The current request's audit slot, when the audit trail is on.
pub fn current() -> Option<AuditSlot> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

/// Records into the current request's audit slot, when the audit trail is on.
pub fn note(f: impl FnOnce(&AuditSlot)) {
    let _ = CURRENT.try_with(|slot| {
        if let Some(slot) = slot {
            f(slot);
        }
    });
}

/// What [`begin`] learnt from the request, kept for [`finish`]. The header
/// values and the URI are reference-counted clones of the request's own, and
/// the peer address is formatted only when the event is built: taking them
/// costs no allocation.
struct Begun {
    audit: Arc<Audit>,
    action: Cow<'static, str>,
    durability: Durability,
    method: axum::http::Method,
    /// The key id or alias is read from its path.
    uri: axum::http::Uri,
    instance_header: Option<HeaderValue>,
    peer: Option<IpAddr>,
    user_agent: Option<HeaderValue>,
    time_ms: i64,
}

pub(crate) fn unavailable() -> Response {
    ApiError {
        error: Error::new(
            Reason::AuditUnavailable,
            "The audit trail cannot record this request now; retry later",
        ),
        op: "The request could not be audited",
    }
    .into_response()
}

/// Header text fit for a record: bounded, printable.
fn clean(v: Option<&HeaderValue>, max: usize) -> Cow<'_, str> {
    match v.and_then(|v| v.to_str().ok()) {
        // The common case (short, printable ASCII) is the value as it is.
        Some(s) if s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            Cow::Borrowed(s)
        }
        Some(s) => Cow::Owned(s.chars().filter(|c| !c.is_control()).take(max).collect()),
        None => Cow::Borrowed(""),
    }
}

/// The key id or alias in the path of a `/api/v2/keys/{id}…` route, as sent
/// (at most 256 characters).
fn path_key_id<'a>(route: &str, path: &'a str) -> &'a str {
    if !route.starts_with("/api/v2/keys/{id}") {
        return "";
    }
    let rest = path.strip_prefix("/api/v2/keys/").unwrap_or_default();
    let id = rest.split_once('/').map_or(rest, |(id, _)| id);
    // 256 bytes hold at most 256 characters.
    let end = match id.len() {
        0..=256 => id.len(),
        _ => id.char_indices().nth(256).map_or(id.len(), |(i, _)| i),
    };
    &id[..end]
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// `ip` as text, in `buf` (an IPv6 address takes at most 45 bytes). IPv4, the
/// common case, is written digit by digit: through `fmt` it cost as much as
/// the rest of building the event.
fn format_ip(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    use std::io::Write;
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(octet).as_bytes();
                buf[n..n + digits.len()].copy_from_slice(digits);
                n += digits.len();
            }
            n
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            cursor.position() as usize
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

const BLUEMIX_INSTANCE: HeaderName = HeaderName::from_static("bluemix-instance");

/// The sink cannot take events now: the request is refused before it runs.
pub(crate) struct SinkDown;

/// Before the handler: refuses at once when the sink is down (the event could not
/// be recorded), else notes what the request is and leaves a slot for the handler.
pub(crate) fn begin(
    st: &AppState,
    req: &Request,
    route: &str,
) -> Result<Option<AuditSlot>, SinkDown> {
    let Some(audit) = st.0.audit.get() else {
        return Ok(None);
    };
    if !audited(route) {
        return Ok(None);
    }
    if !audit.healthy() {
        return Err(SinkDown);
    }
    let method = req.method().clone();
    let (action, durability) = {
        let path = req.uri().path();
        let key_action: Option<Cow<str>> = if route.ends_with("/actions/{action}") {
            path.rsplit('/').next().map(Cow::Borrowed)
        } else if route == "/api/v2/keys/{id}" && method == axum::http::Method::POST {
            query_pairs(&req.uri().query().map(str::to_string))
                .ok()
                .and_then(|p| p.into_iter().find(|(k, _)| k == "action"))
                .map(|(_, v)| Cow::Owned(v))
        } else {
            None
        };
        classify(method.as_str(), route, key_action.as_deref())
    };
    let slot = new_slot(Begun {
        audit: audit.clone(),
        action,
        durability,
        method,
        uri: req.uri().clone(),
        instance_header: req.headers().get(BLUEMIX_INSTANCE).cloned(),
        peer: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        user_agent: req.headers().get(USER_AGENT).cloned(),
        // Formatted by the writer thread, off the request path.
        time_ms: record::now_ms(),
    });
    Ok(Some(slot))
}

/// What [`finish`] leaves to do: nothing, or (for a management call) wait for
/// its event's commit.
pub(crate) enum Finished {
    Ready(Response),
    Commit(Commit),
}

/// A management call's response, held until its event is committed.
pub(crate) struct Commit {
    audit: Arc<Audit>,
    receipt: Receipt,
    resp: Response,
}

impl Commit {
    /// The response once the event is committed; 503 if it is not, within the sink timeout.
    pub(crate) async fn wait(self) -> Response {
        match self.audit.committed(self.receipt).await {
            Ok(()) => self.resp,
            Err(_) => unavailable(),
        }
    }
}

/// After the handler: records the event; a response whose event cannot be
/// recorded is replaced by 503 (its body, a wrapped key say, never leaves).
/// Not async: the event is built and queued here, and only a management call's
/// wait for its commit is awaited (a small future; the event, built on the
/// stack, is not carried across the await).
pub(crate) fn finish(
    slot: &AuditSlot,
    request_id: &str,
    route: &'static str,
    resp: Response,
) -> Finished {
    let Some(b) = &slot.0.begun else {
        return Finished::Ready(resp);
    };
    let status = resp.status();
    let reason = resp
        .extensions()
        .get::<ReasonCode>()
        .map(|r| r.0)
        .unwrap_or(if status.is_success() || status.is_redirection() {
            ""
        } else {
            "HTTP_ERROR"
        });
    // Held while the event is queued: no other holder touches the slot by now.
    let data = slot.0.data.lock().unwrap_or_else(|e| e.into_inner());
    // The header's instance only when the handler did not name one (refused early).
    let instance_header = if data.instance_id.is_empty() {
        clean(b.instance_header.as_ref(), 128)
    } else {
        Cow::Borrowed("")
    };
    let instance_header = if instance_header
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        &instance_header
    } else {
        ""
    };
    let user_agent = clean(b.user_agent.as_ref(), 256);
    let mut ip_buf = [0u8; 48];
    let source_ip = b.peer.map_or("", |ip| format_ip(ip, &mut ip_buf));
    let body = EventBody {
        kind: "event",
        request_id,
        action: data.action.as_deref().unwrap_or(&b.action),
        outcome: if status.is_success() || status.is_redirection() {
            "success"
        } else {
            "failure"
        },
        status: status.as_u16(),
        reason,
        account_id: &data.account_id,
        principal_id: &data.principal_id,
        principal_kind: data.principal_kind,
        source_ip,
        user_agent: &user_agent,
        instance_id: non_empty(&data.instance_id).unwrap_or(instance_header),
        key_id: non_empty(&data.key_id).unwrap_or_else(|| path_key_id(route, b.uri.path())),
        key_version: &data.key_version,
        method: b.method.as_str(),
        route,
    };
    // A refused call changed nothing, so its event is only queued: the response it
    // already waited for (a store timeout, say) is not delayed further by the sink.
    let durability = if status.is_success() || status.is_redirection() {
        b.durability
    } else {
        Durability::Queued
    };
    match b.audit.record(&body, b.time_ms, durability) {
        Ok(None) => Finished::Ready(resp),
        Ok(Some(receipt)) => Finished::Commit(Commit {
            audit: b.audit.clone(),
            receipt,
            resp,
        }),
        Err(_) => Finished::Ready(unavailable()),
    }
}

// ------------------------------------------------------------ read routes

fn audit_of(st: &AppState) -> Result<Arc<Audit>, Error> {
    st.0.audit.get().cloned().ok_or_else(|| {
        Error::new(
            Reason::NotFound,
            "The audit trail is off on this server (serve --audit off)",
        )
    })
}

/// The caller, who must hold the Administrator platform role in their account.
fn administrator(st: &AppState, headers: &HeaderMap) -> Result<Principal, Error> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(Error::unauthorized)?;
    let p = st.0.tokens.authenticate(token)?;
    note(|slot| slot.principal(&p));
    if !st
        .0
        .authz
        .platform_roles(&p, &p.account_id, None)?
        .may_administer()
    {
        return Err(Error::new(
            Reason::Unauthorized,
            "Reading the audit trail needs the Administrator platform role in the account",
        ));
    }
    Ok(p)
}

fn events_query(raw: &Option<String>, account_id: &str) -> Result<AuditQuery, Error> {
    let mut q = AuditQuery {
        account_id: account_id.to_string(),
        limit: 100,
        ..Default::default()
    };
    let time = |name: &str, v: &str| {
        keyhold_core::timefmt::parse(v)
            .map(|s| s * 1000)
            .ok_or_else(|| Error::invalid_query(name, "an RFC 3339 time"))
    };
    for (k, v) in query_pairs(raw)? {
        match k.as_str() {
            "from" => q.from_ms = Some(time("from", &v)?),
            "to" => q.to_ms = Some(time("to", &v)? + 999),
            "key_id" => q.key_id = Some(v),
            "principal" => q.principal_id = Some(v),
            "action" => q.action = Some(v),
            "instance" => q.instance_id = Some(v),
            "outcome" if v == "success" || v == "failure" => q.outcome = Some(v),
            "outcome" => return Err(Error::invalid_query("outcome", "success or failure")),
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| Error::invalid_query("limit", "an integer from 1 to 1000"))?
            }
            "after" => {
                q.after_seq = v
                    .parse()
                    .map_err(|_| Error::invalid_query("after", "a sequence number"))?
            }
            other => {
                return Err(Error::new(
                    Reason::InvalidQueryParam,
                    format!(
                        "Unknown query parameter `{}`",
                        other.chars().take(40).collect::<String>()
                    ),
                ))
            }
        }
    }
    Ok(q)
}

/// `GET /audit/v1/events`: the account's events, oldest first, paged by `after`.
pub(crate) async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    run("Audit events could not be read", async move {
        let audit = audit_of(&st)?;
        let p = administrator(&st, &headers)?;
        let q = events_query(&raw, &p.account_id)?;
        let page = read(&st, move || audit.store().query(&q)).await?;
        let (rows, next) = (page.rows, page.next_after);
        let mut body = String::with_capacity(rows.iter().map(|r| r.record.len() + 1).sum::<usize>() + 200);
        body.push_str(&format!(
            r#"{{"metadata":{{"collectionType":"application/vnd.keyhold.audit.event+json","collectionTotal":{}}},"next_after":{},"resources":["#,
            rows.len(),
            next.map_or("null".to_string(), |n| n.to_string())
        ));
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&r.record);
        }
        body.push_str("]}");
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        Ok(resp)
    })
    .await
}

async fn read<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> keyhold_store::Result<T> + Send + 'static,
) -> Result<T, Error> {
    match tokio::time::timeout(st.0.store_timeout, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "the audit store cannot be read");
            Err(Error::new(
                Reason::AuditUnavailable,
                "The audit store cannot be read now; retry later",
            ))
        }
        Ok(Err(_)) => Err(Error::internal()),
        Err(_) => Err(Error::new(
            Reason::AuditUnavailable,
            "The audit store did not answer in time; retry later",
        )),
    }
}

/// A response body fed by a channel, so an export streams page by page.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

const EXPORT_PAGE: u32 = 1000;

/// One export line: the record, or for another account's event its place in the chain only.
fn export_line(r: &AuditRow, account_id: &str, out: &mut Vec<u8>) {
    if r.kind == "event" && !r.account_id.is_empty() && r.account_id != account_id {
        let prev = serde_json::from_str::<serde_json::Value>(&r.record)
            .ok()
            .and_then(|v| {
                v.get("prev_hash")
                    .and_then(|p| p.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let red = Redacted {
            seq: r.seq,
            prev_hash: prev,
            kind: "redacted".into(),
            hash: r.hash.clone(),
        };
        out.extend_from_slice(serde_json::to_string(&red).unwrap_or_default().as_bytes());
    } else {
        out.extend_from_slice(r.record.as_bytes());
    }
    out.push(b'\n');
}

/// `GET /audit/v1/export`: the whole chain as JSON lines up to the head at the
/// time of the call, then that head signed. Other accounts' events are redacted
/// to their hashes, so the chain still verifies.
pub(crate) async fn export(State(st): State<AppState>, headers: HeaderMap) -> Response {
    run("The audit trail could not be exported", async move {
        let audit = audit_of(&st)?;
        let p = administrator(&st, &headers)?;
        let a = audit.clone();
        let head = read(&st, move || a.store().head()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let account = p.account_id.clone();
        tokio::spawn(async move {
            let mut after = 0u64;
            while after < head.seq {
                let a = audit.clone();
                let page =
                    tokio::task::spawn_blocking(move || a.store().scan(after, EXPORT_PAGE)).await;
                let rows = match page {
                    Ok(Ok(rows)) if !rows.is_empty() => rows,
                    _ => {
                        // The client sees a cut-off body; without the signed head
                        // `audit verify` reports it as truncated.
                        let _ = tx
                            .send(Err(std::io::Error::other("audit store read failed")))
                            .await;
                        return;
                    }
                };
                let mut buf = Vec::with_capacity(rows.len() * 600);
                for r in rows.iter().filter(|r| r.seq <= head.seq) {
                    export_line(r, &account, &mut buf);
                    after = r.seq;
                }
                if rows.last().is_some_and(|r| r.seq > head.seq) {
                    after = head.seq;
                }
                if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                    return;
                }
            }
            let (time, _) = record::now();
            let line = serde_json::to_string(&audit.signer().head(head.seq, &head.hash, time))
                .unwrap_or_default();
            let _ = tx.send(Ok(Bytes::from(line + "\n"))).await;
        });
        let mut resp = Response::new(AxumBody::new(ChannelBody(rx)));
        resp.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/x-ndjson"),
        );
        Ok(resp)
    })
    .await
}

/// `GET /audit/v1/keys`: the public keys checkpoints and export heads are signed with.
pub(crate) async fn keys(State(st): State<AppState>) -> Response {
    run("Audit keys could not be read", async move {
        let audit = audit_of(&st)?;
        let s = audit.signer();
        Ok(reply(
            &st,
            StatusCode::OK,
            Body::Json,
            &json!({"keys": [{"id": s.id(), "alg": "Ed25519", "public_key": B64.encode(s.public_key())}]}),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::{format_ip, path_key_id};
    use std::net::IpAddr;

    #[test]
    fn addresses_read_as_their_display_form() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 48];
            assert_eq!(format_ip(ip, &mut buf), ip.to_string());
        }
    }

    #[test]
    fn the_key_id_is_the_path_segment_after_keys() {
        let id = "d38421df-ad57-4782-a42f-af466da1de95";
        let wrap = format!("/api/v2/keys/{id}/actions/wrap");
        assert_eq!(path_key_id("/api/v2/keys/{id}/actions/{action}", &wrap), id);
        let key = format!("/api/v2/keys/{id}");
        assert_eq!(path_key_id("/api/v2/keys/{id}", &key), id);
        assert_eq!(path_key_id("/api/v2/keys", "/api/v2/keys"), "");
        assert_eq!(
            path_key_id("/api/v2/import_token", "/api/v2/import_token"),
            ""
        );
        let long = "é".repeat(300);
        let path = format!("/api/v2/keys/{long}");
        let at_most = path_key_id("/api/v2/keys/{id}", &path);
        assert_eq!(at_most.chars().count(), 256);
    }
}
