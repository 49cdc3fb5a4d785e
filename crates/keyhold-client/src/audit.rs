//! The audit trail's read API (`/audit/v1/...`; docs/audit.md).

use reqwest::header::AUTHORIZATION;
use reqwest::Method;
use serde_json::Value;

use crate::client::{Call, Client};
use crate::error::{ClientError, Result};

impl Client {
    /// `GET /audit/v1/events` with the given filters (`from`, `to`, `key_id`,
    /// `principal`, `action`, `outcome`, `instance`, `limit`, `after`).
    pub async fn audit_events(&self, filters: &[(&'static str, String)]) -> Result<Value> {
        let mut call = Call::new(Method::GET, "/audit/v1/events");
        for (k, v) in filters {
            call = call.query(k, v);
        }
        self.send_json(&call).await
    }

    /// `GET /audit/v1/keys`: the audit signing public keys (no credentials needed).
    pub async fn audit_keys(&self) -> Result<Value> {
        let url = format!("{}/audit/v1/keys", self.cfg.url);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        })?;
        if !(200..300).contains(&status) {
            return Err(ClientError::from_response(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /audit/v1/export`, written to `out` chunk by chunk as it arrives.
    pub async fn audit_export(&self, out: &mut (dyn std::io::Write + Send)) -> Result<()> {
        let url = format!("{}/audit/v1/export", self.cfg.url);
        let token = self.bearer(false).await?;
        let mut resp = self
            .http
            .get(&url)
            .header(AUTHORIZATION, format!("Bearer {}", token.as_str()))
            .header("Bluemix-Instance", self.cfg.instance_id.as_str())
            .send()
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(ClientError::from_response(status, &body));
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        })? {
            out.write_all(&chunk)
                .map_err(|e| ClientError::Invalid(format!("cannot write the export: {e}")))?;
        }
        Ok(())
    }
}
