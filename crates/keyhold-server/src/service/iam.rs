//! IAM in Keyhold's small form: users, service IDs, access groups and their
//! members, access policies and API keys of an account, kept as store IAM
//! objects, and each account's access (policies + memberships) cached per node
//! for the request path. Every IAM write forgets the account's cached access
//! here, and other nodes forget it on the store's change notice.

use std::collections::HashMap;
use std::sync::Arc;

use keyhold_core::access::{PlatformRoles, Roles};
use keyhold_core::iam::{self, AnyRole, Policy, PolicyInput, Resource, Subject, Target};
use keyhold_core::{timefmt, Error, Reason, Result};
use keyhold_store::{ApiKeyRecord, IamObject, Store, StoreError};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{store_err, Service};
use crate::auth::{apikey, Principal, PrincipalKind};

/// The kinds of IAM objects, as the store names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamKind {
    User,
    ServiceId,
    Group,
    Member,
    Policy,
}

impl IamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IamKind::User => "user",
            IamKind::ServiceId => "serviceid",
            IamKind::Group => "group",
            IamKind::Member => "member",
            IamKind::Policy => "policy",
        }
    }

    fn not_found(self) -> Error {
        let what = match self {
            IamKind::User => "user",
            IamKind::ServiceId => "service ID",
            IamKind::Group => "access group",
            IamKind::Member => "group member",
            IamKind::Policy => "policy",
        };
        Error::new(Reason::NotFound, format!("The {what} does not exist"))
    }
}

/// One account's access policies and who belongs to which access group.
#[derive(Debug, Default)]
pub struct AccountAccess {
    policies: Vec<Policy>,
    groups_of: HashMap<String, Vec<String>>,
}

impl AccountAccess {
    /// The policies that apply to `iam_id`: its own and its groups'.
    fn of<'a>(&'a self, iam_id: &'a str) -> impl Iterator<Item = &'a Policy> + 'a {
        let groups = self.groups_of.get(iam_id);
        self.policies.iter().filter(move |p| match &p.subject {
            Subject::IamId(i) => i == iam_id,
            Subject::AccessGroup(g) => groups.is_some_and(|gs| gs.contains(g)),
        })
    }

    pub fn service_roles(&self, iam_id: &str, t: Target<'_>) -> Roles {
        iam::service_roles(self.of(iam_id), t)
    }

    pub fn platform_roles(
        &self,
        iam_id: &str,
        account_id: &str,
        instance_id: Option<&str>,
    ) -> PlatformRoles {
        iam::platform_roles(self.of(iam_id), account_id, instance_id)
    }

    /// May manage the account's IAM: Administrator on the whole account.
    pub fn is_admin(&self, iam_id: &str, account_id: &str) -> bool {
        iam::account_admin(self.of(iam_id), account_id)
    }
}

/// A new or rotated API key: the secret exists only in this response.
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub secret: Zeroizing<String>,
}

fn corrupt(what: &str) -> Error {
    tracing::error!(what, "stored IAM object could not be read");
    Error::internal()
}

fn doc_of(o: &IamObject) -> Result<Value> {
    serde_json::from_str(&o.doc).map_err(|_| corrupt("document"))
}

fn policy_of(o: &IamObject) -> Result<Policy> {
    serde_json::from_str(&o.doc).map_err(|_| corrupt("policy"))
}

/// Names and descriptions: printable, bounded.
pub fn check_text(field: &'static str, v: &str, max: usize, required: bool) -> Result<()> {
    if (required && v.trim().is_empty())
        || v.chars().count() > max
        || v.chars().any(char::is_control)
    {
        return Err(Error::field(
            Reason::InvalidField,
            field,
            format!(
                "`{field}` must be {} at most {max} printable characters",
                if required { "1 to" } else { "" }
            ),
        ));
    }
    Ok(())
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4())
}

