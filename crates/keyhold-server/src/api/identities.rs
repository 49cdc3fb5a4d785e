//! IAM management in IBM Cloud IAM's style: users (`/v1/users`), service IDs
//! (`/v1/serviceids`), access groups and members (`/v2/groups`), API keys
//! (`/v1/apikeys`, with rotate) and access policies (`/v1/policies`), plus
//! `/v1/whoami`. Managing IAM needs the Administrator platform role on the
//! account; anyone may manage their own API keys. Errors use IAM's shape
//! (`errorCode`, `errorMessage`, `context.requestId`), always 4xx for bad input.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyhold_core::iam::parse_policy;
use keyhold_core::{timefmt, Error};
use keyhold_store::ApiKeyRecord;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ctx::RawBody;
use super::iam::iam_error;
use super::{blocking, AppState};
use crate::auth::Principal;
use crate::service::{AccountAccess, IamKind, NewApiKey};

/// An IAM error: status, IBM-style code, message.
pub struct IamError(StatusCode, &'static str, String);

impl IntoResponse for IamError {
    fn into_response(self) -> Response {
        iam_error(self.0, self.1, &self.2)
    }
}

impl From<Error> for IamError {
    fn from(e: Error) -> Self {
        let status = StatusCode::from_u16(e.reason.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let code = match status.as_u16() {
            400 => "BXNIM0400E",
            401 => "BXNIM0308E",
            403 => "BXNIM0403E",
            404 => "BXNIM0404E",
            409 => "BXNIM0409E",
            429 => "BXNIM0429E",
            503 => "BXNIM0503E",
            _ => "BXNIM0500E",
        };
        IamError(status, code, e.message)
    }
}

type IamResult = Result<Response, IamError>;

fn forbidden() -> IamError {
    IamError(
        StatusCode::FORBIDDEN,
        "BXNIM0403E",
        "You are not authorized to perform this action: managing IAM needs the Administrator role on the account".into(),
    )
}

fn bad_request(msg: impl Into<String>) -> IamError {
    IamError(StatusCode::BAD_REQUEST, "BXNIM0400E", msg.into())
}

fn ok(status: StatusCode, v: Value) -> Response {
    (
        status,
        [
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

fn path(p: Result<Path<String>, PathRejection>) -> Result<String, IamError> {
    p.map(|Path(v)| v)
        .map_err(|_| bad_request("The request path holds an invalid identifier"))
}

fn path2(p: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), IamError> {
    p.map(|Path(v)| v)
        .map_err(|_| bad_request("The request path holds an invalid identifier"))
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, IamError> {
    serde_json::from_slice(bytes).map_err(|e| {
        bad_request(format!(
            "The request body is not valid: {}",
            e.to_string()
                .split(" at line")
                .next()
                .unwrap_or("invalid JSON")
        ))
    })
}

/// The authenticated caller of an IAM endpoint, with the account's access.
pub struct IamCaller {
    pub principal: Principal,
    access: Arc<AccountAccess>,
}

impl IamCaller {
    fn is_admin(&self) -> bool {
        self.access
            .is_admin(&self.principal.id, &self.principal.account_id)
    }

    fn require_admin(&self) -> Result<(), IamError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(forbidden())
        }
    }

    fn account(&self) -> String {
        self.principal.account_id.clone()
    }
}

impl FromRequestParts<AppState> for IamCaller {
    type Rejection = IamError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, IamError> {
        let unauthorized = || {
            IamError(
                StatusCode::UNAUTHORIZED,
                "BXNIM0308E",
                "The access token is missing, invalid or expired".into(),
            )
        };
        let token = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string())
            .ok_or_else(unauthorized)?;
        let principal =
            st.0.tokens
                .authenticate(&token)
                .map_err(|_| unauthorized())?;
        super::audit::note(|slot| slot.principal(&principal));
        let access = match st.0.svc.cached_account_access(&principal.account_id) {
            Some(a) => a,
            None => {
                let account = principal.account_id.clone();
                blocking(st, move |svc| svc.account_access(&account)).await?
            }
        };
        Ok(IamCaller { principal, access })
    }
}

fn api_key_json(rec: &ApiKeyRecord, secret: Option<&str>) -> Value {
    let mut v = json!({"id": rec.id, "name": rec.name, "iam_id": rec.principal_id,
        "account_id": rec.account_id, "created_at": timefmt::format(rec.created_at)});
    if let Some(s) = secret {
        v["apikey"] = json!(s);
    }
    v
}

fn new_key_json(k: &NewApiKey) -> Value {
    api_key_json(&k.record, Some(k.secret.as_str()))
}

pub async fn whoami(State(st): State<AppState>, caller: IamCaller) -> IamResult {
    let roles =
        st.0.authz
            .platform_roles(&caller.principal, &caller.principal.account_id, None)?;
    let names: Vec<&str> = [
        (keyhold_core::access::PlatformRole::Viewer, "Viewer"),
        (keyhold_core::access::PlatformRole::Operator, "Operator"),
        (keyhold_core::access::PlatformRole::Editor, "Editor"),
        (
            keyhold_core::access::PlatformRole::Administrator,
            "Administrator",
        ),
    ]
    .into_iter()
    .filter(|(r, _)| roles.has(*r))
    .map(|(_, n)| n)
    .collect();
    Ok(ok(
        StatusCode::OK,
        json!({"iam_id": caller.principal.id, "type": caller.principal.kind.as_str(),
            "account_id": caller.principal.account_id, "iam_admin": caller.is_admin(),
            "platform_roles": names}),
    ))
}

// ---- users, service IDs, groups: same lifecycle, different bodies ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserIn {
    user_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedIn {
    name: String,
    #[serde(default)]
    description: String,
}

async fn list_kind(st: &AppState, caller: &IamCaller, kind: IamKind, field: &str) -> IamResult {
    caller.require_admin()?;
    let account = caller.account();
    let items = blocking(st, move |svc| svc.iam_list(&account, kind)).await?;
    Ok(ok(StatusCode::OK, json!({ field: items })))
}

async fn get_kind(st: &AppState, caller: &IamCaller, kind: IamKind, id: String) -> IamResult {
    // Everyone may read their own identity; the rest is for administrators.
    if id != caller.principal.id {
        caller.require_admin()?;
    }
    let account = caller.account();
    let item = blocking(st, move |svc| svc.iam_get(&account, kind, &id)).await?;
    Ok(ok(StatusCode::OK, item))
}

async fn delete_kind(st: &AppState, caller: &IamCaller, kind: IamKind, id: String) -> IamResult {
    caller.require_admin()?;
    let account = caller.account();
    blocking(st, move |svc| svc.iam_delete(&account, kind, &id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_users(State(st): State<AppState>, caller: IamCaller) -> IamResult {
    list_kind(&st, &caller, IamKind::User, "resources").await
}

pub async fn create_user(
    State(st): State<AppState>,
    caller: IamCaller,
    RawBody(bytes): RawBody,
) -> IamResult {
    caller.require_admin()?;
    let body: UserIn = json_body(&bytes)?;
    let account = caller.account();
    let user = blocking(&st, move |svc| svc.create_user(&account, &body.user_id)).await?;
    Ok(ok(StatusCode::CREATED, user))
}

pub async fn get_user(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    get_kind(&st, &caller, IamKind::User, path(id)?).await
}

pub async fn delete_user(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    delete_kind(&st, &caller, IamKind::User, path(id)?).await
}

pub async fn list_service_ids(State(st): State<AppState>, caller: IamCaller) -> IamResult {
    list_kind(&st, &caller, IamKind::ServiceId, "serviceids").await
}

pub async fn create_service_id(
    State(st): State<AppState>,
    caller: IamCaller,
    RawBody(bytes): RawBody,
) -> IamResult {
    caller.require_admin()?;
    let body: NamedIn = json_body(&bytes)?;
    let account = caller.account();
    let sid = blocking(&st, move |svc| {
        svc.create_service_id(&account, &body.name, &body.description)
    })
    .await?;
    Ok(ok(StatusCode::CREATED, sid))
}

pub async fn get_service_id(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    get_kind(&st, &caller, IamKind::ServiceId, path(id)?).await
}

pub async fn delete_service_id(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    delete_kind(&st, &caller, IamKind::ServiceId, path(id)?).await
}

pub async fn list_groups(State(st): State<AppState>, caller: IamCaller) -> IamResult {
    list_kind(&st, &caller, IamKind::Group, "groups").await
}

pub async fn create_group(
    State(st): State<AppState>,
    caller: IamCaller,
    RawBody(bytes): RawBody,
) -> IamResult {
    caller.require_admin()?;
    let body: NamedIn = json_body(&bytes)?;
    let account = caller.account();
    let g = blocking(&st, move |svc| {
        svc.create_group(&account, &body.name, &body.description)
    })
    .await?;
    Ok(ok(StatusCode::CREATED, g))
}

pub async fn get_group(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    caller.require_admin()?;
    get_kind(&st, &caller, IamKind::Group, path(id)?).await
}

pub async fn delete_group(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    delete_kind(&st, &caller, IamKind::Group, path(id)?).await
}

pub async fn list_members(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    caller.require_admin()?;
    let (group, account) = (path(id)?, caller.account());
    let members = blocking(&st, move |svc| svc.members(&account, &group)).await?;
    Ok(ok(StatusCode::OK, json!({ "members": members })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberIn {
    iam_id: String,
    #[serde(default, rename = "type")]
    _kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersIn {
    members: Vec<MemberIn>,
}

/// `PUT /v2/groups/{id}/members`: adds users and service IDs. Every member is
/// checked before any is added; ones already in the group are left as they are.
pub async fn add_members(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
    RawBody(bytes): RawBody,
) -> IamResult {
    caller.require_admin()?;
    let body: MembersIn = json_body(&bytes)?;
    if body.members.is_empty() || body.members.len() > 50 {
        return Err(bad_request("`members` must list 1 to 50 members"));
    }
    let (group, account) = (path(id)?, caller.account());
    let added = blocking(&st, move |svc| {
        svc.iam_get(&account, IamKind::Group, &group)?;
        for m in &body.members {
            if svc.principal_kind(&account, &m.iam_id)?.is_none() {
                return Err(Error::new(
                    keyhold_core::Reason::NotFound,
                    format!("No user or service ID has iam_id {:?}", m.iam_id),
                ));
            }
        }
        let present: Vec<String> = svc
            .members(&account, &group)?
            .iter()
            .filter_map(|m| m["iam_id"].as_str().map(str::to_string))
            .collect();
        for m in &body.members {
            if !present.contains(&m.iam_id) {
                svc.add_member(&account, &group, &m.iam_id)?;
            }
        }
        svc.members(&account, &group)
    })
    .await?;
    Ok(ok(StatusCode::OK, json!({ "members": added })))
}

pub async fn remove_member(
    State(st): State<AppState>,
    caller: IamCaller,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> IamResult {
    caller.require_admin()?;
    let ((group, member), account) = (path2(ids)?, caller.account());
    blocking(&st, move |svc| {
        svc.iam_delete(&account, IamKind::Member, &format!("{group}/{member}"))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- API keys ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyIn {
    name: String,
    #[serde(default)]
    iam_id: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
}

fn query_param(q: &Option<String>, name: &str) -> Result<Option<String>, IamError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|_| bad_request("The query string is not valid"))?;
    Ok(pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
}

/// A key the caller may manage: their own, or any of the account's for an administrator.
async fn owned_key(
    st: &AppState,
    caller: &IamCaller,
    id: String,
) -> Result<ApiKeyRecord, IamError> {
    let account = caller.account();
    let rec = blocking(st, move |svc| svc.api_key(&account, &id)).await?;
    if rec.principal_id != caller.principal.id {
        caller.require_admin()?;
    }
    Ok(rec)
}

pub async fn list_api_keys(
    State(st): State<AppState>,
    caller: IamCaller,
    RawQuery(q): RawQuery,
) -> IamResult {
    let wanted = query_param(&q, "iam_id")?;
    let admin = caller.is_admin();
    let filter = match wanted {
        Some(id) if id != caller.principal.id && !admin => return Err(forbidden()),
        Some(id) => Some(id),
        None if admin => None,
        None => Some(caller.principal.id.clone()),
    };
    let account = caller.account();
    let keys = blocking(&st, move |svc| svc.api_keys(&account)).await?;
    let list: Vec<Value> = keys
        .iter()
        .filter(|k| filter.as_ref().is_none_or(|f| &k.principal_id == f))
        .map(|k| api_key_json(k, None))
        .collect();
    Ok(ok(StatusCode::OK, json!({ "apikeys": list })))
}

pub async fn create_api_key(
    State(st): State<AppState>,
    caller: IamCaller,
    RawBody(bytes): RawBody,
) -> IamResult {
    let body: ApiKeyIn = json_body(&bytes)?;
    if body
        .account_id
        .as_ref()
        .is_some_and(|a| a != &caller.principal.account_id)
    {
        return Err(bad_request("`account_id` must be the caller's account"));
    }
    let iam_id = body
        .iam_id
        .clone()
        .unwrap_or_else(|| caller.principal.id.clone());
    if iam_id != caller.principal.id {
        caller.require_admin()?;
    }
    let account = caller.account();
    let key = blocking(&st, move |svc| {
        svc.create_api_key(&account, &iam_id, &body.name)
    })
    .await?;
    Ok(ok(StatusCode::CREATED, new_key_json(&key)))
}

pub async fn get_api_key(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    let rec = owned_key(&st, &caller, path(id)?).await?;
    Ok(ok(StatusCode::OK, api_key_json(&rec, None)))
}

pub async fn delete_api_key(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    let rec = owned_key(&st, &caller, path(id)?).await?;
    let account = caller.account();
    blocking(&st, move |svc| svc.delete_api_key(&account, &rec.id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn rotate_api_key(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    let rec = owned_key(&st, &caller, path(id)?).await?;
    let account = caller.account();
    let key = blocking(&st, move |svc| svc.rotate_api_key(&account, &rec.id)).await?;
    Ok(ok(StatusCode::OK, new_key_json(&key)))
}

// ---- access policies ----

pub async fn list_policies(
    State(st): State<AppState>,
    caller: IamCaller,
    RawQuery(q): RawQuery,
) -> IamResult {
    caller.require_admin()?;
    let subject = match (
        query_param(&q, "iam_id")?,
        query_param(&q, "access_group_id")?,
    ) {
        (Some(a), None) | (None, Some(a)) => Some(a),
        (None, None) => None,
        _ => {
            return Err(bad_request(
                "filter by `iam_id` or `access_group_id`, not both",
            ))
        }
    };
    let account = caller.account();
    let all = blocking(&st, move |svc| svc.iam_list(&account, IamKind::Policy)).await?;
    let list: Vec<Value> = all
        .into_iter()
        .filter(|p| {
            subject
                .as_ref()
                .is_none_or(|s| p["subjects"][0]["attributes"][0]["value"].as_str() == Some(s))
        })
        .collect();
    Ok(ok(StatusCode::OK, json!({ "policies": list })))
}

pub async fn create_policy(
    State(st): State<AppState>,
    caller: IamCaller,
    RawBody(bytes): RawBody,
) -> IamResult {
    caller.require_admin()?;
    let body: Value = json_body(&bytes)?;
    let input = parse_policy(&body).map_err(|e| bad_request(e.0))?;
    let by = caller.principal.clone();
    let p = blocking(&st, move |svc| svc.create_policy(&by, input)).await?;
    Ok(ok(StatusCode::CREATED, p))
}

pub async fn get_policy(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    caller.require_admin()?;
    let (id, account) = (path(id)?, caller.account());
    let p = blocking(&st, move |svc| svc.iam_get(&account, IamKind::Policy, &id)).await?;
    Ok(ok(StatusCode::OK, p))
}

pub async fn delete_policy(
    State(st): State<AppState>,
    caller: IamCaller,
    id: Result<Path<String>, PathRejection>,
) -> IamResult {
    delete_kind(&st, &caller, IamKind::Policy, path(id)?).await
}
