//! IAM access policies in IBM Cloud IAM's shape (`/v1/policies`): strict
//! parsing of the request body, and what a set of policies grants a caller on
//! an account, an instance, a key ring or one key.
//!
//! A policy has one subject (an `iam_id` or an `access_group_id`), roles
//! (service roles `…::::serviceRole:X`, platform roles `…::::role:X`) and one
//! resource: `accountId` plus optional `serviceName`, `serviceInstance`, and
//! `resourceType` (`key-ring`|`key`) with `resource`. A missing attribute
//! means "all": no `serviceName` is every service of the account.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::access::{PlatformRole, PlatformRoles, Role, Roles};

/// Services whose instances serve the Key Protect API here.
pub const SERVICES: &[&str] = &["kms", "hs-crypto"];

/// Why a policy body was refused; the api turns it into a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

fn bad<T>(msg: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnyRole {
    Service(#[serde(with = "role_name")] Role),
    Platform(#[serde(with = "platform_name")] PlatformRole),
}

const SERVICE_ROLES: &[(&str, Role)] = &[
    ("Reader", Role::Reader),
    ("ReaderPlus", Role::ReaderPlus),
    ("Writer", Role::Writer),
    ("Manager", Role::Manager),
    ("KeyPurge", Role::KeyPurge),
    ("KmipAdapterManager", Role::KmipAdapterManager),
];

const PLATFORM_ROLES: &[(&str, PlatformRole)] = &[
    ("Viewer", PlatformRole::Viewer),
    ("Operator", PlatformRole::Operator),
    ("Editor", PlatformRole::Editor),
    ("Administrator", PlatformRole::Administrator),
];

mod role_name {
    use super::*;
    pub fn serialize<S: serde::Serializer>(r: &Role, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::service_role_name(*r))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let n = String::deserialize(d)?;
        SERVICE_ROLES
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, r)| *r)
            .ok_or_else(|| serde::de::Error::custom("unknown service role"))
    }
}

mod platform_name {
    use super::*;
    pub fn serialize<S: serde::Serializer>(r: &PlatformRole, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::platform_role_name(*r))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PlatformRole, D::Error> {
        let n = String::deserialize(d)?;
        PLATFORM_ROLES
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, r)| *r)
            .ok_or_else(|| serde::de::Error::custom("unknown platform role"))
    }
}

pub fn service_role_name(r: Role) -> &'static str {
    SERVICE_ROLES
        .iter()
        .find(|(_, x)| *x == r)
        .map(|(n, _)| *n)
        .unwrap_or("Reader")
}

pub fn platform_role_name(r: PlatformRole) -> &'static str {
    PLATFORM_ROLES
        .iter()
        .find(|(_, x)| *x == r)
        .map(|(n, _)| *n)
        .unwrap_or("Viewer")
}

impl AnyRole {
    /// IBM's role CRN: `crn:v1:bluemix:public:iam::::serviceRole:Reader`,
    /// `crn:v1:bluemix:public:iam::::role:Administrator`.
    pub fn crn(self) -> String {
        match self {
            AnyRole::Service(r) => {
                format!(
                    "crn:v1:bluemix:public:iam::::serviceRole:{}",
                    service_role_name(r)
                )
            }
            AnyRole::Platform(r) => {
                format!(
                    "crn:v1:bluemix:public:iam::::role:{}",
                    platform_role_name(r)
                )
            }
        }
    }

    /// Parses a role CRN. Service roles are accepted under `iam` and under the
    /// services' own names (`kms`, `hs-crypto`), as IBM writes service-defined roles.
    pub fn parse(crn: &str) -> Option<AnyRole> {
        let rest = crn.strip_prefix("crn:v1:bluemix:public:")?;
        let (service, rest) = rest.split_once("::::")?;
        let (kind, name) = rest.split_once(':')?;
        match kind {
            "serviceRole" if service == "iam" || SERVICES.contains(&service) => SERVICE_ROLES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, r)| AnyRole::Service(*r)),
            "role" if service == "iam" => PLATFORM_ROLES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, r)| AnyRole::Platform(*r)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Subject {
    IamId(String),
    AccessGroup(String),
}

