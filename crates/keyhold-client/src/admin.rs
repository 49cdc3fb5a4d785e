//! Everything beside keys: key and instance policies, aliases, key rings, import tokens.

use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Call, Client};
use crate::error::{ClientError, Result};
use crate::keys::seg;
use crate::model::{Alias, Collection, ImportToken, KeyRing, Policy, POLICY_TYPE};

impl Client {
    /// A key's policies (`rotation`, `dualAuthDelete`).
    pub async fn key_policies(&self, id: &str) -> Result<Vec<Policy>> {
        let call = Call::new(Method::GET, format!("keys/{}/policies", seg(id)));
        Ok(self.send_json::<Collection<Policy>>(&call).await?.resources)
    }

    /// Sets a key's rotation policy (`interval_month` 1–12).
    pub async fn set_rotation_policy(
        &self,
        id: &str,
        enabled: bool,
        months: Option<u32>,
    ) -> Result<Vec<Policy>> {
        let mut rotation = json!({"enabled": enabled});
        if let Some(m) = months {
            rotation["interval_month"] = json!(m);
        }
        self.put_key_policy(
            id,
            "rotation",
            json!({"type": POLICY_TYPE, "rotation": rotation}),
        )
        .await
    }

    /// Sets a key's dual-authorization-delete policy.
    pub async fn set_dual_auth_policy(&self, id: &str, enabled: bool) -> Result<Vec<Policy>> {
        let res = json!({"type": POLICY_TYPE, "dualAuthDelete": {"enabled": enabled}});
        self.put_key_policy(id, "dualAuthDelete", res).await
    }

    async fn put_key_policy(&self, id: &str, kind: &str, resource: Value) -> Result<Vec<Policy>> {
        let body = json!({"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
            "resources": [resource]});
        let call = Call::new(Method::PUT, format!("keys/{}/policies", seg(id)))
            .query("policy", kind)
            .json(body);
        Ok(self.send_json::<Collection<Policy>>(&call).await?.resources)
    }

    /// The instance's policies.
    pub async fn instance_policies(&self) -> Result<Vec<Policy>> {
        let call = Call::new(Method::GET, "instance/policies");
        Ok(self.send_json::<Collection<Policy>>(&call).await?.resources)
    }

    /// Sets one instance policy: `policy_type` and its `policy_data`
    /// (e.g. `dualAuthDelete`, `{"enabled": true}`).
    pub async fn set_instance_policy(&self, policy_type: &str, data: Value) -> Result<()> {
        let body = json!({"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
            "resources": [{"policy_type": policy_type, "policy_data": data}]});
        let call = Call::new(Method::PUT, "instance/policies")
            .query("policy", policy_type)
            .json(body);
        self.send(&call).await.map(|_| ())
    }

    pub async fn create_alias(&self, id: &str, alias: &str) -> Result<Alias> {
        let call = Call::new(
            Method::POST,
            format!("keys/{}/aliases/{}", seg(id), seg(alias)),
        );
        self.send_json::<Collection<Alias>>(&call)
            .await?
            .resources
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Decode("create alias: no resource".into()))
    }

    pub async fn delete_alias(&self, id: &str, alias: &str) -> Result<()> {
        let call = Call::new(
            Method::DELETE,
            format!("keys/{}/aliases/{}", seg(id), seg(alias)),
        );
        self.send(&call).await.map(|_| ())
    }

    pub async fn list_key_rings(&self) -> Result<Vec<KeyRing>> {
        let call = Call::new(Method::GET, "key_rings");
        Ok(self
            .send_json::<Collection<KeyRing>>(&call)
            .await?
            .resources)
    }

    pub async fn create_key_ring(&self, id: &str) -> Result<()> {
        let call = Call::new(Method::POST, format!("key_rings/{}", seg(id)));
        self.send(&call).await.map(|_| ())
    }

    /// Deletes a key ring; `force` moves its destroyed keys to `default`.
    pub async fn delete_key_ring(&self, id: &str, force: bool) -> Result<()> {
        let call = Call::new(Method::DELETE, format!("key_rings/{}", seg(id)))
            .query_opt("force", force.then_some(true));
        self.send(&call).await.map(|_| ())
    }

    /// Creates the instance's import token (replacing any previous one).
    pub async fn create_import_token(
        &self,
        expiration_secs: Option<u32>,
        max_retrievals: Option<u32>,
    ) -> Result<ImportToken> {
        let mut body = json!({});
        if let Some(e) = expiration_secs {
            body["expiration"] = json!(e);
        }
        if let Some(m) = max_retrievals {
            body["maxAllowedRetrievals"] = json!(m);
        }
        self.send_json(&Call::new(Method::POST, "import_token").json(body))
            .await
    }

    /// Retrieves the import token with its public key and nonce (uses one retrieval).
    pub async fn get_import_token(&self) -> Result<ImportToken> {
        self.send_json(&Call::new(Method::GET, "import_token"))
            .await
    }

    /// Registrations of every key, optionally filtered by a CRN pattern (`*` wildcards).
    pub async fn registrations(&self, crn_query: Option<&str>) -> Result<Vec<Value>> {
        let call = Call::new(Method::GET, "keys/registrations")
            .query_opt("urlEncodedResourceCRNQuery", crn_query);
        Ok(self.send_json::<Collection<Value>>(&call).await?.resources)
    }
}

