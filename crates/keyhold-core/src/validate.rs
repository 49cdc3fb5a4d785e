//! Validation of caller-supplied names and values (keyprotect-api.md §6.1, §6.12).

use uuid::Uuid;

use crate::error::{Error, Reason, Result};

pub const MAX_STANDARD_PAYLOAD: usize = 7500;
pub const MAX_ALIASES_PER_KEY: usize = 5;
pub const MAX_AAD_ITEM: usize = 255;

/// Alias names that would collide with path segments.
pub const RESERVED_ALIASES: &[&str] = &[
    "allowed_ip",
    "key",
    "keys",
    "metadata",
    "policy",
    "policies",
    "registration",
    "registrations",
    "ring",
    "rings",
    "rotate",
    "wrap",
    "unwrap",
    "rewrap",
    "version",
    "versions",
];

pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && Uuid::parse_str(s).is_ok()
}

pub fn key_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if !(2..=90).contains(&n) || name.trim().is_empty() {
        return Err(Error::invalid_field(
            "name",
            "a string of 2 to 90 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            "name",
            "a string without control characters",
        ));
    }
    Ok(())
}

pub fn description(d: &str) -> Result<()> {
    if d.chars().count() > 240 || d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::invalid_field(
            "description",
            "a string of at most 240 characters",
        ));
    }
    Ok(())
}

pub fn tags(tags: &[String]) -> Result<()> {
    let bad = tags.len() > 30
        || tags.iter().any(|t| {
            t.chars().count() > 30 || t.chars().any(|c| "<>,:&|".contains(c) || c.is_control())
        });
    if bad {
        return Err(Error::invalid_field(
            "tags",
            "at most 30 tags of at most 30 characters, without <>,:&|",
        ));
    }
    Ok(())
}

pub fn alias(a: &str) -> Result<()> {
    let shape = (2..=90).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !shape {
        return Err(Error::invalid_field(
            "alias",
            "2 to 90 characters of A-Z, a-z, 0-9, - and _",
        ));
    }
    if is_uuid(a) {
        return Err(Error::invalid_field("alias", "a name that is not a UUID"));
    }
    if RESERVED_ALIASES.contains(&a) {
        return Err(Error::invalid_field(
            "alias",
            "a name that is not a reserved word",
        ));
    }
    Ok(())
}

pub fn key_ring_id(id: &str) -> Result<()> {
    let ok =
        (2..=100).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(Error::field(
            Reason::InvalidField,
            "keyRingID",
            "The field `keyRingID` must be: 2 to 100 characters of A-Z, a-z, 0-9 and -",
        ));
    }
    Ok(())
}

pub fn aad(items: &[String]) -> Result<()> {
    if items.len() > 1000 || items.iter().any(|a| a.len() > MAX_AAD_ITEM) {
        return Err(Error::invalid_field(
            "aad",
            "a list of strings of at most 255 characters each",
        ));
    }
    Ok(())
}

/// A CRN as registrations use it: `crn:v1:` followed by at least eight more segments.
pub fn crn(c: &str) -> Result<()> {
    let ok = c.starts_with("crn:v1:")
        && c.split(':').count() >= 10
        && c.len() <= 1024
        && !c.chars().any(|ch| ch.is_control() || ch == '*');
    if !ok {
        return Err(Error::invalid_field("resourceCrn", "a CRN of the form crn:v1:<cname>:<ctype>:<service>:<region>:<scope>:<instance>:<type>:<resource>"));
    }
    Ok(())
}

/// A CRN query for registrations across keys: `*` wildcards are allowed, but not
/// in the first eight segments (`crn:v1:cname:ctype:service:region:scope:instance`).
pub fn crn_query_all_keys(q: &str) -> Result<()> {
    let fixed: Vec<&str> = q.splitn(9, ':').take(8).collect();
    if !q.starts_with("crn:v1:")
        || q.len() > 1024
        || fixed.len() < 8
        || fixed.iter().any(|s| s.contains('*'))
    {
        return Err(Error::new(
            Reason::InvalidQueryParam,
            "The query_param `urlEncodedResourceCRNQuery` must be: a CRN whose first eight segments have no wildcard",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_rules() {
        assert!(alias("my-alias_1").is_ok());
        assert!(alias("a").is_err());
        assert!(alias(&"a".repeat(91)).is_err());
        assert!(alias("has space").is_err());
        assert!(alias("versions").is_err());
        assert!(alias("0b6f0f5c-7b4a-4b52-9e0c-6b8f2d7f6f3a").is_err());
    }

    #[test]
    fn names_and_tags() {
        assert!(key_name("ab").is_ok());
        assert!(key_name("a").is_err());
        assert!(tags(&["ok".into()]).is_ok());
        assert!(tags(&["no:colons".into()]).is_err());
        assert!(key_ring_id("ring-1").is_ok());
        assert!(key_ring_id("ring_1").is_err());
        assert!(
            crn("crn:v1:bluemix:public:cloud-object-storage:global:a/acct:inst:bucket:b").is_ok()
        );
        assert!(crn("crn:v1:x").is_err());
        assert!(crn("crn:v1:bluemix:public:svc:global:a/x:i:t:*").is_err());
        assert!(
            crn_query_all_keys("crn:v1:bluemix:public:cloud-object-storage:global:a/x:inst:*")
                .is_ok()
        );
        assert!(crn_query_all_keys("crn:v1:*").is_err());
        assert!(crn_query_all_keys("crn:v1:bluemix:public:*:global:a/x:y:bucket:z").is_err());
    }
}
