//! Service-to-service authorization: a service instance (a storage service
//! presenting a credential from `POST /v2/resource_keys`) holds on a kms
//! instance exactly the roles its account's authorizations grant
//! (source service/instance → target kms/instance), and no platform role.
//! Every other principal is decided by the inner authorizer.

use std::sync::Arc;

use keyhold_core::access::{PlatformRoles, Roles};
use keyhold_core::model::Instance;
use keyhold_core::resource::service_instance_of;
use keyhold_core::{Error, Result};

use super::{Authorizer, Principal, PrincipalKind};
use crate::service::Service;

pub struct S2sAuthorizer {
    pub inner: Arc<dyn Authorizer>,
    /// Where the authorizations are: the service's in-memory directory, which
    /// the request extractor makes current before it asks for roles (so this
    /// never touches the store on the request path).
    pub svc: Arc<Service>,
}

fn is_service_instance(principal: &Principal) -> bool {
    principal.kind == PrincipalKind::Service && service_instance_of(&principal.id).is_some()
}

impl Authorizer for S2sAuthorizer {
    fn roles(&self, principal: &Principal, instance: &Instance) -> Result<Roles> {
        if !is_service_instance(principal) {
            return self.inner.roles(principal, instance);
        }
        if principal.account_id != instance.account_id {
            return Err(Error::unauthorized());
        }
        let dir = self
            .svc
            .latest_directory()
            .ok_or_else(|| Error::unavailable("The instance directory is not loaded yet; retry"))?;
        match dir.service_instance_roles(&principal.id, instance) {
            Some(roles) if roles != Roles::NONE => Ok(roles),
            _ => Err(Error::unauthorized()),
        }
    }

    fn key_roles(
        &self,
        principal: &Principal,
        instance: &Instance,
        ring_id: &str,
        key_id: Option<&str>,
    ) -> Result<Roles> {
        // Authorizations grant on whole instances: a service instance has no
        // ring- or key-scoped roles beyond them. Everyone else's come from IAM.
        if is_service_instance(principal) {
            return self.roles(principal, instance);
        }
        self.inner.key_roles(principal, instance, ring_id, key_id)
    }

    fn platform_roles(
        &self,
        principal: &Principal,
        account_id: &str,
        instance_id: Option<&str>,
    ) -> Result<PlatformRoles> {
        if is_service_instance(principal) {
            return Ok(PlatformRoles::NONE);
        }
        self.inner
            .platform_roles(principal, account_id, instance_id)
    }
}
