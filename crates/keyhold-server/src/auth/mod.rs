//! Authentication: API keys exchanged for signed access tokens, and the
//! principal a verified token stands for. Authorization (IAM policies) plugs in
//! at [`Authorizer`].

pub mod apikey;
pub mod token;

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

/// What a request wants to do, for authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Ordinary key-management calls.
    Manage,
    /// Service-to-service calls (registration writes, event acknowledgement).
    ServiceToService,
}

/// Decides whether a principal may act on an instance. The dev authorizer lets
/// an account's principals do everything in the account's instances; IAM
/// access policies replace it.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(
        &self,
        principal: &Principal,
        instance_account: &str,
        access: Access,
    ) -> Result<()>;
}

pub struct AccountAuthorizer;

impl Authorizer for AccountAuthorizer {
    fn authorize(
        &self,
        principal: &Principal,
        instance_account: &str,
        access: Access,
    ) -> Result<()> {
        if principal.account_id != instance_account {
            return Err(Error::unauthorized());
        }
        if access == Access::ServiceToService && principal.kind != PrincipalKind::Service {
            return Err(Error::new(
                Reason::ServiceOnly,
                "Only a service may perform this action",
            ));
        }
        Ok(())
    }
}
