//! Key Protect JSON shapes of Keyhold's resources (keyprotect-api.md §6).

use keyhold_core::model::{
    ImportToken, Instance, InstancePolicy, InstancePolicyData, KeyRecord, KeyRing, KeyState,
    Registration, VersionRef,
};
use keyhold_core::rules::TimingRules;
use keyhold_core::timefmt::{format as ts, Timestamp};
use serde_json::{json, Map, Value};

use super::body::encode;

pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
pub const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";

pub fn collection(collection_type: &str, resources: Vec<Value>, total: Option<u64>) -> Value {
    let mut meta = json!({"collectionType": collection_type, "collectionTotal": resources.len()});
    if let Some(t) = total {
        meta["totalCount"] = json!(t);
    }
    json!({"metadata": meta, "resources": resources})
}

pub fn version(v: &VersionRef) -> Value {
    json!({"id": v.id, "creationDate": ts(v.created_at)})
}

pub fn key(
    k: &KeyRecord,
    instance: &Instance,
    rules: &TimingRules,
    now: Timestamp,
    payload: Option<&[u8]>,
) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(KEY_TYPE));
    m.insert("id".into(), json!(k.id));
    m.insert("name".into(), json!(k.name));
    m.insert("aliases".into(), json!(k.aliases));
    if let Some(d) = &k.description {
        m.insert("description".into(), json!(d));
    }
    m.insert("tags".into(), json!(k.tags));
    m.insert("state".into(), json!(u8::from(k.state_at(now))));
    if let Some(e) = k.expiration {
        m.insert("expirationDate".into(), json!(ts(e)));
    }
    m.insert("extractable".into(), json!(k.extractable));
    m.insert(
        "crn".into(),
        json!(format!("{}:key:{}", instance.crn_prefix(), k.id)),
    );
    m.insert("imported".into(), json!(k.imported));
    m.insert("keyRingID".into(), json!(k.key_ring));
    m.insert("creationDate".into(), json!(ts(k.created_at)));
    m.insert("createdBy".into(), json!(k.created_by));
    m.insert("algorithmType".into(), json!("Deprecated"));
    m.insert(
        "algorithmMetadata".into(),
        json!({"bitLength": "256", "mode": "Deprecated"}),
    );
    m.insert("algorithmBitSize".into(), json!(256));
    m.insert("algorithmMode".into(), json!("Deprecated"));
    m.insert("lastUpdateDate".into(), json!(ts(k.updated_at)));
    if let Some(r) = k.last_rotated_at {
        m.insert("lastRotateDate".into(), json!(ts(r)));
    }
    m.insert("keyVersion".into(), version(&k.current_version));
    let mut dual = json!({"enabled": k.dual_auth_enabled()});
    if k.dual_auth_enabled() {
        let pending = k
            .deletion_authorization
            .as_ref()
            .filter(|a| a.expires_at > now);
        dual["keySetForDeletion"] = json!(pending.is_some());
        if let Some(a) = pending {
            dual["authExpiration"] = json!(ts(a.expires_at));
        }
    }
    m.insert("dualAuthDelete".into(), dual);
    if let Some(r) = &k.rotation {
        m.insert(
            "rotation".into(),
            json!({"enabled": r.enabled, "interval_month": r.interval_month}),
        );
    }
    m.insert("deleted".into(), json!(k.state == KeyState::Destroyed));
    if let (KeyState::Destroyed, Some(d)) = (k.state, k.deleted_at) {
        m.insert("deletionDate".into(), json!(ts(d)));
        if let Some(by) = &k.deleted_by {
            m.insert("deletedBy".into(), json!(by));
        }
        let restore_until = d + rules.restore_window;
        m.insert("restoreExpirationDate".into(), json!(ts(restore_until)));
        m.insert(
            "restoreAllowed".into(),
            json!(now < restore_until && k.expiration.is_none_or(|e| e > now)),
        );
        m.insert("purgeAllowed".into(), json!(now >= d + rules.purge_delay));
        m.insert("purgeAllowedFrom".into(), json!(ts(d + rules.purge_delay)));
        m.insert(
            "purgeScheduledOn".into(),
            json!(ts(d + rules.auto_purge_after)),
        );
    }
    if let Some(p) = payload {
        m.insert("payload".into(), json!(encode(p)));
    }
    Value::Object(m)
}

