//! IAM management calls (`/v1/users`, `/v1/serviceids`, `/v2/groups`, `/v1/apikeys`,
//! `/v1/policies`, `/v1/whoami`), answered as JSON values in IBM IAM's shapes.

use reqwest::Method;
use serde_json::Value;

use crate::client::{Call, Client};
use crate::error::Result;
use crate::keys::seg as segment;

/// The IAM collections and the member each list answer names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    Users,
    ServiceIds,
    Groups,
    ApiKeys,
    Policies,
}

impl Collection {
    pub fn path(self) -> &'static str {
        match self {
            Collection::Users => "/v1/users",
            Collection::ServiceIds => "/v1/serviceids",
            Collection::Groups => "/v2/groups",
            Collection::ApiKeys => "/v1/apikeys",
            Collection::Policies => "/v1/policies",
        }
    }

    fn list_field(self) -> &'static str {
        match self {
            Collection::Users => "resources",
            Collection::ServiceIds => "serviceids",
            Collection::Groups => "groups",
            Collection::ApiKeys => "apikeys",
            Collection::Policies => "policies",
        }
    }
}

impl Client {
    /// Who the API key belongs to: `iam_id`, `type`, `account_id`, `iam_admin`, `platform_roles`.
    pub async fn whoami(&self) -> Result<Value> {
        self.send_json(&Call::new(Method::GET, "/v1/whoami")).await
    }

    /// Lists a collection, optionally filtered (`iam_id`, `access_group_id`).
    pub async fn iam_list(
        &self,
        c: Collection,
        filter: &[(&'static str, String)],
    ) -> Result<Vec<Value>> {
        let mut call = Call::new(Method::GET, c.path());
        for (k, v) in filter {
            call = call.query(k, v);
        }
        let v: Value = self.send_json(&call).await?;
        Ok(v[c.list_field()].as_array().cloned().unwrap_or_default())
    }

    pub async fn iam_create(&self, c: Collection, body: Value) -> Result<Value> {
        self.send_json(&Call::new(Method::POST, c.path()).json(body))
            .await
    }

    pub async fn iam_get(&self, c: Collection, id: &str) -> Result<Value> {
        self.send_json(&Call::new(
            Method::GET,
            format!("{}/{}", c.path(), segment(id)),
        ))
        .await
    }

    pub async fn iam_delete(&self, c: Collection, id: &str) -> Result<()> {
        self.send(&Call::new(
            Method::DELETE,
            format!("{}/{}", c.path(), segment(id)),
        ))
        .await
        .map(|_| ())
    }

    /// A new secret for an API key; the old one stops working.
    pub async fn rotate_api_key(&self, id: &str) -> Result<Value> {
        self.send_json(&Call::new(
            Method::POST,
            format!("/v1/apikeys/{}/rotate", segment(id)),
        ))
        .await
    }

    pub async fn group_members(&self, group: &str) -> Result<Vec<Value>> {
        let v: Value = self
            .send_json(&Call::new(
                Method::GET,
                format!("/v2/groups/{}/members", segment(group)),
            ))
            .await?;
        Ok(v["members"].as_array().cloned().unwrap_or_default())
    }

    pub async fn add_group_members(&self, group: &str, iam_ids: &[String]) -> Result<Vec<Value>> {
        let members: Vec<Value> = iam_ids
            .iter()
            .map(|i| serde_json::json!({"iam_id": i}))
            .collect();
        let v: Value = self
            .send_json(
                &Call::new(
                    Method::PUT,
                    format!("/v2/groups/{}/members", segment(group)),
                )
                .json(serde_json::json!({ "members": members })),
            )
            .await?;
        Ok(v["members"].as_array().cloned().unwrap_or_default())
    }

    pub async fn remove_group_member(&self, group: &str, iam_id: &str) -> Result<()> {
        self.send(&Call::new(
            Method::DELETE,
            format!("/v2/groups/{}/members/{}", segment(group), segment(iam_id)),
        ))
        .await
        .map(|_| ())
    }
}