/// What a service sends when it registers a resource as using a root key.
#[derive(Debug, Clone, Default)]
pub struct RegistrationInput {
    pub description: Option<String>,
    pub prevent_key_deletion: Option<bool>,
    pub registration_metadata: Option<String>,
    pub key_version_id: Option<String>,
}

impl RegistrationInput {
    fn to_json(&self) -> Value {
        let mut r = serde_json::Map::new();
        if let Some(d) = &self.description {
            r.insert("description".into(), json!(d));
        }
        if let Some(p) = self.prevent_key_deletion {
            r.insert("preventKeyDeletion".into(), json!(p));
        }
        if let Some(m) = &self.registration_metadata {
            r.insert("registrationMetadata".into(), json!(m));
        }
        if let Some(v) = &self.key_version_id {
            r.insert("keyVersionId".into(), json!(v));
        }
        json!({"metadata": {"collectionType": "application/vnd.ibm.kms.registration_input+json",
            "collectionTotal": 1}, "resources": [Value::Object(r)]})
    }
}

impl Client {
    /// The private endpoint port of an active allowedIP policy (empty without one).
    pub async fn allowed_ip_port(&self) -> Result<Vec<Value>> {
        let call = Call::new(Method::GET, "instance/allowed_ip_port");
        Ok(self.send_json::<Collection<Value>>(&call).await?.resources)
    }

    /// Service-to-service: registers `crn` as using key `id` (a service ID's call).
    pub async fn create_registration(
        &self,
        id: &str,
        crn: &str,
        input: &RegistrationInput,
    ) -> Result<Vec<Value>> {
        self.registration_call(Method::POST, id, crn, Some(input))
            .await
    }

    /// Service-to-service: changes some fields of a registration.
    pub async fn update_registration(
        &self,
        id: &str,
        crn: &str,
        input: &RegistrationInput,
    ) -> Result<Vec<Value>> {
        self.registration_call(Method::PATCH, id, crn, Some(input))
            .await
    }

    /// Service-to-service: replaces a registration (every field given).
    pub async fn replace_registration(
        &self,
        id: &str,
        crn: &str,
        input: &RegistrationInput,
    ) -> Result<Vec<Value>> {
        self.registration_call(Method::PUT, id, crn, Some(input))
            .await
    }

    /// Service-to-service: removes a registration.
    pub async fn delete_registration(&self, id: &str, crn: &str) -> Result<()> {
        self.registration_call(Method::DELETE, id, crn, None)
            .await
            .map(|_| ())
    }

    async fn registration_call(
        &self,
        method: Method,
        id: &str,
        crn: &str,
        input: Option<&RegistrationInput>,
    ) -> Result<Vec<Value>> {
        let mut call = Call::new(
            method,
            format!("keys/{}/registrations/{}", seg(id), seg(crn)),
        );
        if let Some(i) = input {
            call = call.json(i.to_json());
        }
        let ans = self.send(&call).await?;
        if ans.body.is_empty() {
            return Ok(Vec::new());
        }
        Ok(ans.json::<Collection<Value>>()?.resources)
    }
}
