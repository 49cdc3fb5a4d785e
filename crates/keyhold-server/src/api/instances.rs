//! The resource controller's routes in the IBM Resource Controller's style
//! (`/v2/resource_instances`, `/v2/resource_keys`), crypto-instance connection
//! info (`/crypto_v1|v2/instances/{id}`, keyprotect-api.md §10.1) and
//! service-to-service authorizations (`/v1/authorizations`). The caller is
//! authenticated by token alone; platform roles decide (Appendix B).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyhold_core::access::PlatformRoles;
use keyhold_core::model::Instance;
use keyhold_core::resource::{
    plan_id, plan_of, split_plan_id, valid_service_name, Authorization, Party, SERVICE_HS_CRYPTO,
};
use keyhold_core::{timefmt, Error, Reason};
use serde_json::{json, Map, Value};

use super::ctx::{Caller, PathArgs, RawBody};
use super::{blocking, body, reply, run, AppState, Body};
use crate::auth::Principal;
use crate::service::{instance_guid, InstanceInput, InstanceUpdate};

fn render_instance(i: &Instance) -> Value {
    let crn = i.crn();
    let mut parameters = Map::new();
    if let Some(u) = i.units {
        parameters.insert("units".into(), json!(u));
    }
    if let Some(c) = &i.crypto_instance {
        parameters.insert("crypto_instance".into(), json!(c));
    }
    json!({
        "id": crn,
        "guid": i.id,
        "crn": crn,
        "url": format!("/v2/resource_instances/{}", i.id),
        "name": i.name,
        "account_id": i.account_id,
        "region_id": i.region,
        "resource_id": i.service,
        "resource_plan_id": plan_id(i),
        "plan": plan_of(i),
        "type": "service_instance",
        "state": i.state.as_str(),
        "parameters": parameters,
        "created_at": timefmt::format(i.created_at),
        "updated_at": timefmt::format(i.updated_at.max(i.created_at)),
        "created_by": i.created_by,
    })
}

fn render_authorization(a: &Authorization) -> Value {
    json!({
        "id": a.id,
        "type": "authorization",
        "account_id": a.account_id,
        "source": a.source,
        "target": a.target,
        "roles": a.roles,
        "created_at": timefmt::format(a.created_at),
        "created_by": a.created_by,
    })
}

fn platform_roles(
    st: &AppState,
    p: &Principal,
    instance_id: Option<&str>,
) -> Result<PlatformRoles, Error> {
    st.0.authz.platform_roles(p, &p.account_id, instance_id)
}

fn denied() -> Error {
    Error::new(
        Reason::Unauthorized,
        "The caller's platform roles do not allow this action",
    )
}

fn not_found() -> Error {
    Error::new(Reason::NotFound, "No such service instance")
}

/// The instance `id` (guid or CRN) of the caller's account, if the caller may view it.
async fn visible_instance(st: &AppState, p: &Principal, id: &str) -> Result<Arc<Instance>, Error> {
    let guid = instance_guid(id).ok_or_else(not_found)?;
    let dir = st.directory().await?;
    let instance = dir
        .instance(&guid)
        .filter(|i| i.account_id == p.account_id)
        .cloned()
        .ok_or_else(not_found)?;
    if !platform_roles(st, p, Some(&instance.id))?.may_view() {
        return Err(denied());
    }
    Ok(instance)
}

fn object(raw: &RawBody) -> Result<Map<String, Value>, Error> {
    match body::parse(&raw.0)? {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(Error::bad_body("The request body must be a JSON object")),
        None => Err(Error::new(Reason::NoBody, "The request needs a JSON body")),
    }
}

fn opt_str(m: &Map<String, Value>, field: &'static str) -> Result<Option<String>, Error> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::invalid_field(field, "a string")),
    }
}

/// `parameters`: `units` (hs-crypto) and `crypto_instance` (kms); nothing else.
fn parameters(m: &Map<String, Value>) -> Result<(Option<u32>, Option<String>), Error> {
    let params = match m.get("parameters") {
        None | Some(Value::Null) => return Ok((None, None)),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(Error::invalid_field("parameters", "a JSON object")),
    };
    if params
        .keys()
        .any(|k| k != "units" && k != "crypto_instance")
    {
        return Err(Error::invalid_field(
            "parameters",
            "an object with units (hs-crypto) or crypto_instance (kms) only",
        ));
    }
    let units = match params.get("units") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .ok_or_else(|| Error::invalid_field("units", "a whole number of crypto units"))?,
        ),
    };
    let crypto = opt_str(params, "crypto_instance")?;
    Ok((units, crypto))
}

