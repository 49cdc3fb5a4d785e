//! Key policies (rotation, dualAuthDelete) and the six instance policies.

use std::net::IpAddr;
use std::sync::Arc;

use keyhold_core::model::{
    DualAuthPolicy, InstancePolicy, InstancePolicyData, InstancePolicyType, KeyRecord, PolicyMeta,
    RotationPolicy,
};
use keyhold_core::rules::{self, KeyAction};
use keyhold_core::timefmt::Timestamp;
use keyhold_core::{Error, Reason, Result};

use super::cache::InstancePolicies;
use super::keys::check_interval;
use super::{store_err, Service};
use crate::auth::Principal;

/// One resource of a key-policy PUT.
pub enum KeyPolicyInput {
    Rotation {
        enabled: Option<bool>,
        interval_month: Option<i64>,
    },
    DualAuthDelete {
        enabled: Option<bool>,
    },
}

pub struct InstancePolicyInput {
    pub policy_type: InstancePolicyType,
    pub enabled: bool,
    pub data: InstancePolicyData,
}

fn meta(existing: Option<&PolicyMeta>, by: &Principal, now: Timestamp) -> PolicyMeta {
    match existing {
        Some(m) => PolicyMeta {
            updated_at: now,
            updated_by: by.id.clone(),
            ..m.clone()
        },
        None => PolicyMeta {
            id: uuid::Uuid::new_v4().to_string(),
            created_at: now,
            created_by: by.id.clone(),
            updated_at: now,
            updated_by: by.id.clone(),
        },
    }
}

/// True if `ip` lies in the network `net/bits`.
pub fn cidr_contains((net, bits): (IpAddr, u8), ip: IpAddr) -> bool {
    match (net.to_canonical(), ip.to_canonical()) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Parses `a.b.c.d/n` or an IPv6 CIDR.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, b.parse::<u8>().ok()?),
        None => (s, if s.contains(':') { 128 } else { 32 }),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn validate_instance_policy(p: &InstancePolicyInput) -> Result<()> {
    match &p.data {
        InstancePolicyData::AllowedNetwork { allowed_network } => {
            if allowed_network != "public-and-private" && allowed_network != "private-only" {
                return Err(Error::invalid_field(
                    "allowed_network",
                    "public-and-private or private-only",
                ));
            }
        }
        InstancePolicyData::AllowedIp { allowed_ip } => {
            if p.enabled
                && (allowed_ip.is_empty()
                    || allowed_ip.len() > 1000
                    || allowed_ip.iter().any(|c| parse_cidr(c).is_none()))
            {
                return Err(Error::invalid_field(
                    "allowed_ip",
                    "a non-empty list of IPv4 or IPv6 addresses in CIDR notation",
                ));
            }
        }
        InstancePolicyData::Rotation { interval_month } => {
            if p.enabled {
                check_interval(interval_month.map(i64::from))?;
            }
        }
        InstancePolicyData::DualAuthDelete
        | InstancePolicyData::Metrics
        | InstancePolicyData::KeyCreateImportAccess(_) => {}
    }
    Ok(())
}