impl Subject {
    pub fn id(&self) -> &str {
        match self {
            Subject::IamId(s) | Subject::AccessGroup(s) => s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceType {
    KeyRing,
    Key,
}

/// What a policy covers. `None` fields mean "all".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub account_id: String,
    pub service_name: Option<String>,
    pub service_instance: Option<String>,
    /// A key ring or key, with its id.
    pub within: Option<(ResourceType, String)>,
}

/// A validated access policy (what is stored; rendered back in IBM's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub subject: Subject,
    pub roles: Vec<AnyRole>,
    pub resource: Resource,
    pub description: String,
    pub created_at: i64,
    pub created_by_id: String,
}

fn attrs(v: &Value, what: &str) -> Result<Vec<(String, String)>, PolicyError> {
    let Some(obj) = v.as_object() else {
        return bad(format!("each of `{what}` must be an object"));
    };
    for k in obj.keys() {
        if k != "attributes" {
            return bad(format!("unknown field `{k}` in `{what}`"));
        }
    }
    let Some(list) = obj.get("attributes").and_then(Value::as_array) else {
        return bad(format!("`{what}` needs an `attributes` list"));
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for a in list {
        let Some(a) = a.as_object() else {
            return bad(format!("each attribute of `{what}` must be an object"));
        };
        for k in a.keys() {
            if !["name", "value", "operator"].contains(&k.as_str()) {
                return bad(format!("unknown field `{k}` in an attribute of `{what}`"));
            }
        }
        if let Some(op) = a.get("operator") {
            if op.as_str() != Some("stringEquals") {
                return bad("the only attribute operator supported is `stringEquals`");
            }
        }
        let (Some(name), Some(value)) = (
            a.get("name").and_then(Value::as_str),
            a.get("value").and_then(Value::as_str),
        ) else {
            return bad(format!(
                "each attribute of `{what}` needs a string `name` and `value`"
            ));
        };
        if value.is_empty() || value.len() > 256 || value.chars().any(char::is_whitespace) {
            return bad(format!(
                "the value of attribute `{name}` must be 1 to 256 characters without spaces"
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return bad(format!("attribute `{name}` appears twice in `{what}`"));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

fn single<'a>(body: &'a Value, field: &str) -> Result<&'a Value, PolicyError> {
    match body.get(field).and_then(Value::as_array).map(Vec::as_slice) {
        Some([one]) => Ok(one),
        _ => bad(format!("`{field}` must be a list of exactly one element")),
    }
}

/// The parts of a policy a request supplies, validated.
pub struct PolicyInput {
    pub subject: Subject,
    pub roles: Vec<AnyRole>,
    pub resource: Resource,
    pub description: String,
}

/// Parses a `POST /v1/policies` body strictly: unknown fields, attributes and
/// roles are refused, and roles must fit the scope.
pub fn parse_policy(body: &Value) -> Result<PolicyInput, PolicyError> {
    let Some(obj) = body.as_object() else {
        return bad("the body must be a JSON object");
    };
    for k in obj.keys() {
        if !["type", "subjects", "roles", "resources", "description"].contains(&k.as_str()) {
            return bad(format!("unknown field `{k}`"));
        }
    }
    if obj.get("type").and_then(Value::as_str) != Some("access") {
        return bad("`type` must be `access`");
    }
    let description = match obj.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.len() <= 300 => s.clone(),
        _ => return bad("`description` must be a string of at most 300 characters"),
    };
    let subject = match attrs(single(body, "subjects")?, "subjects")?.as_slice() {
        [(n, v)] if n == "iam_id" => Subject::IamId(v.clone()),
        [(n, v)] if n == "access_group_id" => Subject::AccessGroup(v.clone()),
        _ => {
            return bad("a subject must have exactly one attribute, `iam_id` or `access_group_id`")
        }
    };
    let Some(role_list) = obj.get("roles").and_then(Value::as_array) else {
        return bad("`roles` must be a non-empty list");
    };
    if role_list.is_empty() || role_list.len() > 16 {
        return bad("`roles` must be a list of 1 to 16 roles");
    }
    let mut roles = Vec::new();
    for r in role_list {
        let crn = r
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("role_id"))
            .and_then(Value::as_str);
        let Some(crn) = crn else {
            return bad("each role must be an object with only a `role_id`");
        };
        let Some(role) = AnyRole::parse(crn) else {
            return bad(format!("unknown role `{crn}`"));
        };
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    let mut account_id = None;
    let mut service_name = None;
    let mut service_instance = None;
    let mut resource_type = None;
    let mut resource_id = None;
    for (name, value) in attrs(single(body, "resources")?, "resources")? {
        match name.as_str() {
            "accountId" => account_id = Some(value),
            "serviceName" => {
                if !SERVICES.contains(&value.as_str()) {
                    return bad(format!(
                        "`serviceName` must be one of {}",
                        SERVICES.join(", ")
                    ));
                }
                service_name = Some(value)
            }
            "serviceInstance" => service_instance = Some(value),
            "resourceType" => {
                resource_type = Some(match value.as_str() {
                    "key-ring" => ResourceType::KeyRing,
                    "key" => ResourceType::Key,
                    _ => return bad("`resourceType` must be `key-ring` or `key`"),
                })
            }
            "resource" => resource_id = Some(value),
            other => return bad(format!("unknown resource attribute `{other}`")),
        }
    }
    let Some(account_id) = account_id else {
        return bad("the resource needs an `accountId` attribute");
    };
    if service_instance.is_some() && service_name.is_none() {
        return bad("`serviceInstance` needs `serviceName`");
    }
    let within = match (resource_type, resource_id) {
        (None, None) => None,
        (Some(t), Some(r)) => {
            if service_instance.is_none() {
                return bad("`resourceType` needs `serviceInstance`");
            }
            Some((t, r))
        }
        _ => return bad("`resourceType` and `resource` go together"),
    };
    if within.is_some() && roles.iter().any(|r| matches!(r, AnyRole::Platform(_))) {
        return bad("platform roles apply to an account, a service or an instance, not to a key ring or key");
    }
    Ok(PolicyInput {
        subject,
        roles,
        resource: Resource {
            account_id,
            service_name,
            service_instance,
            within,
        },
        description,
    })
}

impl Policy {
    /// The policy in IBM's JSON shape.
    pub fn to_json(&self) -> Value {
        let subject = match &self.subject {
            Subject::IamId(v) => json!({"name": "iam_id", "value": v}),
            Subject::AccessGroup(v) => json!({"name": "access_group_id", "value": v}),
        };
        let mut attrs = vec![json!({"name": "accountId", "value": self.resource.account_id})];
        if let Some(s) = &self.resource.service_name {
            attrs.push(json!({"name": "serviceName", "value": s}));
        }
        if let Some(s) = &self.resource.service_instance {
            attrs.push(json!({"name": "serviceInstance", "value": s}));
        }
        if let Some((t, r)) = &self.resource.within {
            let t = match t {
                ResourceType::KeyRing => "key-ring",
                ResourceType::Key => "key",
            };
            attrs.push(json!({"name": "resourceType", "value": t}));
            attrs.push(json!({"name": "resource", "value": r}));
        }
        json!({
            "id": self.id,
            "type": "access",
            "description": self.description,
            "subjects": [{"attributes": [subject]}],
            "roles": self.roles.iter().map(|r| json!({"role_id": r.crn()})).collect::<Vec<_>>(),
            "resources": [{"attributes": attrs}],
            "created_at": crate::timefmt::format(self.created_at),
            "created_by_id": self.created_by_id,
        })
    }

    fn covers_service(&self, account_id: &str) -> bool {
        self.resource.account_id == account_id
            && self
                .resource
                .service_name
                .as_deref()
                .is_none_or(|s| SERVICES.contains(&s))
    }

    // Folded without allocating: this runs on every authorized request.
    fn service_roles(&self) -> Roles {
        self.roles.iter().fold(Roles::NONE, |acc, r| match r {
            AnyRole::Service(s) => acc.union(Roles::of(&[*s])),
            AnyRole::Platform(_) => acc,
        })
    }

    fn platform_roles(&self) -> PlatformRoles {
        self.roles
            .iter()
            .fold(PlatformRoles::NONE, |acc, r| match r {
                AnyRole::Platform(p) => acc.union(PlatformRoles::of(&[*p])),
                AnyRole::Service(_) => acc,
            })
    }
}

/// Where a request acts: an instance, and the key ring and key when known.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub account_id: &'a str,
    pub instance_id: &'a str,
    pub ring: Option<&'a str>,
    pub key: Option<&'a str>,
}

/// The union of the service roles `policies` grant on `target`. A key-ring
/// policy counts only when the target's ring is that ring, a key policy only
/// for that key: a grant on ring A gives nothing on ring B's keys.
pub fn service_roles<'a>(policies: impl Iterator<Item = &'a Policy>, t: Target<'_>) -> Roles {
    policies
        .filter(|p| p.covers_service(t.account_id))
        .filter(|p| {
            p.resource
                .service_instance
                .as_deref()
                .is_none_or(|i| i == t.instance_id)
        })
        .filter(|p| match &p.resource.within {
            None => true,
            Some((ResourceType::KeyRing, r)) => t.ring == Some(r.as_str()),
            Some((ResourceType::Key, k)) => t.key == Some(k.as_str()),
        })
        .fold(Roles::NONE, |acc, p| acc.union(p.service_roles()))
}

/// The platform roles `policies` grant in `account_id`: on one instance, or
/// (`instance_id` None) those granted beyond any single instance.
pub fn platform_roles<'a>(
    policies: impl Iterator<Item = &'a Policy>,
    account_id: &str,
    instance_id: Option<&str>,
) -> PlatformRoles {
    policies
        .filter(|p| p.resource.account_id == account_id && p.resource.within.is_none())
        .filter(|p| match (instance_id, &p.resource.service_instance) {
            (_, None) => p.covers_service(account_id),
            (Some(i), Some(pi)) => i == pi,
            (None, Some(_)) => false,
        })
        .fold(PlatformRoles::NONE, |acc, p| acc.union(p.platform_roles()))
}

/// Administrator on the whole account (no `serviceName`): may manage IAM.
pub fn account_admin<'a>(policies: impl Iterator<Item = &'a Policy>, account_id: &str) -> bool {
    policies
        .filter(|p| {
            p.resource.account_id == account_id
                && p.resource.service_name.is_none()
                && p.resource.service_instance.is_none()
        })
        .any(|p| p.platform_roles().may_administer())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(roles: &[&str], res: Value) -> Value {
        json!({"type": "access", "subjects": [{"attributes": [{"name": "iam_id", "value": "u1"}]}],
            "roles": roles.iter().map(|r| json!({"role_id": r})).collect::<Vec<_>>(),
            "resources": [{"attributes": res}]})
    }

    fn policy(roles: &[&str], res: Value) -> Policy {
        let i = parse_policy(&body(roles, res)).unwrap();
        Policy {
            id: "p".into(),
            subject: i.subject,
            roles: i.roles,
            resource: i.resource,
            description: String::new(),
            created_at: 0,
            created_by_id: String::new(),
        }
    }

    const READER: &str = "crn:v1:bluemix:public:iam::::serviceRole:Reader";
    const ADMIN: &str = "crn:v1:bluemix:public:iam::::role:Administrator";

    #[test]
    fn ring_grants_stay_in_their_ring() {
        let p = policy(
            &[READER],
            json!([{"name":"accountId","value":"a"},{"name":"serviceName","value":"kms"},
                {"name":"serviceInstance","value":"i"},{"name":"resourceType","value":"key-ring"},{"name":"resource","value":"A"}]),
        );
        let t = |ring, inst| Target {
            account_id: "a",
            instance_id: inst,
            ring,
            key: Some("k"),
        };
        assert!(service_roles([&p].into_iter(), t(Some("A"), "i")).has(Role::Reader));
        assert_eq!(
            service_roles([&p].into_iter(), t(Some("B"), "i")),
            Roles::NONE
        );
        assert_eq!(service_roles([&p].into_iter(), t(None, "i")), Roles::NONE);
        assert_eq!(
            service_roles([&p].into_iter(), t(Some("A"), "j")),
            Roles::NONE
        );
    }

    #[test]
    fn account_policies_cover_every_instance_and_admin() {
        let p = policy(&[READER, ADMIN], json!([{"name":"accountId","value":"a"}]));
        let t = Target {
            account_id: "a",
            instance_id: "x",
            ring: None,
            key: None,
        };
        assert!(service_roles([&p].into_iter(), t).has(Role::Reader));
        assert!(platform_roles([&p].into_iter(), "a", None).may_administer());
        assert!(account_admin([&p].into_iter(), "a"));
        assert!(!account_admin([&p].into_iter(), "b"));
        let other = Target {
            account_id: "b",
            ..t
        };
        assert_eq!(service_roles([&p].into_iter(), other), Roles::NONE);
    }

    #[test]
    fn strict_validation() {
        let acct = json!([{"name":"accountId","value":"a"}]);
        assert!(parse_policy(&body(
            &["crn:v1:bluemix:public:iam::::serviceRole:Boss"],
            acct.clone()
        ))
        .is_err());
        assert!(parse_policy(&body(
            &[READER],
            json!([{"name":"accountId","value":"a"},{"name":"region","value":"x"}])
        ))
        .is_err());
        assert!(parse_policy(&body(
            &[READER],
            json!([{"name":"serviceName","value":"kms"}])
        ))
        .is_err());
        assert!(parse_policy(&body(&[], acct.clone())).is_err());
        assert!(parse_policy(&body(
            &[ADMIN],
            json!([{"name":"accountId","value":"a"},{"name":"serviceName","value":"kms"},
                {"name":"serviceInstance","value":"i"},{"name":"resourceType","value":"key"},{"name":"resource","value":"k"}])
        ))
        .is_err());
        let mut b = body(&[READER], acct);
        b["type"] = json!("authorization");
        assert!(parse_policy(&b).is_err());
        assert!(AnyRole::parse("crn:v1:bluemix:public:kms::::serviceRole:KeyPurge").is_some());
        for (n, _) in SERVICE_ROLES {
            let r =
                AnyRole::parse(&format!("crn:v1:bluemix:public:iam::::serviceRole:{n}")).unwrap();
            assert_eq!(AnyRole::parse(&r.crn()), Some(r));
        }
    }
}