pub async fn create_instance(
    State(st): State<AppState>,
    Caller(p): Caller,
    raw: RawBody,
) -> Response {
    run("Service instance could not be created", async move {
        if !platform_roles(&st, &p, None)?.may_edit() {
            return Err(denied().into());
        }
        let m = object(&raw)?;
        let name = opt_str(&m, "name")?
            .ok_or_else(|| Error::invalid_field("name", "the instance's name"))?;
        let by_plan = match opt_str(&m, "resource_plan_id")? {
            None => None,
            Some(id) => Some(match split_plan_id(&id) {
                Some((s, plan)) => (s.to_string(), Some(plan.to_string())),
                None if valid_service_name(&id) => (id, None),
                None => {
                    return Err(Error::invalid_field(
                        "resource_plan_id",
                        "a plan id such as hs-crypto-standard, kms-standard, kms-dedicated",
                    )
                    .into())
                }
            }),
        };
        let service = opt_str(&m, "service")?;
        let plan = opt_str(&m, "plan")?;
        let (service, plan) = match (by_plan, service) {
            (Some((s, from_id)), None) => (s, plan.or(from_id)),
            (Some((s, from_id)), Some(named)) if s == named => (s, plan.or(from_id)),
            (None, Some(named)) => (named, plan),
            (Some(_), Some(_)) => {
                return Err(Error::invalid_field(
                    "service",
                    "the service of resource_plan_id (or leave one out)",
                )
                .into())
            }
            (None, None) => {
                return Err(Error::invalid_field(
                    "resource_plan_id",
                    "a plan id, or service (and plan)",
                )
                .into())
            }
        };
        let (units, crypto_instance) = parameters(&m)?;
        let input = InstanceInput {
            name,
            service,
            plan,
            region: opt_str(&m, "target")?,
            units,
            crypto_instance,
        };
        let instance = blocking(&st, move |svc| svc.create_instance(&p, input)).await?;
        Ok(reply(
            &st,
            StatusCode::CREATED,
            Body::Json,
            &render_instance(&instance),
        ))
    })
    .await
}

pub async fn list_instances(
    State(st): State<AppState>,
    Caller(p): Caller,
    RawQuery(q): RawQuery,
) -> Response {
    run("Service instances could not be listed", async move {
        let (mut service, mut name) = (None, None);
        for (k, v) in super::keys::query_pairs(&q)? {
            match k.as_str() {
                "resource_id" => service = Some(v),
                "name" => name = Some(v),
                _ => {}
            }
        }
        let dir = st.directory().await?;
        let mut rows: Vec<&Arc<Instance>> = dir
            .instances
            .values()
            .filter(|i| i.account_id == p.account_id)
            .filter(|i| service.as_deref().is_none_or(|s| i.service == s))
            .filter(|i| name.as_deref().is_none_or(|n| i.name == n))
            .collect();
        rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let mut resources = Vec::new();
        for i in rows {
            if platform_roles(&st, &p, Some(&i.id))?.may_view() {
                resources.push(render_instance(i));
            }
        }
        let body = json!({"rows_count": resources.len(), "next_url": null, "resources": resources});
        Ok(reply(&st, StatusCode::OK, Body::Json, &body))
    })
    .await
}

pub async fn get_instance(
    State(st): State<AppState>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Response {
    run("Service instance could not be retrieved", async move {
        let i = visible_instance(&st, &p, &id).await?;
        Ok(reply(&st, StatusCode::OK, Body::Json, &render_instance(&i)))
    })
    .await
}

pub async fn update_instance(
    State(st): State<AppState>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
    raw: RawBody,
) -> Response {
    run("Service instance could not be updated", async move {
        let current = visible_instance(&st, &p, &id).await?;
        if !platform_roles(&st, &p, Some(&current.id))?.may_edit() {
            return Err(denied().into());
        }
        let m = object(&raw)?;
        let (units, crypto) = parameters(&m)?;
        if crypto.is_some() {
            return Err(Error::invalid_field(
                "crypto_instance",
                "unchanged: a kms instance's crypto instance is fixed at creation",
            )
            .into());
        }
        let name = opt_str(&m, "name")?;
        if name.is_none() && units.is_none() {
            return Err(Error::bad_body("Nothing to change: give name or parameters.units").into());
        }
        let update = InstanceUpdate { name, units };
        let updated = blocking(&st, move |svc| svc.update_instance(&current, update)).await?;
        Ok(reply(
            &st,
            StatusCode::OK,
            Body::Json,
            &render_instance(&updated),
        ))
    })
    .await
}

pub async fn delete_instance(
    State(st): State<AppState>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
    RawQuery(q): RawQuery,
) -> Response {
    run("Service instance could not be deleted", async move {
        let force = super::keys::query_pairs(&q)?
            .into_iter()
            .find(|(k, _)| k == "force")
            .map(|(_, v)| v);
        let force = match force.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(Error::invalid_query("force", "true or false").into()),
        };
        let current = visible_instance(&st, &p, &id).await?;
        if !platform_roles(&st, &p, Some(&current.id))?.may_edit() {
            return Err(denied().into());
        }
        match blocking(&st, move |svc| svc.delete_instance(&current, force)).await? {
            None => Ok(super::no_content()),
            Some(reclaimed) => Ok(reply(
                &st,
                StatusCode::ACCEPTED,
                Body::Json,
                &render_instance(&reclaimed),
            )),
        }
    })
    .await
}

