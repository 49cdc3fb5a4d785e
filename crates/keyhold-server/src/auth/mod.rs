//! Authentication: API keys exchanged for signed access tokens, and the
//! principal a verified token stands for. Authorization (IAM policies) plugs in
//! at [`Authorizer`].

pub mod apikey;
pub mod s2s;
pub mod token;

use std::sync::Arc;

use keyhold_core::access::{PlatformRoles, Role, Roles};
use keyhold_core::iam::Target;
use keyhold_core::model::Instance;
use keyhold_core::{Error, Reason, Result};

use crate::service::Service;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    Service,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(PrincipalKind::User),
            "service" => Some(PrincipalKind::Service),
            _ => None,
        }
    }
}

/// Who is calling, as established by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalKind,
    pub account_id: String,
}

/// Decides which service roles a principal holds on an instance. The dev
/// authorizer gives an account's users every role in the account's instances
/// and its service IDs Reader (what a service-to-service authorization grants);
/// IAM access policies replace it.
pub trait Authorizer: Send + Sync + 'static {
    /// The service roles `principal` holds on `instance` (Key Protect actions).
    fn roles(&self, principal: &Principal, instance: &Instance) -> Result<Roles>;

    /// The service roles `principal` holds on one key ring of `instance`, or on
    /// one key (`key_id`) in that ring: instance-wide roles plus any granted on
    /// that ring or key. Only consulted when the instance-wide roles fall short.
    fn key_roles(
        &self,
        principal: &Principal,
        instance: &Instance,
        ring_id: &str,
        key_id: Option<&str>,
    ) -> Result<Roles> {
        let _ = (ring_id, key_id);
        self.roles(principal, instance)
    }

    /// The platform roles `principal` holds in `account_id`, on `instance_id`
    /// when given (one instance), else account-wide (creating instances,
    /// managing IAM).
    fn platform_roles(
        &self,
        principal: &Principal,
        account_id: &str,
        instance_id: Option<&str>,
    ) -> Result<PlatformRoles>;
}

pub struct AccountAuthorizer;

impl Authorizer for AccountAuthorizer {
    fn roles(&self, principal: &Principal, instance: &Instance) -> Result<Roles> {
        if principal.account_id != instance.account_id {
            return Err(Error::unauthorized());
        }
        Ok(match principal.kind {
            PrincipalKind::User => Roles::of(&[
                Role::Reader,
                Role::ReaderPlus,
                Role::Writer,
                Role::Manager,
                Role::KeyPurge,
                Role::KmipAdapterManager,
            ]),
            PrincipalKind::Service => Roles::of(&[Role::Reader]),
        })
    }

    fn platform_roles(
        &self,
        principal: &Principal,
        account_id: &str,
        _instance_id: Option<&str>,
    ) -> Result<PlatformRoles> {
        Ok(
            if principal.account_id == account_id && principal.kind == PrincipalKind::User {
                PlatformRoles::ALL
            } else {
                PlatformRoles::NONE
            },
        )
    }
}

/// Authorization by IAM access policies (direct and through access groups),
/// read from the node's per-account cache: the request path touches no database
/// unless an IAM write (here, or on another node: the store's change notice,
/// within the 1 s bound) dropped the account's entry.
pub struct PolicyAuthorizer {
    svc: Arc<Service>,
}

impl PolicyAuthorizer {
    pub fn new(svc: Arc<Service>) -> Self {
        PolicyAuthorizer { svc }
    }

    /// The account's access from the node's cache. The api layer loads it on the
    /// blocking pool before it asks (so this is a memory read); should the entry be
    /// gone meanwhile (an IAM write, a lapsed lease), it is read here, outside the async
    /// worker's context, since a store client may block or run its own runtime.
    fn access(&self, account_id: &str) -> Result<Arc<crate::service::AccountAccess>> {
        if let Some(a) = self.svc.cached_account_access(account_id) {
            return Ok(a);
        }
        let load = || self.svc.account_access(account_id);
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(load),
            _ => load(),
        }
    }

    fn service_roles(
        &self,
        principal: &Principal,
        instance: &Instance,
        ring: Option<&str>,
        key: Option<&str>,
    ) -> Result<Roles> {
        if principal.account_id != instance.account_id {
            return Err(Error::unauthorized());
        }
        let access = self.access(&principal.account_id)?;
        Ok(access.service_roles(
            &principal.id,
            Target {
                account_id: &instance.account_id,
                instance_id: &instance.id,
                ring,
                key,
            },
        ))
    }
}

impl Authorizer for PolicyAuthorizer {
    fn roles(&self, principal: &Principal, instance: &Instance) -> Result<Roles> {
        self.service_roles(principal, instance, None, None)
    }

    fn key_roles(
        &self,
        principal: &Principal,
        instance: &Instance,
        ring_id: &str,
        key_id: Option<&str>,
    ) -> Result<Roles> {
        self.service_roles(principal, instance, Some(ring_id), key_id)
    }

    fn platform_roles(
        &self,
        principal: &Principal,
        account_id: &str,
        instance_id: Option<&str>,
    ) -> Result<PlatformRoles> {
        if principal.account_id != account_id {
            return Ok(PlatformRoles::NONE);
        }
        let access = self.access(account_id)?;
        Ok(access.platform_roles(&principal.id, account_id, instance_id))
    }
}

/// Service-to-service calls (registration writes) are for services only.
pub fn require_service(principal: &Principal) -> Result<()> {
    if principal.kind != PrincipalKind::Service {
        return Err(Error::new(
            Reason::ServiceOnly,
            "Only a service may perform this action",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use keyhold_core::access::{PlatformRole, Role};
    use keyhold_core::iam::AnyRole;
    use keyhold_core::rules::TimingRules;
    use keyhold_crypto::SoftUnit;
    use keyhold_store::{SqliteStore, Store};
    use zeroize::Zeroizing;

    use super::*;
    use crate::service::bootstrap_policy;

    fn instance(account: &str) -> Instance {
        Instance::kms("i1".into(), "n".into(), account.into(), "local".into(), 0)
    }

    #[test]
    fn roles_come_from_policies_and_never_cross_accounts() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let roles = [
            AnyRole::Service(Role::Writer),
            AnyRole::Platform(PlatformRole::Editor),
        ];
        store
            .insert_iam_object(&bootstrap_policy("a", "p1", "u1", &roles).unwrap())
            .unwrap();
        let unit = Arc::new(SoftUnit::new(Zeroizing::new([1u8; 32]), 4));
        let svc = Arc::new(Service::new(store, unit, TimingRules::default()));
        let authz = PolicyAuthorizer::new(svc);
        let user = |account: &str| Principal {
            id: "u1".into(),
            kind: PrincipalKind::User,
            account_id: account.into(),
        };
        let r = authz.roles(&user("a"), &instance("a")).unwrap();
        assert!(r.has(Role::Writer) && !r.has(Role::Manager));
        assert!(authz
            .platform_roles(&user("a"), "a", None)
            .unwrap()
            .may_edit());
        // The same id in another account (a token of another account) gets nothing.
        assert!(authz.roles(&user("b"), &instance("a")).is_err());
        assert_eq!(
            authz.platform_roles(&user("b"), "a", None).unwrap(),
            PlatformRoles::NONE
        );
        let other = Principal {
            id: "u2".into(),
            ..user("a")
        };
        assert_eq!(authz.roles(&other, &instance("a")).unwrap(), Roles::NONE);
    }
}
