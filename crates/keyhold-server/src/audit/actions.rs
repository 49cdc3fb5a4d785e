//! The one table from route template + method (+ key action) to audit action
//! names. A new route is one line here; a route missing from it is still audited
//! under a generic name derived from its path (see [`generic`]).

use std::borrow::Cow;

/// How an event reaches the store before the response leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written (committed) before the response is sent: changes, and anything unknown.
    Sync,
    /// Queued and written by the next group commit: high-rate crypto calls and reads.
    Queued,
}

/// (method, route template, action). `{action}` routes and `?action=` are refined by [`KEY_ACTIONS`].
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/v2/keys", "kms.secrets.list"),
    ("HEAD", "/api/v2/keys", "kms.secrets.head"),
    ("POST", "/api/v2/keys", "kms.secrets.create"),
    (
        "POST",
        "/api/v2/keys_with_policy_overrides",
        "kms.secrets.create",
    ),
    (
        "GET",
        "/api/v2/keys/registrations",
        "kms.registrations.list",
    ),
    ("GET", "/api/v2/keys/{id}", "kms.secrets.read"),
    ("POST", "/api/v2/keys/{id}", "kms.secrets.action"),
    ("PATCH", "/api/v2/keys/{id}", "kms.secrets.patch"),
    ("DELETE", "/api/v2/keys/{id}", "kms.secrets.delete"),
    (
        "GET",
        "/api/v2/keys/{id}/metadata",
        "kms.secrets.readmetadata",
    ),
    ("DELETE", "/api/v2/keys/{id}/purge", "kms.secrets.purge"),
    ("POST", "/api/v2/keys/{id}/restore", "kms.secrets.restore"),
    (
        "GET",
        "/api/v2/keys/{id}/versions",
        "kms.secrets.listversions",
    ),
    (
        "POST",
        "/api/v2/keys/{id}/actions/{action}",
        "kms.secrets.action",
    ),
    ("GET", "/api/v2/keys/{id}/policies", "kms.policies.read"),
    ("PUT", "/api/v2/keys/{id}/policies", "kms.policies.write"),
    (
        "GET",
        "/api/v2/keys/{id}/registrations",
        "kms.registrations.list",
    ),
    (
        "POST",
        "/api/v2/keys/{id}/registrations",
        "kms.registrations.deactivate",
    ),
    (
        "POST",
        "/api/v2/keys/{id}/registrations/{crn}",
        "kms.registrations.create",
    ),
    (
        "PATCH",
        "/api/v2/keys/{id}/registrations/{crn}",
        "kms.registrations.update",
    ),
    (
        "PUT",
        "/api/v2/keys/{id}/registrations/{crn}",
        "kms.registrations.replace",
    ),
    (
        "DELETE",
        "/api/v2/keys/{id}/registrations/{crn}",
        "kms.registrations.delete",
    ),
    (
        "POST",
        "/api/v2/keys/{id}/aliases/{alias}",
        "kms.secrets.createalias",
    ),
    (
        "DELETE",
        "/api/v2/keys/{id}/aliases/{alias}",
        "kms.secrets.deletealias",
    ),
    (
        "GET",
        "/api/v2/instance/policies",
        "kms.instancepolicies.read",
    ),
    (
        "PUT",
        "/api/v2/instance/policies",
        "kms.instancepolicies.write",
    ),
    (
        "GET",
        "/api/v2/instance/allowed_ip_port",
        "kms.instancepolicies.readallowedipport",
    ),
    ("GET", "/api/v2/import_token", "kms.importtoken.read"),
    ("POST", "/api/v2/import_token", "kms.importtoken.create"),
    ("GET", "/api/v2/key_rings", "kms.keyrings.list"),
    ("POST", "/api/v2/key_rings/{ring}", "kms.keyrings.create"),
    ("DELETE", "/api/v2/key_rings/{ring}", "kms.keyrings.delete"),
    ("POST", "/identity/token", "iam.token.create"),
    ("POST", "/oidc/token", "iam.token.create"),
    ("GET", "/identity/keys", "iam.keys.read"),
    ("GET", "/ceremony/v1/status", "ceremony.status.read"),
    // Refined to ceremony.command.<verb> by the handler once the body is parsed.
    ("POST", "/ceremony/v1/commands", "ceremony.command"),
    ("GET", "/audit/v1/events", "audit.events.read"),
    ("GET", "/audit/v1/export", "audit.export.read"),
    ("GET", "/audit/v1/keys", "audit.keys.read"),
    ("GET", "/v1/whoami", "iam.whoami.read"),
    ("GET", "/v1/users", "iam.users.list"),
    ("POST", "/v1/users", "iam.user.create"),
    ("GET", "/v1/users/{id}", "iam.user.read"),
    ("DELETE", "/v1/users/{id}", "iam.user.delete"),
    ("GET", "/v1/serviceids", "iam.serviceids.list"),
    ("POST", "/v1/serviceids", "iam.serviceid.create"),
    ("GET", "/v1/serviceids/{id}", "iam.serviceid.read"),
    ("DELETE", "/v1/serviceids/{id}", "iam.serviceid.delete"),
    ("GET", "/v2/groups", "iam.groups.list"),
    ("POST", "/v2/groups", "iam.group.create"),
    ("GET", "/v2/groups/{id}", "iam.group.read"),
    ("DELETE", "/v2/groups/{id}", "iam.group.delete"),
    ("GET", "/v2/groups/{id}/members", "iam.group.members.list"),
    ("PUT", "/v2/groups/{id}/members", "iam.group.members.add"),
    (
        "DELETE",
        "/v2/groups/{id}/members/{iam_id}",
        "iam.group.members.remove",
    ),
    ("GET", "/v1/apikeys", "iam.apikeys.list"),
    ("POST", "/v1/apikeys", "iam.apikey.create"),
    ("GET", "/v1/apikeys/{id}", "iam.apikey.read"),
    ("DELETE", "/v1/apikeys/{id}", "iam.apikey.delete"),
    ("POST", "/v1/apikeys/{id}/rotate", "iam.apikey.rotate"),
    ("GET", "/v1/policies", "iam.policies.list"),
    ("POST", "/v1/policies", "iam.policy.create"),
    ("GET", "/v1/policies/{id}", "iam.policy.read"),
    ("DELETE", "/v1/policies/{id}", "iam.policy.delete"),
    ("GET", "/v2/resource_instances", "resource.instances.list"),
    ("POST", "/v2/resource_instances", "resource.instance.create"),
    (
        "GET",
        "/v2/resource_instances/{id}",
        "resource.instance.read",
    ),
    (
        "PATCH",
        "/v2/resource_instances/{id}",
        "resource.instance.update",
    ),
    (
        "DELETE",
        "/v2/resource_instances/{id}",
        "resource.instance.delete",
    ),
    ("POST", "/v2/resource_keys", "resource.key.create"),
    (
        "GET",
        "/crypto_v1/instances/{id}",
        "hpcs.instance.connectioninfo",
    ),
    (
        "GET",
        "/crypto_v2/instances/{id}",
        "hpcs.instance.connectioninfo",
    ),
    ("GET", "/v1/authorizations", "iam.authorizations.list"),
    ("POST", "/v1/authorizations", "iam.authorization.create"),
    ("GET", "/v1/authorizations/{id}", "iam.authorization.read"),
    (
        "DELETE",
        "/v1/authorizations/{id}",
        "iam.authorization.delete",
    ),
];