/// A service credential for an instance: an API key whose principal is the
/// instance (what a storage service presents to wrap and unwrap its keys).
pub async fn create_resource_key(
    State(st): State<AppState>,
    Caller(p): Caller,
    raw: RawBody,
) -> Response {
    run("Resource key could not be created", async move {
        let m = object(&raw)?;
        let source = opt_str(&m, "source")?
            .ok_or_else(|| Error::invalid_field("source", "the id or CRN of a service instance"))?;
        let name = opt_str(&m, "name")?.unwrap_or_else(|| "credentials".into());
        let instance = visible_instance(&st, &p, &source).await?;
        if !platform_roles(&st, &p, Some(&instance.id))?.may_edit() {
            return Err(denied().into());
        }
        let source_crn = instance.crn();
        let cred = blocking(&st, move |svc| svc.create_credential(&instance, &name)).await?;
        let r = &cred.record;
        let body = json!({
            "id": format!("{source_crn}resource-key:{}", r.id),
            "guid": r.id,
            "name": r.name,
            "source_crn": source_crn,
            "state": "active",
            "credentials": {
                "apikey": cred.apikey.as_str(),
                "iam_apikey_id": r.id,
                "iam_serviceid_crn": r.principal_id,
            },
            "created_at": timefmt::format(r.created_at),
        });
        Ok(reply(&st, StatusCode::CREATED, Body::Json, &body))
    })
    .await
}

/// §10.1: where a crypto instance's KMS and EP11 endpoints are (host[:port]).
pub async fn connection_info(
    State(st): State<AppState>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Response {
    run("Connection info could not be retrieved", async move {
        let i = visible_instance(&st, &p, &id).await?;
        if i.service != SERVICE_HS_CRYPTO {
            return Err(Error::new(
                Reason::NotFound,
                "Connection info exists for hs-crypto instances only",
            )
            .into());
        }
        let body = json!({
            "instance_id": i.id,
            "kms": {"public": st.0.public_host, "private": st.0.private_host},
            // No EP11 (GREP11) service is served yet: empty, as §10.1 allows for private.
            "ep11": {"public": "", "private": ""},
        });
        Ok(reply(&st, StatusCode::OK, Body::Json, &body))
    })
    .await
}

fn party(m: &Map<String, Value>, field: &'static str) -> Result<Party, Error> {
    let must = "{\"service_name\": \"kms\", \"instance_id\": \"…\" (optional)}";
    let o = match m.get(field) {
        Some(Value::Object(o)) => o,
        _ => return Err(Error::invalid_field(field, must)),
    };
    let service_name = match o.get("service_name") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(Error::invalid_field(field, must)),
    };
    let instance_id = match o.get("instance_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Error::invalid_field(field, must)),
    };
    Ok(Party {
        service_name,
        instance_id,
    })
}

pub async fn create_authorization(
    State(st): State<AppState>,
    Caller(p): Caller,
    raw: RawBody,
) -> Response {
    run("Authorization could not be created", async move {
        if !platform_roles(&st, &p, None)?.may_administer() {
            return Err(denied().into());
        }
        let m = object(&raw)?;
        let source = party(&m, "source")?;
        let target = party(&m, "target")?;
        let roles = match m.get("roles") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|r| r.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        }
        .ok_or_else(|| Error::invalid_field("roles", "a list of role names, e.g. [\"Reader\"]"))?;
        let a = blocking(&st, move |svc| {
            svc.create_authorization(&p, source, target, roles)
        })
        .await?;
        Ok(reply(
            &st,
            StatusCode::CREATED,
            Body::Json,
            &render_authorization(&a),
        ))
    })
    .await
}

pub async fn list_authorizations(State(st): State<AppState>, Caller(p): Caller) -> Response {
    run("Authorizations could not be listed", async move {
        if !platform_roles(&st, &p, None)?.may_view() {
            return Err(denied().into());
        }
        let account = p.account_id.clone();
        let list = blocking(&st, move |svc| svc.authorizations(&account)).await?;
        let body =
            json!({"authorizations": list.iter().map(render_authorization).collect::<Vec<_>>()});
        Ok(reply(&st, StatusCode::OK, Body::Json, &body))
    })
    .await
}

pub async fn get_authorization(
    State(st): State<AppState>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Response {
    run("Authorization could not be retrieved", async move {
        if !platform_roles(&st, &p, None)?.may_view() {
            return Err(denied().into());
        }
        let a = blocking(&st, move |svc| svc.authorization(&p.account_id, &id)).await?;
        Ok(reply(
            &st,
            StatusCode::OK,
            Body::Json,
            &render_authorization(&a),
        ))
    })
    .await
}

pub async fn delete_authorization(
    State(st): State<AppState>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Response {
    run("Authorization could not be deleted", async move {
        if !platform_roles(&st, &p, None)?.may_administer() {
            return Err(denied().into());
        }
        blocking(&st, move |svc| svc.delete_authorization(&p.account_id, &id)).await?;
        Ok(super::no_content())
    })
    .await
}