/// Inserts an object unless one with its id exists (start-up bootstrap, idempotent).
pub fn ensure_object(store: &dyn Store, obj: &IamObject) -> std::result::Result<(), String> {
    match store.insert_iam_object(obj) {
        Ok(()) | Err(StoreError::Duplicate) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// A user object as bootstrap writes it.
pub fn user_object(account_id: &str, iam_id: &str, name: &str) -> IamObject {
    IamObject {
        account_id: account_id.into(),
        kind: IamKind::User.as_str().into(),
        id: iam_id.into(),
        refs: vec![],
        doc: json!({"iam_id": iam_id, "user_id": name, "account_id": account_id,
            "state": "ACTIVE", "created_at": timefmt::format(timefmt::now())})
        .to_string(),
    }
}

pub fn service_id_object(account_id: &str, iam_id: &str, name: &str) -> IamObject {
    IamObject {
        account_id: account_id.into(),
        kind: IamKind::ServiceId.as_str().into(),
        id: iam_id.into(),
        refs: vec![],
        doc: json!({"id": iam_id, "iam_id": iam_id, "name": name, "description": "",
            "account_id": account_id, "created_at": timefmt::format(timefmt::now())})
        .to_string(),
    }
}

/// An account-wide policy for bootstrap (dev mode, `keyhold init`), with a fixed id.
pub fn bootstrap_policy(
    account_id: &str,
    id: &str,
    iam_id: &str,
    roles: &[AnyRole],
) -> std::result::Result<IamObject, String> {
    let p = Policy {
        id: id.into(),
        subject: Subject::IamId(iam_id.into()),
        roles: roles.to_vec(),
        resource: Resource {
            account_id: account_id.into(),
            service_name: None,
            service_instance: None,
            within: None,
        },
        description: "created at bootstrap".into(),
        created_at: timefmt::now(),
        created_by_id: "keyhold".into(),
    };
    Ok(IamObject {
        account_id: account_id.into(),
        kind: IamKind::Policy.as_str().into(),
        id: id.into(),
        refs: vec![iam_id.into()],
        doc: serde_json::to_string(&p).map_err(|e| e.to_string())?,
    })
}

/// Creates an API key record for `iam_id` and returns it with its secret.
pub fn new_api_key(
    account_id: &str,
    iam_id: &str,
    kind: PrincipalKind,
    name: &str,
) -> Result<NewApiKey> {
    let secret = apikey::generate()?;
    Ok(NewApiKey {
        record: ApiKeyRecord {
            hash: apikey::hash(&secret),
            id: new_id("ApiKey-"),
            principal_id: iam_id.into(),
            principal_kind: kind.as_str().into(),
            account_id: account_id.into(),
            name: name.into(),
            created_at: timefmt::now(),
        },
        secret,
    })
}

impl Service {
    pub fn cached_account_access(&self, account_id: &str) -> Option<Arc<AccountAccess>> {
        self.access_cache.get(account_id)
    }

    /// The account's access, from the node's cache or loaded (and cached).
    pub fn account_access(&self, account_id: &str) -> Result<Arc<AccountAccess>> {
        if let Some(a) = self.access_cache.get(account_id) {
            return Ok(a);
        }
        let generation = self.access_cache.generation();
        let mut access = AccountAccess::default();
        for o in self
            .store
            .list_iam_objects(account_id, IamKind::Policy.as_str())
            .map_err(store_err)?
        {
            access.policies.push(policy_of(&o)?);
        }
        for o in self
            .store
            .list_iam_objects(account_id, IamKind::Member.as_str())
            .map_err(store_err)?
        {
            let (Some(group), Some(member)) = (o.refs.first(), o.refs.get(1)) else {
                return Err(corrupt("membership"));
            };
            access
                .groups_of
                .entry(member.clone())
                .or_default()
                .push(group.clone());
        }
        let access = Arc::new(access);
        self.access_cache
            .put(account_id, access.clone(), generation);
        Ok(access)
    }

    fn iam_written(&self, account_id: &str) {
        self.access_cache.forget(account_id);
    }

    pub fn iam_insert(&self, obj: IamObject) -> Result<Value> {
        let doc = doc_of(&obj)?;
        self.store.insert_iam_object(&obj).map_err(|e| match e {
            StoreError::Duplicate => Error::new(
                Reason::DuplicateResource,
                "An object with this id already exists",
            ),
            e => store_err(e),
        })?;
        self.iam_written(&obj.account_id);
        Ok(doc)
    }

    pub fn iam_get(&self, account_id: &str, kind: IamKind, id: &str) -> Result<Value> {
        let o = self
            .store
            .get_iam_object(account_id, kind.as_str(), id)
            .map_err(store_err)?
            .ok_or_else(|| kind.not_found())?;
        match kind {
            IamKind::Policy => Ok(policy_of(&o)?.to_json()),
            _ => doc_of(&o),
        }
    }

    pub fn iam_list(&self, account_id: &str, kind: IamKind) -> Result<Vec<Value>> {
        self.store
            .list_iam_objects(account_id, kind.as_str())
            .map_err(store_err)?
            .iter()
            .map(|o| match kind {
                IamKind::Policy => policy_of(o).map(|p| p.to_json()),
                _ => doc_of(o),
            })
            .collect()
    }

    /// Deletes an object and, in the same transaction, what depends on it: a
    /// user's or service ID's API keys, memberships and policies; a group's
    /// members and policies.
    pub fn iam_delete(&self, account_id: &str, kind: IamKind, id: &str) -> Result<()> {
        self.store
            .delete_iam_object(account_id, kind.as_str(), id)
            .map_err(|e| match e {
                StoreError::NotFound => kind.not_found(),
                e => store_err(e),
            })?;
        self.iam_written(account_id);
        Ok(())
    }

    /// Whether `iam_id` is a user or a service ID of the account.
    pub fn principal_kind(&self, account_id: &str, iam_id: &str) -> Result<Option<PrincipalKind>> {
        for (kind, pk) in [
            (IamKind::User, PrincipalKind::User),
            (IamKind::ServiceId, PrincipalKind::Service),
        ] {
            if self
                .store
                .get_iam_object(account_id, kind.as_str(), iam_id)
                .map_err(store_err)?
                .is_some()
            {
                return Ok(Some(pk));
            }
        }
        Ok(None)
    }

    pub fn create_user(&self, account_id: &str, name: &str) -> Result<Value> {
        check_text("user_id", name, 128, true)?;
        self.iam_insert(user_object(account_id, &new_id("user-"), name))
    }

    pub fn create_service_id(
        &self,
        account_id: &str,
        name: &str,
        description: &str,
    ) -> Result<Value> {
        check_text("name", name, 128, true)?;
        check_text("description", description, 300, false)?;
        let mut o = service_id_object(account_id, &new_id("iam-ServiceId-"), name);
        let mut doc = doc_of(&o)?;
        doc["description"] = json!(description);
        o.doc = doc.to_string();
        self.iam_insert(o)
    }

    pub fn create_group(&self, account_id: &str, name: &str, description: &str) -> Result<Value> {
        check_text("name", name, 100, true)?;
        check_text("description", description, 250, false)?;
        let id = new_id("AccessGroupId-");
        self.iam_insert(IamObject {
            account_id: account_id.into(),
            kind: IamKind::Group.as_str().into(),
            id: id.clone(),
            refs: vec![],
            doc: json!({"id": id, "name": name, "description": description,
                "account_id": account_id, "created_at": timefmt::format(timefmt::now())})
            .to_string(),
        })
    }

    /// Adds a user or service ID to a group (409 if it is already a member).
    pub fn add_member(&self, account_id: &str, group_id: &str, iam_id: &str) -> Result<Value> {
        self.iam_get(account_id, IamKind::Group, group_id)?;
        let kind = self
            .principal_kind(account_id, iam_id)?
            .ok_or_else(|| Error::new(Reason::NotFound, "No user or service ID has this iam_id"))?;
        let kind = match kind {
            PrincipalKind::User => "user",
            PrincipalKind::Service => "service",
        };
        self.iam_insert(IamObject {
            account_id: account_id.into(),
            kind: IamKind::Member.as_str().into(),
            id: format!("{group_id}/{iam_id}"),
            refs: vec![group_id.into(), iam_id.into()],
            doc: json!({"iam_id": iam_id, "type": kind, "group_id": group_id,
                "created_at": timefmt::format(timefmt::now())})
            .to_string(),
        })
    }

    pub fn members(&self, account_id: &str, group_id: &str) -> Result<Vec<Value>> {
        self.iam_get(account_id, IamKind::Group, group_id)?;
        let prefix = format!("{group_id}/");
        self.store
            .list_iam_objects(account_id, IamKind::Member.as_str())
            .map_err(store_err)?
            .iter()
            .filter(|o| o.id.starts_with(&prefix))
            .map(doc_of)
            .collect()
    }

    /// Creates a validated policy in the caller's account; its subject must exist.
    pub fn create_policy(&self, by: &Principal, input: PolicyInput) -> Result<Value> {
        let account_id = &by.account_id;
        if &input.resource.account_id != account_id {
            return Err(Error::field(
                Reason::InvalidField,
                "resources",
                "The policy's `accountId` must be the caller's account",
            ));
        }
        let exists = match &input.subject {
            Subject::IamId(i) => self.principal_kind(account_id, i)?.is_some(),
            Subject::AccessGroup(g) => self
                .store
                .get_iam_object(account_id, IamKind::Group.as_str(), g)
                .map_err(store_err)?
                .is_some(),
        };
        if !exists {
            return Err(Error::field(
                Reason::InvalidField,
                "subjects",
                "The policy's subject is no user, service ID or access group of the account",
            ));
        }
        let p = Policy {
            id: uuid::Uuid::new_v4().to_string(),
            subject: input.subject,
            roles: input.roles,
            resource: input.resource,
            description: input.description,
            created_at: timefmt::now(),
            created_by_id: by.id.clone(),
        };
        let json = p.to_json();
        self.iam_insert(IamObject {
            account_id: account_id.clone(),
            kind: IamKind::Policy.as_str().into(),
            id: p.id.clone(),
            refs: vec![p.subject.id().to_string()],
            doc: serde_json::to_string(&p).map_err(|_| Error::internal())?,
        })?;
        Ok(json)
    }

    /// A new API key for a user or service ID of the account.
    pub fn create_api_key(&self, account_id: &str, iam_id: &str, name: &str) -> Result<NewApiKey> {
        check_text("name", name, 128, true)?;
        let kind = self
            .principal_kind(account_id, iam_id)?
            .ok_or_else(|| Error::new(Reason::NotFound, "No user or service ID has this iam_id"))?;
        let key = new_api_key(account_id, iam_id, kind, name)?;
        self.store.put_api_key(&key.record).map_err(store_err)?;
        self.iam_written(account_id);
        Ok(key)
    }

    pub fn api_keys(&self, account_id: &str) -> Result<Vec<ApiKeyRecord>> {
        self.store.list_api_keys(account_id).map_err(store_err)
    }

    pub fn api_key(&self, account_id: &str, id: &str) -> Result<ApiKeyRecord> {
        self.store
            .get_api_key(account_id, id)
            .map_err(store_err)?
            .ok_or_else(|| Error::new(Reason::NotFound, "The API key does not exist"))
    }

    pub fn delete_api_key(&self, account_id: &str, id: &str) -> Result<()> {
        self.store
            .delete_api_key(account_id, id)
            .map_err(|e| match e {
                StoreError::NotFound => Error::new(Reason::NotFound, "The API key does not exist"),
                e => store_err(e),
            })?;
        self.iam_written(account_id);
        Ok(())
    }

    /// A new secret for the key; the old one (and refresh tokens issued for it) stop working.
    pub fn rotate_api_key(&self, account_id: &str, id: &str) -> Result<NewApiKey> {
        let mut record = self.api_key(account_id, id)?;
        let secret = apikey::generate()?;
        record.hash = apikey::hash(&secret);
        self.store
            .replace_api_key_hash(account_id, id, &record.hash)
            .map_err(store_err)?;
        self.iam_written(account_id);
        Ok(NewApiKey { record, secret })
    }
}