/// Key policies: one resource per policy the key has.
pub fn key_policies(k: &KeyRecord, instance: &Instance, only: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let base = |meta: &keyhold_core::model::PolicyMeta| {
        json!({"id": meta.id, "crn": format!("{}:policy:{}", instance.crn_prefix(), meta.id),
               "creationDate": ts(meta.created_at), "createdBy": meta.created_by,
               "lastUpdateDate": ts(meta.updated_at), "updatedBy": meta.updated_by, "type": POLICY_TYPE})
    };
    if let Some(r) = k
        .rotation
        .as_ref()
        .filter(|_| only.is_none_or(|o| o == "rotation"))
    {
        let mut v = base(&r.meta);
        v["rotation"] = json!({"enabled": r.enabled, "interval_month": r.interval_month});
        out.push(v);
    }
    if let Some(d) = k
        .dual_auth
        .as_ref()
        .filter(|_| only.is_none_or(|o| o == "dualAuthDelete"))
    {
        let mut v = base(&d.meta);
        v["dualAuthDelete"] = json!({"enabled": d.enabled});
        out.push(v);
    }
    out
}

pub fn instance_policy(p: &InstancePolicy) -> Value {
    let mut data = json!({"enabled": p.enabled});
    let attributes = match &p.data {
        InstancePolicyData::DualAuthDelete | InstancePolicyData::Metrics => None,
        InstancePolicyData::AllowedNetwork { allowed_network } => {
            Some(json!({"allowed_network": allowed_network}))
        }
        InstancePolicyData::AllowedIp { allowed_ip } => Some(json!({"allowed_ip": allowed_ip})),
        InstancePolicyData::KeyCreateImportAccess(a) => Some(json!({
            "create_root_key": a.create_root_key, "create_standard_key": a.create_standard_key,
            "import_root_key": a.import_root_key, "import_standard_key": a.import_standard_key,
            "enforce_token": a.enforce_token})),
        InstancePolicyData::Rotation { interval_month } => {
            interval_month.map(|m| json!({"interval_month": m}))
        }
    };
    if let Some(a) = attributes {
        data["attributes"] = a;
    }
    json!({"creationDate": ts(p.created_at), "createdBy": p.created_by, "updatedBy": p.updated_by,
           "lastUpdated": ts(p.updated_at), "policy_type": p.policy_type.name(), "policy_data": data})
}

pub fn registration(r: &Registration, key_name: Option<&str>, with_metadata: bool) -> Value {
    let mut v = json!({"keyId": r.key_id, "resourceCrn": r.resource_crn, "createdBy": r.created_by,
        "creationDate": ts(r.created_at), "updatedBy": r.updated_by, "lastUpdated": ts(r.updated_at),
        "description": r.description.clone().unwrap_or_default(), "preventKeyDeletion": r.prevent_key_deletion,
        "keyVersion": version(&r.key_version)});
    if let Some(n) = key_name {
        v["keyName"] = json!(n);
    }
    if with_metadata {
        if let Some(m) = &r.registration_metadata {
            v["registrationMetadata"] = json!(m);
        }
    }
    v
}

pub fn ring(r: &KeyRing) -> Value {
    json!({"id": r.id, "creationDate": ts(r.created_at), "createdBy": r.created_by})
}

pub fn import_token(t: &ImportToken, with_secret_parts: bool) -> Value {
    let mut v = json!({"id": t.token_id, "creationDate": ts(t.created_at), "expirationDate": ts(t.expires_at),
        "expiration": t.expires_at - t.created_at, "maxAllowedRetrievals": t.max_retrievals,
        "remainingRetrievals": t.remaining_retrievals});
    if with_secret_parts {
        v["payload"] = json!(encode(t.public_key_pem.as_bytes()));
        v["nonce"] = json!(encode(&t.nonce));
    }
    v
}
