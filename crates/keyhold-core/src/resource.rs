//! The resource controller's rules: which services and plans exist, and what a
//! service-to-service authorization grants (DESIGN §1, steps 1–4).

use serde::{Deserialize, Serialize};

use crate::access::{Role, Roles};
use crate::model::{Instance, PrincipalId};
use crate::timefmt::Timestamp;

/// Key-management instances: the Key Protect API (`Bluemix-Instance`).
pub const SERVICE_KMS: &str = "kms";
/// Crypto instances: crypto units sharing one master key.
pub const SERVICE_HS_CRYPTO: &str = "hs-crypto";
/// Crypto units an `hs-crypto` instance may have (HPCS offers 1–3 per region;
/// a bound keeps a typo from asking for thousands).
pub const MAX_UNITS: u32 = 8;
/// The prefix of a service instance's principal id (IBM's `iam_id` form
/// `crn-<instance CRN>`), held by credentials made with `POST /v2/resource_keys`.
pub const SERVICE_INSTANCE_PRINCIPAL: &str = "crn-";

/// Service names: lower-case letters, digits and `-`, starting with a letter.
pub fn valid_service_name(s: &str) -> bool {
    (2..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A `kms` instance's plan follows from its binding: dedicated (KYOK) when bound
/// to a crypto instance, standard (the shared unit, BYOK) otherwise.
pub fn plan_of(instance: &Instance) -> &'static str {
    if instance.service == SERVICE_KMS && instance.crypto_instance.is_some() {
        "dedicated"
    } else {
        "standard"
    }
}

/// `<service>-<plan>`, the plan ids this resource controller knows.
pub fn plan_id(instance: &Instance) -> String {
    format!("{}-{}", instance.service, plan_of(instance))
}

/// Splits a plan id into service and plan (`kms-dedicated` → `kms`, `dedicated`).
pub fn split_plan_id(plan_id: &str) -> Option<(&str, &str)> {
    let (service, plan) = plan_id.rsplit_once('-')?;
    (valid_service_name(service) && (plan == "standard" || plan == "dedicated"))
        .then_some((service, plan))
}

/// The instance guid a principal id names when it is a service instance's
/// (`crn-crn:v1:keyhold:private:<service>:<region>:a/<account>:<guid>::`).
pub fn service_instance_of(principal_id: &str) -> Option<&str> {
    let crn = principal_id.strip_prefix(SERVICE_INSTANCE_PRINCIPAL)?;
    let guid = crn.strip_prefix("crn:v1:")?.split(':').nth(5)?;
    (!guid.is_empty()).then_some(guid)
}

/// The principal id of a service instance's credentials.
pub fn service_instance_principal(instance: &Instance) -> String {
    format!("{SERVICE_INSTANCE_PRINCIPAL}{}", instance.crn())
}

/// The service roles an authorization may grant, by name.
pub fn service_role(name: &str) -> Option<Role> {
    Some(match name {
        "Reader" => Role::Reader,
        "ReaderPlus" => Role::ReaderPlus,
        "Writer" => Role::Writer,
        "Manager" => Role::Manager,
        _ => return None,
    })
}

/// One side of an authorization: a service, or one instance of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub service_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

impl Party {
    fn matches(&self, service: &str, instance_id: &str) -> bool {
        self.service_name == service && self.instance_id.as_deref().is_none_or(|i| i == instance_id)
    }
}

/// A service-to-service authorization: instances of `source` may act on
/// `target` with `roles` (IBM's authorization policies, in one account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub id: String,
    pub account_id: String,
    pub source: Party,
    pub target: Party,
    pub roles: Vec<String>,
    pub created_at: Timestamp,
    pub created_by: PrincipalId,
}

/// The service roles instance `source` holds on instance `target` through
/// `authorizations` (their union; only those of the instances' own account).
pub fn granted_roles<'a>(
    authorizations: impl IntoIterator<Item = &'a Authorization>,
    source: &Instance,
    target: &Instance,
) -> Roles {
    let mut roles: Vec<Role> = Vec::new();
    if source.account_id != target.account_id {
        return Roles::NONE;
    }
    for a in authorizations {
        if a.account_id == source.account_id
            && a.source.matches(&source.service, &source.id)
            && a.target.matches(&target.service, &target.id)
        {
            roles.extend(a.roles.iter().filter_map(|r| service_role(r)));
        }
    }
    Roles::of(&roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(service: &str, id: &str, account: &str) -> Instance {
        let mut i = Instance::kms(id.into(), "n".into(), account.into(), "local".into(), 0);
        i.service = service.into();
        i
    }

    fn auth(
        source: (&str, Option<&str>),
        target: (&str, Option<&str>),
        roles: &[&str],
    ) -> Authorization {
        let party = |(s, i): (&str, Option<&str>)| Party {
            service_name: s.into(),
            instance_id: i.map(str::to_string),
        };
        Authorization {
            id: "a".into(),
            account_id: "acct".into(),
            source: party(source),
            target: party(target),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            created_at: 0,
            created_by: "u".into(),
        }
    }

    #[test]
    fn authorizations_grant_the_union_of_matching_roles() {
        let cos = inst("cloud-object-storage", "c1", "acct");
        let kms = inst("kms", "k1", "acct");
        let other_kms = inst("kms", "k2", "acct");
        let auths = vec![
            auth(
                ("cloud-object-storage", Some("c1")),
                ("kms", Some("k1")),
                &["Reader"],
            ),
            auth(
                ("cloud-object-storage", None),
                ("kms", Some("k1")),
                &["Writer"],
            ),
            auth(
                ("cloud-object-storage", Some("c9")),
                ("kms", None),
                &["Manager"],
            ),
        ];
        let r = granted_roles(&auths, &cos, &kms);
        assert!(r.has(Role::Reader) && r.has(Role::Writer) && !r.has(Role::Manager));
        assert_eq!(granted_roles(&auths, &cos, &other_kms), Roles::NONE);
        let foreign = inst("cloud-object-storage", "c1", "other");
        assert_eq!(granted_roles(&auths, &foreign, &kms), Roles::NONE);
    }

    #[test]
    fn service_instance_principals_name_their_guid() {
        let cos = inst("cloud-object-storage", "c1", "acct");
        let p = service_instance_principal(&cos);
        assert_eq!(service_instance_of(&p), Some("c1"));
        assert_eq!(service_instance_of("dev-service"), None);
        assert_eq!(service_instance_of("crn-nonsense"), None);
    }

    #[test]
    fn plans_and_names() {
        assert_eq!(split_plan_id("kms-dedicated"), Some(("kms", "dedicated")));
        assert_eq!(
            split_plan_id("hs-crypto-standard"),
            Some(("hs-crypto", "standard"))
        );
        assert_eq!(split_plan_id("kms-gold"), None);
        assert!(valid_service_name("cloud-object-storage"));
        assert!(
            !valid_service_name("Kms") && !valid_service_name("k") && !valid_service_name("1kms")
        );
    }
}