/// Key actions (`/actions/{action}` and `?action=`): (name, audit action, durability).
const KEY_ACTIONS: &[(&str, &str, Durability)] = &[
    ("wrap", "kms.secrets.wrap", Durability::Queued),
    ("unwrap", "kms.secrets.unwrap", Durability::Queued),
    ("rewrap", "kms.secrets.rewrap", Durability::Queued),
    ("rotate", "kms.secrets.rotate", Durability::Sync),
    ("enable", "kms.secrets.enable", Durability::Sync),
    ("disable", "kms.secrets.disable", Durability::Sync),
    ("restore", "kms.secrets.restore", Durability::Sync),
    (
        "setKeyForDeletion",
        "kms.secrets.setkeyfordeletion",
        Durability::Sync,
    ),
    (
        "unsetKeyForDeletion",
        "kms.secrets.unsetkeyfordeletion",
        Durability::Sync,
    ),
    ("sync", "kms.secrets.sync", Durability::Sync),
];

/// Routes never audited: probes polled by load balancers and monitors.
const NOT_AUDITED: &[&str] = &["/health", "/ready", "/metrics"];

pub fn audited(route: &str) -> bool {
    !NOT_AUDITED.contains(&route)
}

/// The action name and durability of a call. `key_action` is the `{action}`
/// path segment or the `action` query parameter of a key action route.
pub fn classify(
    method: &str,
    route: &str,
    key_action: Option<&str>,
) -> (Cow<'static, str>, Durability) {
    let reads = matches!(method, "GET" | "HEAD");
    if let Some(name) = key_action {
        if let Some((_, action, d)) = KEY_ACTIONS.iter().find(|(n, _, _)| *n == name) {
            return (Cow::Borrowed(action), *d);
        }
    }
    let durability = if reads {
        Durability::Queued
    } else {
        Durability::Sync
    };
    match ROUTES.iter().find(|(m, r, _)| *m == method && *r == route) {
        Some((_, _, action)) => (Cow::Borrowed(action), durability),
        None => (Cow::Owned(generic(method, route)), durability),
    }
}

