//! Key policies and instance policies.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyhold_core::access::Permission;
use keyhold_core::model::{InstancePolicyData, InstancePolicyType, KeyCreateImportAccess};
use keyhold_core::{Error, Reason, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{self, DualAuthIn, RotationIn};
use super::ctx::{Ctx, PathArgs, RawBody};
use super::keys::query_pairs;
use super::render::{self, POLICY_TYPE};
use super::{blocking, no_content, reply, run, AppState, Body};
use crate::service::{InstancePolicyInput, KeyPolicyInput};

fn policy_param(q: &Option<String>, allowed: &[&'static str]) -> Result<Option<&'static str>> {
    let pairs = query_pairs(q)?;
    match pairs
        .iter()
        .find(|(k, _)| k == "policy")
        .map(|(_, v)| v.as_str())
    {
        None | Some("") => Ok(None),
        Some(v) => allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(v))
            .copied()
            .map(Some)
            .ok_or_else(|| Error::invalid_query("policy", &allowed.join(", "))),
    }
}

#[derive(Deserialize)]
struct KeyPolicyIn {
    rotation: Option<RotationIn>,
    dualauthdelete: Option<DualAuthIn>,
}

fn parse_key_policies(resources: Vec<Value>, only: Option<&str>) -> Result<Vec<KeyPolicyInput>> {
    if only.is_some() && resources.len() != 1 {
        return Err(Error::new(
            Reason::NumCollectionResource,
            "Exactly one policy resource is allowed with ?policy=",
        ));
    }
    let mut out = Vec::new();
    for r in resources {
        let p: KeyPolicyIn = body::typed(r)?;
        let has_rotation = p.rotation.is_some();
        let has_dual = p.dualauthdelete.is_some();
        if let Some(o) = only {
            if (o == "rotation" && !has_rotation)
                || (o == "dualAuthDelete" && !has_dual)
                || (has_rotation && has_dual)
            {
                return Err(Error::new(
                    Reason::BodyQueryParamMismatch,
                    "The policy in the body does not match the policy query parameter",
                ));
            }
        }
        if !has_rotation && !has_dual {
            return Err(Error::bad_body(
                "Each policy resource needs `rotation` or `dualAuthDelete`",
            ));
        }
        if let Some(r) = p.rotation {
            out.push(KeyPolicyInput::Rotation {
                enabled: r.enabled,
                interval_month: r.interval_month,
            });
        }
        if let Some(d) = p.dualauthdelete {
            out.push(KeyPolicyInput::DualAuthDelete { enabled: d.enabled });
        }
    }
    Ok(out)
}

pub async fn put_key_policies(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
    RawQuery(q): RawQuery,
    RawBody(bytes): RawBody,
) -> Response {
    run("Key policies could not be set", async move {
        ctx.require_key(&st, Permission::ManagePolicies, &id)
            .await?;
        let only = policy_param(&q, &["rotation", "dualAuthDelete"])?;
        let inputs = parse_key_policies(body::resources(body::parse(&bytes)?)?, only)?;
        let instance_id = ctx.instance.id.clone();
        let principal = ctx.principal.clone();
        let key = blocking(&st, move |svc| {
            svc.set_key_policies(&instance_id, &id, &principal, &inputs)
        })
        .await?;
        let body = render::collection(
            POLICY_TYPE,
            render::key_policies(&key, &ctx.instance, only),
            None,
        );
        Ok(reply(&st, StatusCode::OK, Body::Json, &body))
    })
    .await
}

pub async fn get_key_policies(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
    RawQuery(q): RawQuery,
) -> Response {
    run("Key policies could not be retrieved", async move {
        ctx.require_key(&st, Permission::ManagePolicies, &id)
            .await?;
        let only = policy_param(&q, &["rotation", "dualAuthDelete"])?;
        let instance_id = ctx.instance.id.clone();
        let (key, _) = blocking(&st, move |svc| svc.get_key(&instance_id, &id, false)).await?;
        if key.state == keyhold_core::model::KeyState::Destroyed {
            return Err(Error::key_deleted().into());
        }
        let body = render::collection(
            POLICY_TYPE,
            render::key_policies(&key, &ctx.instance, only),
            None,
        );
        Ok(reply(&st, StatusCode::OK, Body::Json, &body))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstancePolicyIn {
    policy_type: String,
    policy_data: PolicyDataIn,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDataIn {
    enabled: Option<bool>,
    attributes: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkAttrs {
    allowed_network: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpAttrs {
    allowed_ip: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationAttrs {
    interval_month: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessAttrs {
    create_root_key: Option<bool>,
    create_standard_key: Option<bool>,
    import_root_key: Option<bool>,
    import_standard_key: Option<bool>,
    enforce_token: Option<bool>,
}

fn no_attributes(attrs: &Option<Value>) -> Result<()> {
    match attrs {
        None => Ok(()),
        Some(_) => Err(Error::bad_body("json: unknown field \"attributes\"")),
    }
}

fn required_attrs(attrs: Option<Value>) -> Result<Value> {
    attrs.ok_or_else(|| {
        Error::field(
            Reason::BadBody,
            "attributes",
            "json: missing field `attributes`",
        )
    })
}

fn parse_instance_policy(v: Value) -> Result<InstancePolicyInput> {
    let p: InstancePolicyIn = body::typed(v)?;
    let policy_type = InstancePolicyType::parse(&p.policy_type)
        .ok_or_else(|| Error::invalid_field("policy_type", "one of dualAuthDelete, metrics, allowedNetwork, allowedIP, keyCreateImportAccess, rotation"))?;
    let enabled = p
        .policy_data
        .enabled
        .ok_or_else(|| Error::invalid_field("enabled", "true or false"))?;
    let attrs = p.policy_data.attributes;
    let data = match policy_type {
        InstancePolicyType::DualAuthDelete => {
            no_attributes(&attrs)?;
            InstancePolicyData::DualAuthDelete
        }
        InstancePolicyType::Metrics => {
            no_attributes(&attrs)?;
            InstancePolicyData::Metrics
        }
        InstancePolicyType::AllowedNetwork => {
            let a: NetworkAttrs = body::typed(required_attrs(attrs)?)?;
            InstancePolicyData::AllowedNetwork {
                allowed_network: a.allowed_network,
            }
        }
        InstancePolicyType::AllowedIp => match (enabled, attrs) {
            (false, None) => InstancePolicyData::AllowedIp { allowed_ip: vec![] },
            (false, Some(_)) => InstancePolicyData::AllowedIp { allowed_ip: vec![] },
            (true, attrs) => {
                let a: IpAttrs = body::typed(required_attrs(attrs)?)?;
                InstancePolicyData::AllowedIp {
                    allowed_ip: a.allowed_ip,
                }
            }
        },
        InstancePolicyType::KeyCreateImportAccess => {
            let d = KeyCreateImportAccess::default();
            match (enabled, attrs) {
                (true, Some(v)) => {
                    let a: AccessAttrs = body::typed(v)?;
                    InstancePolicyData::KeyCreateImportAccess(KeyCreateImportAccess {
                        create_root_key: a.create_root_key.unwrap_or(d.create_root_key),
                        create_standard_key: a.create_standard_key.unwrap_or(d.create_standard_key),
                        import_root_key: a.import_root_key.unwrap_or(d.import_root_key),
                        import_standard_key: a.import_standard_key.unwrap_or(d.import_standard_key),
                        enforce_token: a.enforce_token.unwrap_or(d.enforce_token),
                    })
                }
                // Disabling resets the attributes.
                _ => InstancePolicyData::KeyCreateImportAccess(d),
            }
        }
        InstancePolicyType::Rotation => match (enabled, attrs) {
            (true, attrs) => {
                let a: RotationAttrs = body::typed(required_attrs(attrs)?)?;
                if !(1..=12).contains(&a.interval_month) {
                    return Err(Error::invalid_field(
                        "interval_month",
                        "an integer between 1 and 12 (inclusive)",
                    ));
                }
                InstancePolicyData::Rotation {
                    interval_month: Some(a.interval_month as u8),
                }
            }
            (false, _) => InstancePolicyData::Rotation {
                interval_month: None,
            },
        },
    };
    Ok(InstancePolicyInput {
        policy_type,
        enabled,
        data,
    })
}

const INSTANCE_POLICIES: [&str; 6] = [
    "dualAuthDelete",
    "metrics",
    "allowedNetwork",
    "allowedIP",
    "keyCreateImportAccess",
    "rotation",
];

pub async fn put_instance_policies(
    State(st): State<AppState>,
    ctx: Ctx,
    RawQuery(q): RawQuery,
    RawBody(bytes): RawBody,
) -> Response {
    run("Instance policies could not be set", async move {
        ctx.require(Permission::ManagePolicies)?;
        let only = policy_param(&q, &INSTANCE_POLICIES)?;
        let resources = body::resources(body::parse(&bytes)?)?;
        if only.is_some() && resources.len() != 1 {
            return Err(Error::new(
                Reason::NumCollectionResource,
                "Exactly one policy resource is allowed with ?policy=",
            )
            .into());
        }
        let mut inputs = Vec::new();
        for r in resources {
            let p = parse_instance_policy(r)?;
            if only.is_some_and(|o| o != p.policy_type.name()) {
                return Err(Error::new(
                    Reason::BodyQueryParamMismatch,
                    "The policy_type in the body does not match the policy query parameter",
                )
                .into());
            }
            if inputs
                .iter()
                .any(|i: &InstancePolicyInput| i.policy_type == p.policy_type)
            {
                return Err(Error::bad_body("Each policy type may appear only once").into());
            }
            inputs.push(p);
        }
        let instance_id = ctx.instance.id.clone();
        let principal = ctx.principal.clone();
        blocking(&st, move |svc| {
            svc.set_instance_policies(&instance_id, &principal, inputs)
        })
        .await?;
        Ok(no_content())
    })
    .await
}

pub async fn get_instance_policies(
    State(st): State<AppState>,
    ctx: Ctx,
    RawQuery(q): RawQuery,
) -> Response {
    run("Instance policies could not be retrieved", async move {
        ctx.require(Permission::ManagePolicies)?;
        let only = policy_param(&q, &INSTANCE_POLICIES)?;
        let policies = st.instance_policies(&ctx.instance.id).await?;
        let resources = policies
            .list
            .iter()
            .filter(|p| only.is_none_or(|o| o == p.policy_type.name()))
            .map(render::instance_policy)
            .collect();
        Ok(reply(
            &st,
            StatusCode::OK,
            Body::Json,
            &render::collection(POLICY_TYPE, resources, None),
        ))
    })
    .await
}

pub async fn allowed_ip_port(State(st): State<AppState>, ctx: Ctx) -> Response {
    run("Allowed IP port could not be retrieved", async move {
        ctx.require(Permission::ManagePolicies)?;
        let policies = st.instance_policies(&ctx.instance.id).await?;
        let active = policies.allowed_networks.is_some();
        let resources = if active {
            vec![json!({"private_endpoint_port": st.0.port})]
        } else {
            vec![]
        };
        let body = render::collection(
            "application/vnd.ibm.kms.allowed_ip_metadata+json",
            resources,
            None,
        );
        Ok(reply(&st, StatusCode::OK, Body::Json, &body))
    })
    .await
}
