//! The resource controller (service instances, their credentials and
//! connection info) and service-to-service authorizations: account-level
//! calls, made without `Bluemix-Instance`. Answers are the server's JSON.

use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Call, Client};
use crate::error::{ClientError, Result};
use crate::keys::seg;

/// What to provision (`POST /v2/resource_instances`).
#[derive(Debug, Clone, Default)]
pub struct NewInstance {
    pub name: String,
    /// `hs-crypto`, `kms`, or another service's name.
    pub service: String,
    /// `standard` or `dedicated`; the server infers it when absent.
    pub plan: Option<String>,
    /// Crypto units of an `hs-crypto` instance.
    pub units: Option<u32>,
    /// The `hs-crypto` instance (id or CRN) a dedicated `kms` instance uses.
    pub crypto_instance: Option<String>,
}

fn rows(v: Value, field: &str) -> Result<Vec<Value>> {
    match v.get(field) {
        Some(Value::Array(a)) => Ok(a.clone()),
        _ => Err(ClientError::Decode(format!(
            "the answer has no {field} list"
        ))),
    }
}

impl Client {
    pub async fn create_instance(&self, n: &NewInstance) -> Result<Value> {
        let mut params = json!({});
        if let Some(u) = n.units {
            params["units"] = json!(u);
        }
        if let Some(c) = &n.crypto_instance {
            params["crypto_instance"] = json!(c);
        }
        let mut body = json!({"name": n.name, "service": n.service, "parameters": params});
        if let Some(p) = &n.plan {
            body["plan"] = json!(p);
        }
        let call = Call::account(Method::POST, "v2/resource_instances").json(body);
        self.send_json(&call).await
    }

    /// The account's instances, of one service when given.
    pub async fn list_instances(&self, service: Option<&str>) -> Result<Vec<Value>> {
        let call =
            Call::account(Method::GET, "v2/resource_instances").query_opt("resource_id", service);
        rows(self.send_json(&call).await?, "resources")
    }

    /// An instance by id (guid) or CRN.
    pub async fn get_instance(&self, id: &str) -> Result<Value> {
        let call = Call::account(Method::GET, format!("v2/resource_instances/{}", seg(id)));
        self.send_json(&call).await
    }

    pub async fn update_instance(
        &self,
        id: &str,
        name: Option<&str>,
        units: Option<u32>,
    ) -> Result<Value> {
        let mut body = json!({});
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        if let Some(u) = units {
            body["parameters"] = json!({"units": u});
        }
        let call =
            Call::account(Method::PATCH, format!("v2/resource_instances/{}", seg(id))).json(body);
        self.send_json(&call).await
    }

    /// Deletes an instance; with `force` a kms instance holding keys is kept
    /// pending reclamation, and that instance is returned.
    pub async fn delete_instance(&self, id: &str, force: bool) -> Result<Option<Value>> {
        let call = Call::account(Method::DELETE, format!("v2/resource_instances/{}", seg(id)))
            .query_opt("force", force.then_some(true));
        let answer = self.send(&call).await?;
        if answer.status == 202 {
            Ok(Some(answer.json()?))
        } else {
            Ok(None)
        }
    }

    /// A crypto instance's endpoints (`GET /crypto_v2/instances/{id}`).
    pub async fn connection_info(&self, id: &str) -> Result<Value> {
        let call = Call::account(Method::GET, format!("crypto_v2/instances/{}", seg(id)));
        self.send_json(&call).await
    }

    /// A credential (API key) whose principal is the service instance `source`.
    pub async fn create_resource_key(&self, source: &str, name: &str) -> Result<Value> {
        let call = Call::account(Method::POST, "v2/resource_keys")
            .json(json!({"source": source, "name": name}));
        self.send_json(&call).await
    }

    /// Authorizes `source` (service, optionally one instance) to act on `target` with `roles`.
    pub async fn create_authorization(
        &self,
        source: (&str, Option<&str>),
        target: (&str, Option<&str>),
        roles: &[String],
    ) -> Result<Value> {
        let party = |(s, i): (&str, Option<&str>)| match i {
            Some(i) => json!({"service_name": s, "instance_id": i}),
            None => json!({"service_name": s}),
        };
        let body = json!({"source": party(source), "target": party(target), "roles": roles});
        let call = Call::account(Method::POST, "v1/authorizations").json(body);
        self.send_json(&call).await
    }

    pub async fn list_authorizations(&self) -> Result<Vec<Value>> {
        let call = Call::account(Method::GET, "v1/authorizations");
        rows(self.send_json(&call).await?, "authorizations")
    }

    pub async fn delete_authorization(&self, id: &str) -> Result<()> {
        let call = Call::account(Method::DELETE, format!("v1/authorizations/{}", seg(id)));
        self.send(&call).await.map(|_| ())
    }
}
