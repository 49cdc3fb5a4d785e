//! Authentication: API keys exchanged for signed access tokens, and the
//! principal a verified token stands for. Authorization (IAM policies) plugs in
//! at [`Authorizer`].

pub mod apikey;
pub mod s2s;
pub mod token;

use keyhold_core::access::{PlatformRoles, Role, Roles};
use keyhold_core::model::Instance;
use keyhold_core::{Error, Reason, Result};

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