/// `<service>.<resource>.<verb>` from a route template the table does not know:
/// `/v1/users/{id}` + DELETE → `iam.users.delete`.
fn generic(method: &str, route: &str) -> String {
    if route == "unmatched" {
        return "http.unmatched".into();
    }
    let segments: Vec<&str> = route
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
        .filter(|s| {
            !(s.len() <= 3 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let service = match segments.first().copied() {
        Some("users" | "serviceids" | "groups" | "apikeys" | "policies" | "authorizations") => {
            "iam"
        }
        Some("resource_instances") => "resource",
        Some(s) if s.starts_with("crypto_v") => "hpcs",
        Some("api") => "kms",
        _ => "http",
    };
    let resource = segments
        .iter()
        .rev()
        .find(|s| !s.starts_with("crypto_v") && **s != "api")
        .copied()
        .unwrap_or("root");
    let verb = match method {
        "GET" | "HEAD" => "read",
        "POST" => "create",
        "PUT" | "PATCH" => "update",
        "DELETE" => "delete",
        _ => "call",
    };
    let clean: String = resource
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect();
    format!("{service}.{clean}.{verb}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_generic_names() {
        assert_eq!(
            classify("POST", "/api/v2/keys/{id}/actions/{action}", Some("wrap")),
            (Cow::Borrowed("kms.secrets.wrap"), Durability::Queued)
        );
        assert_eq!(
            classify("POST", "/api/v2/keys/{id}", Some("rotate")).1,
            Durability::Sync
        );
        assert_eq!(
            classify("PUT", "/api/v2/keys/{id}/policies", None).0,
            "kms.policies.write"
        );
        assert_eq!(
            classify("DELETE", "/v1/users/{id}", None).0,
            "iam.user.delete"
        );
        assert_eq!(
            classify("GET", "/crypto_v2/instances/{id}", None),
            (
                Cow::Borrowed("hpcs.instance.connectioninfo"),
                Durability::Queued
            )
        );
        // A route the table does not know yet still gets a name.
        assert_eq!(
            classify("DELETE", "/v9/widgets/{id}", None),
            (
                Cow::Owned("http.widgets.delete".to_string()),
                Durability::Sync
            )
        );
        assert_eq!(
            classify("POST", "/v2/groups/{id}/members", None).1,
            Durability::Sync
        );
        assert!(!audited("/health"));
    }
}