impl Service {
    pub fn set_key_policies(
        &self,
        instance_id: &str,
        id: &str,
        by: &Principal,
        inputs: &[KeyPolicyInput],
    ) -> Result<KeyRecord> {
        self.modify_key(instance_id, id, |key, now| {
            rules::check_state(key, KeyAction::SetPolicy, now)?;
            for input in inputs {
                match input {
                    KeyPolicyInput::Rotation {
                        enabled,
                        interval_month,
                    } => {
                        if key.extractable {
                            return Err(Error::field(
                                Reason::KeyRootReq,
                                "rotation",
                                "A rotation policy can only be set on a root key",
                            ));
                        }
                        let enabled = enabled.unwrap_or(true);
                        let interval = match interval_month {
                            None if !enabled => {
                                key.rotation.as_ref().map(|r| r.interval_month).unwrap_or(1)
                            }
                            i => check_interval(*i)?,
                        };
                        let m = meta(key.rotation.as_ref().map(|r| &r.meta), by, now);
                        key.rotation = Some(RotationPolicy {
                            enabled,
                            interval_month: interval,
                            meta: m,
                        });
                    }
                    KeyPolicyInput::DualAuthDelete { enabled } => {
                        let enabled = enabled
                            .ok_or_else(|| Error::invalid_field("enabled", "true or false"))?;
                        let m = meta(key.dual_auth.as_ref().map(|d| &d.meta), by, now);
                        key.dual_auth = Some(DualAuthPolicy { enabled, meta: m });
                        if !enabled {
                            key.deletion_authorization = None;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    pub fn set_instance_policies(
        &self,
        instance_id: &str,
        by: &Principal,
        inputs: Vec<InstancePolicyInput>,
    ) -> Result<()> {
        for p in &inputs {
            validate_instance_policy(p)?;
        }
        let now = self.now();
        let existing = &self.instance_policies(instance_id)?.list;
        let policies: Vec<InstancePolicy> = inputs
            .into_iter()
            .map(|p| {
                let old = existing.iter().find(|e| e.policy_type == p.policy_type);
                InstancePolicy {
                    policy_type: p.policy_type,
                    enabled: p.enabled,
                    data: p.data,
                    created_at: old.map(|o| o.created_at).unwrap_or(now),
                    created_by: old
                        .map(|o| o.created_by.clone())
                        .unwrap_or_else(|| by.id.clone()),
                    updated_at: now,
                    updated_by: by.id.clone(),
                }
            })
            .collect();
        let written = self
            .store
            .put_instance_policies(instance_id, &policies)
            .map_err(store_err);
        self.policy_cache.forget(instance_id);
        written
    }

    /// The instance's policies if this node has them cached (never blocks).
    pub fn cached_instance_policies(&self, instance_id: &str) -> Option<Arc<InstancePolicies>> {
        self.policy_cache.get(instance_id)
    }

    /// The instance's policies; cached, since every key creation consults them.
    pub fn instance_policies(&self, instance_id: &str) -> Result<Arc<InstancePolicies>> {
        if let Some(p) = self.policy_cache.get(instance_id) {
            return Ok(p);
        }
        let generation = self.policy_cache.generation();
        let list = self
            .store
            .instance_policies(instance_id)
            .map_err(store_err)?;
        let allowed_networks = list.iter().find_map(|p| match (p.enabled, &p.data) {
            (true, InstancePolicyData::AllowedIp { allowed_ip }) => {
                Some(allowed_ip.iter().filter_map(|c| parse_cidr(c)).collect())
            }
            _ => None,
        });
        let private_only = list.iter().any(|p| {
            matches!((p.enabled, &p.data), (true, InstancePolicyData::AllowedNetwork { allowed_network }) if allowed_network == "private-only")
        });
        let policies = Arc::new(InstancePolicies {
            list,
            allowed_networks,
            private_only,
        });
        self.policy_cache
            .put(instance_id, policies.clone(), generation);
        Ok(policies)
    }
}

#[cfg(test)]
mod tests {
    use super::{cidr_contains, parse_cidr};

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_some());
        assert!(parse_cidr("2001:db8::/32").is_some());
        assert!(parse_cidr("10.0.0.1").is_some());
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("banana").is_none());
        let net = parse_cidr("10.0.0.0/8").unwrap();
        assert!(cidr_contains(net, "10.1.2.3".parse().unwrap()));
        assert!(!cidr_contains(net, "11.0.0.1".parse().unwrap()));
        assert!(cidr_contains(
            parse_cidr("0.0.0.0/0").unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
        assert!(cidr_contains(
            parse_cidr("127.0.0.1").unwrap(),
            "::ffff:127.0.0.1".parse().unwrap()
        ));
        assert!(cidr_contains(
            parse_cidr("2001:db8::/32").unwrap(),
            "2001:db8::1".parse().unwrap()
        ));
    }
}
