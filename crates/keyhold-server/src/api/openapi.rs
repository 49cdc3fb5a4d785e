//! The OpenAPI 3 document served at `/openapi.json`, generated from the route
//! table (routes.rs) and the operation descriptions below. A unit test checks
//! that every route has exactly one description and every description a route,
//! so the document cannot drift from what the router serves.
//!
//! Written with serde_json rather than utoipa's derive macros: the handlers
//! render KP envelopes as JSON values, not typed structs a derive could read,
//! and what must not drift (which routes and methods exist) comes from the same
//! table the router is built from.
//!
//! Content types are the ones the server sends: KP vendor types for key
//! creation/restore and key actions, unless `--plain-json`; errors are always
//! `application/json` in the KP error envelope.

use serde_json::{json, Map, Value};

use super::routes;

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// Bearer token and `Bluemix-Instance` (Key Protect operations).
    Instance,
    /// Bearer token only (the ceremony).
    Bearer,
    /// Nobody needs to authenticate.
    Open,
}

/// A response body.
#[derive(Clone, Copy)]
enum Out {
    /// No body (204, HEAD).
    Empty,
    /// `application/json` with the named schema.
    Json(&'static str),
    /// `application/vnd.ibm.kms.key+json` (or JSON with `--plain-json`).
    KeyVendor(&'static str),
    /// `application/vnd.ibm.kms.key_action+json` (or JSON with `--plain-json`).
    ActionVendor(&'static str),
    /// Prometheus text.
    Text,
    /// `application/x-ndjson`: one JSON document a line (the audit export).
    JsonLines,
}

/// A request body.
#[derive(Clone, Copy)]
enum In {
    None,
    /// JSON (any of the listed content types; the server reads JSON whatever the type).
    Json {
        schema: &'static str,
        types: &'static [&'static str],
        required: bool,
    },
    /// `application/x-www-form-urlencoded`.
    Form(&'static str),
}

struct Op {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    tag: &'static str,
    auth: Auth,
    query: &'static [&'static str],
    headers: &'static [&'static str],
    body: In,
    ok: &'static [(u16, Out)],
    errors: &'static [u16],
}

const JSON: &str = "application/json";
const KEY_VENDOR: &str = "application/vnd.ibm.kms.key+json";
const ACTION_VENDOR: &str = "application/vnd.ibm.kms.key_action+json";
const KEY_IN: &[&str] = &[JSON, KEY_VENDOR];
/// What the clients send for key actions (keyprotect-api.md §5: PY3 and Node name the action).
const ACTION_IN: &[&str] = &[
    JSON,
    ACTION_VENDOR,
    "application/vnd.ibm.kms.key_action_wrap+json",
    "application/vnd.ibm.kms.key_action_unwrap+json",
    "application/vnd.ibm.kms.key_action_rewrap+json",
    "application/vnd.ibm.kms.key_action_rotate+json",
];
const POLICY_IN: &[&str] = &[JSON, "application/vnd.ibm.kms.policy+json"];
const REG_IN: &[&str] = &[JSON, "application/vnd.ibm.kms.registration_input+json"];

/// The errors every instance-scoped operation may answer: bad input, no or bad
/// token, a role that does not allow it, not found, state conflicts, gone,
/// body too large, unprocessable, contention, internal, store/unit unavailable.
const KP_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 410, 413, 422, 429, 500, 503];
/// The errors of account-level operations (IAM, instances, authorizations):
/// no instance header, so no instance-state answers.
const ACCOUNT_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 413, 422, 500, 503];
const LIST_QUERY: &[&str] = &[
    "limit",
    "offset",
    "state",
    "extractable",
    "search",
    "sort",
    "filter",
];
const REG_QUERY: &[&str] = &[
    "limit",
    "offset",
    "urlEncodedResourceCRNQuery",
    "preventKeyDeletion",
    "totalCount",
];

fn ops() -> Vec<Op> {
    let kp = |method, path, id, summary, tag| Op {
        method,
        path,
        id,
        summary,
        tag,
        auth: Auth::Instance,
        query: &[],
        headers: &[],
        body: In::None,
        ok: &[(200, Out::Json("KeyCollection"))],
        errors: KP_ERRORS,
    };
    let json_in = |schema, types, required| In::Json {
        schema,
        types,
        required,
    };
    vec![
        Op { query: LIST_QUERY, headers: &["X-Kms-Key-Ring"], ..kp("get", "/api/v2/keys", "getKeys", "List keys", "keys") },
        Op { query: &["state", "extractable", "filter"], headers: &["X-Kms-Key-Ring"], ok: &[(200, Out::Empty)],
            ..kp("head", "/api/v2/keys", "getKeyCollectionMetadata", "Count keys (Key-Total header)", "keys") },
        Op { headers: &["X-Kms-Key-Ring", "Prefer"], body: json_in("KeyCreate", KEY_IN, true), ok: &[(201, Out::KeyVendor("KeyCollection"))],
            ..kp("post", "/api/v2/keys", "createKey", "Create or import a key", "keys") },
        Op { headers: &["X-Kms-Key-Ring", "Prefer"], body: json_in("KeyCreate", KEY_IN, true), ok: &[(201, Out::KeyVendor("KeyCollection"))],
            ..kp("post", "/api/v2/keys_with_policy_overrides", "createKeyWithPoliciesOverrides", "Create a key with its own policies", "keys") },
        Op { query: REG_QUERY, ok: &[(200, Out::Json("Collection"))],
            ..kp("get", "/api/v2/keys/registrations", "getRegistrationsAllKeys", "List registrations of all keys", "registrations") },
        kp("get", "/api/v2/keys/{id}", "getKey", "Retrieve a key (with the payload of a standard key)", "keys"),
        Op { query: &["action"], headers: &["Prefer"], body: json_in("KeyAction", ACTION_IN, false),
            ok: &[(200, Out::ActionVendor("KeyActionResult")), (200, Out::Json("KeyCollection")), (201, Out::KeyVendor("KeyCollection")), (204, Out::Empty)],
            ..kp("post", "/api/v2/keys/{id}", "actionOnKey", "Key action, query form (?action=wrap|unwrap|rewrap|rotate|enable|disable|restore|setKeyForDeletion|unsetKeyForDeletion)", "actions") },
        Op { headers: &["Prefer"], body: json_in("KeyPatch", KEY_IN, true), ..kp("patch", "/api/v2/keys/{id}", "patchKey", "Update a key (key ring)", "keys") },
        Op { query: &["force"], headers: &["Prefer"], ok: &[(200, Out::Json("KeyCollection")), (204, Out::Empty)],
            ..kp("delete", "/api/v2/keys/{id}", "deleteKey", "Delete a key", "keys") },
        kp("get", "/api/v2/keys/{id}/metadata", "getKeyMetadata", "Retrieve a key's metadata", "keys"),
        Op { headers: &["Prefer"], ok: &[(200, Out::Json("KeyCollection")), (204, Out::Empty)],
            ..kp("delete", "/api/v2/keys/{id}/purge", "purgeKey", "Purge a deleted key", "keys") },
        Op { body: json_in("Material", &[JSON, KEY_VENDOR, "application/vnd.ibm.kms.key_action_restore+json"], false),
            ok: &[(201, Out::KeyVendor("KeyCollection"))], ..kp("post", "/api/v2/keys/{id}/restore", "restoreKey", "Restore a deleted key", "keys") },
        Op { query: &["limit", "offset", "totalCount", "allKeyStates"], ok: &[(200, Out::Json("Collection"))],
            ..kp("get", "/api/v2/keys/{id}/versions", "getKeyVersions", "List a key's versions", "keys") },
        Op { headers: &["Prefer"], body: json_in("KeyAction", ACTION_IN, false),
            ok: &[(200, Out::ActionVendor("KeyActionResult")), (204, Out::Empty), (200, Out::Json("KeyCollection"))],
            ..kp("post", "/api/v2/keys/{id}/actions/{action}", "actionOnKeyPath", "Key action: wrap, unwrap, rewrap, rotate, enable, disable, setKeyForDeletion, unsetKeyForDeletion, sync", "actions") },
        Op { query: &["policy"], ok: &[(200, Out::Json("Collection"))], ..kp("get", "/api/v2/keys/{id}/policies", "getPolicy", "Retrieve a key's policies", "policies") },
        Op { query: &["policy"], body: json_in("PolicyPut", POLICY_IN, true), ok: &[(200, Out::Json("Collection"))],
            ..kp("put", "/api/v2/keys/{id}/policies", "putPolicy", "Set a key's policies", "policies") },
        Op { query: REG_QUERY, ok: &[(200, Out::Json("Collection"))],
            ..kp("get", "/api/v2/keys/{id}/registrations", "getRegistrations", "List a key's registrations", "registrations") },
        Op { query: &["action"], body: json_in("Object", REG_IN, false), ok: &[(204, Out::Empty)],
            ..kp("post", "/api/v2/keys/{id}/registrations", "actionOnRegistration", "Registration action (?action=deactivate)", "registrations") },
        Op { body: json_in("Object", REG_IN, false), ok: &[(201, Out::Json("Collection"))],
            ..kp("post", "/api/v2/keys/{id}/registrations/{crn}", "createRegistration", "Register a resource (service IDs only)", "registrations") },
        Op { body: json_in("Object", REG_IN, false), ok: &[(200, Out::Json("Collection"))],
            ..kp("patch", "/api/v2/keys/{id}/registrations/{crn}", "updateRegistration", "Update a registration", "registrations") },
        Op { body: json_in("Object", REG_IN, false), ok: &[(200, Out::Json("Collection"))],
            ..kp("put", "/api/v2/keys/{id}/registrations/{crn}", "replaceRegistration", "Replace a registration", "registrations") },
        Op { ok: &[(204, Out::Empty)], ..kp("delete", "/api/v2/keys/{id}/registrations/{crn}", "deleteRegistration", "Delete a registration", "registrations") },
        Op { ok: &[(201, Out::Json("Collection"))], ..kp("post", "/api/v2/keys/{id}/aliases/{alias}", "createKeyAlias", "Add an alias", "aliases") },
        Op { ok: &[(204, Out::Empty)], ..kp("delete", "/api/v2/keys/{id}/aliases/{alias}", "deleteKeyAlias", "Remove an alias", "aliases") },
        Op { query: &["policy"], ok: &[(200, Out::Json("Collection"))],
            ..kp("get", "/api/v2/instance/policies", "getInstancePolicy", "Retrieve the instance's policies", "policies") },
        Op { query: &["policy"], body: json_in("PolicyPut", POLICY_IN, true), ok: &[(204, Out::Empty)],
            ..kp("put", "/api/v2/instance/policies", "putInstancePolicy", "Set the instance's policies", "policies") },
        Op { ok: &[(200, Out::Json("Collection"))], ..kp("get", "/api/v2/instance/allowed_ip_port", "getAllowedIpPort", "The port the allowedIP policy admits", "policies") },
        Op { ok: &[(200, Out::Json("ImportToken"))], ..kp("get", "/api/v2/import_token", "getImportToken", "Retrieve the import token", "import") },
        Op { body: json_in("ImportTokenCreate", &[JSON], false), ok: &[(200, Out::Json("ImportToken"))],
            ..kp("post", "/api/v2/import_token", "postImportToken", "Create an import token", "import") },
        Op { query: &["limit", "offset", "totalCount"], ok: &[(200, Out::Json("Collection"))],
            ..kp("get", "/api/v2/key_rings", "listKeyRings", "List key rings", "key rings") },
        Op { ok: &[(201, Out::Empty)], ..kp("post", "/api/v2/key_rings/{ring}", "createKeyRing", "Create a key ring", "key rings") },
        Op { query: &["force"], ok: &[(204, Out::Empty)], ..kp("delete", "/api/v2/key_rings/{ring}", "deleteKeyRing", "Delete a key ring", "key rings") },
        Op { auth: Auth::Open, body: In::Form("TokenRequest"), ok: &[(200, Out::Json("TokenResponse"))], errors: &[400, 413, 500, 503],
            ..kp("post", "/identity/token", "getToken", "Exchange an API key or refresh token for an access token (IAM)", "iam") },
        Op { auth: Auth::Open, body: In::Form("TokenRequest"), ok: &[(200, Out::Json("TokenResponse"))], errors: &[400, 413, 500, 503],
            ..kp("post", "/oidc/token", "getTokenOidc", "The same as /identity/token (the path the Node client uses)", "iam") },
        Op { auth: Auth::Open, ok: &[(200, Out::Json("Jwks"))], errors: &[], ..kp("get", "/identity/keys", "getJwks", "The token-signing public key (JWKS)", "iam") },
        Op { auth: Auth::Bearer, ok: &[(201, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("post", "/v2/resource_instances", "createResourceInstance", "Provision a service instance (hs-crypto, kms, or another service)", "resource controller") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v2/resource_instances", "listResourceInstances", "List the account's service instances", "resource controller") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v2/resource_instances/{id}", "getResourceInstance", "Retrieve a service instance (by guid or CRN)", "resource controller") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("patch", "/v2/resource_instances/{id}", "updateResourceInstance", "Update a service instance's name or parameters", "resource controller") },
        Op { auth: Auth::Bearer, ok: &[(202, Out::Json("Object"))], errors: ACCOUNT_ERRORS, query: &["force"],
            ..kp("delete", "/v2/resource_instances/{id}", "deleteResourceInstance", "Delete a service instance (409 while in use; ?force=true for a kms instance with keys)", "resource controller") },
        Op { auth: Auth::Bearer, ok: &[(201, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("post", "/v2/resource_keys", "createResourceKey", "Create a service credential (an API key acting as the service instance)", "resource controller") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/crypto_v1/instances/{id}", "getCryptoInstanceV1", "Connection info of a crypto instance (v1 path)", "resource controller") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/crypto_v2/instances/{id}", "getCryptoInstanceV2", "Connection info of a crypto instance", "resource controller") },
        Op { auth: Auth::Bearer, ok: &[(201, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("post", "/v1/authorizations", "createAuthorization", "Authorize a source service (instance) to a target service (instance)", "authorizations") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/authorizations", "listAuthorizations", "List service-to-service authorizations", "authorizations") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/authorizations/{id}", "getAuthorization", "Retrieve an authorization", "authorizations") },
        Op { auth: Auth::Bearer, ok: &[(204, Out::Empty)], errors: ACCOUNT_ERRORS,
            ..kp("delete", "/v1/authorizations/{id}", "deleteAuthorization", "Remove an authorization", "authorizations") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/whoami", "whoami", "The caller's identity and account", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/users", "listUsers", "List users", "iam") },
        Op { auth: Auth::Bearer, ok: &[(201, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("post", "/v1/users", "createUser", "Create a user", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/users/{id}", "getUser", "Retrieve a user", "iam") },
        Op { auth: Auth::Bearer, ok: &[(204, Out::Empty)], errors: ACCOUNT_ERRORS,
            ..kp("delete", "/v1/users/{id}", "deleteUser", "Delete a user (its API keys and policies go too)", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/serviceids", "listServiceIds", "List service IDs", "iam") },
        Op { auth: Auth::Bearer, ok: &[(201, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("post", "/v1/serviceids", "createServiceId", "Create a service ID", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/serviceids/{id}", "getServiceId", "Retrieve a service ID", "iam") },
        Op { auth: Auth::Bearer, ok: &[(204, Out::Empty)], errors: ACCOUNT_ERRORS,
            ..kp("delete", "/v1/serviceids/{id}", "deleteServiceId", "Delete a service ID", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v2/groups", "listAccessGroups", "List access groups", "iam") },
        Op { auth: Auth::Bearer, ok: &[(201, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("post", "/v2/groups", "createAccessGroup", "Create an access group", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v2/groups/{id}", "getAccessGroup", "Retrieve an access group", "iam") },
        Op { auth: Auth::Bearer, ok: &[(204, Out::Empty)], errors: ACCOUNT_ERRORS,
            ..kp("delete", "/v2/groups/{id}", "deleteAccessGroup", "Delete an access group", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v2/groups/{id}/members", "listAccessGroupMembers", "List an access group's members", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("put", "/v2/groups/{id}/members", "addAccessGroupMembers", "Add members to an access group", "iam") },
        Op { auth: Auth::Bearer, ok: &[(204, Out::Empty)], errors: ACCOUNT_ERRORS,
            ..kp("delete", "/v2/groups/{id}/members/{iam_id}", "removeAccessGroupMember", "Remove a member from an access group", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/apikeys", "listApiKeys", "List API keys (never their secrets)", "iam") },
        Op { auth: Auth::Bearer, ok: &[(201, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("post", "/v1/apikeys", "createApiKey", "Create an API key (the secret is returned once)", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/apikeys/{id}", "getApiKey", "Retrieve an API key's details", "iam") },
        Op { auth: Auth::Bearer, ok: &[(204, Out::Empty)], errors: ACCOUNT_ERRORS,
            ..kp("delete", "/v1/apikeys/{id}", "deleteApiKey", "Delete an API key", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("post", "/v1/apikeys/{id}/rotate", "rotateApiKey", "Give an API key a new secret (returned once); the old one stops working", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/policies", "listPolicies", "List access policies", "iam") },
        Op { auth: Auth::Bearer, ok: &[(201, Out::Json("Object"))], errors: ACCOUNT_ERRORS, body: json_in("Object", &[JSON], true),
            ..kp("post", "/v1/policies", "createPolicy", "Create an access policy", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: ACCOUNT_ERRORS,
            ..kp("get", "/v1/policies/{id}", "getPolicy", "Retrieve an access policy", "iam") },
        Op { auth: Auth::Bearer, ok: &[(204, Out::Empty)], errors: ACCOUNT_ERRORS,
            ..kp("delete", "/v1/policies/{id}", "deletePolicy", "Delete an access policy", "iam") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::Json("Object"))], errors: &[401, 403, 500, 503],
            ..kp("get", "/ceremony/v1/status", "ceremonyStatus", "Master-key ceremony status", "ceremony") },
        Op { auth: Auth::Bearer, body: json_in("Object", &[JSON], true), ok: &[(200, Out::Json("Object"))],
            errors: &[400, 401, 403, 404, 409, 410, 413, 422, 429, 500, 503],
            ..kp("post", "/ceremony/v1/commands", "ceremonyCommand", "A signed ceremony command", "ceremony") },
        Op { auth: Auth::Bearer, query: &["from", "to", "key_id", "principal", "action", "outcome", "instance", "limit", "after"],
            ok: &[(200, Out::Json("Object"))], errors: &[400, 401, 403, 404, 500, 503],
            ..kp("get", "/audit/v1/events", "listAuditEvents", "Audit events of the caller's account (Administrator)", "audit") },
        Op { auth: Auth::Bearer, ok: &[(200, Out::JsonLines)], errors: &[401, 403, 404, 500, 503],
            ..kp("get", "/audit/v1/export", "exportAudit", "The audit chain as JSON lines, with checkpoints and a signed head (Administrator)", "audit") },
        Op { auth: Auth::Open, ok: &[(200, Out::Json("Object"))], errors: &[404, 500, 503],
            ..kp("get", "/audit/v1/keys", "auditKeys", "The audit checkpoint signing public key", "audit") },
        Op { auth: Auth::Open, ok: &[(200, Out::Json("Health"))], errors: &[], ..kp("get", "/health", "health", "Liveness: the process serves HTTP", "operations") },
        Op { auth: Auth::Open, ok: &[(200, Out::Json("Ready")), (503, Out::Json("Ready"))], errors: &[],
            ..kp("get", "/ready", "ready", "Readiness: the store answers and the crypto unit is unsealed", "operations") },
        Op { auth: Auth::Open, ok: &[(200, Out::Text)], errors: &[], ..kp("get", "/metrics", "metrics", "Prometheus metrics", "operations") },
        Op { auth: Auth::Open, ok: &[(200, Out::Json("Object"))], errors: &[], ..kp("get", "/openapi.json", "openapi", "This document", "operations") },
    ]
}

fn query_param(name: &str) -> Value {
    let (schema, what) = match name {
        "limit" => (json!({"type": "integer"}), "How many to return (1 to 5000)"),
        "offset" => (json!({"type": "integer"}), "How many to skip"),
        "state" => (
            json!({"type": "string"}),
            "Comma-separated key states (0,1,2,3,5)",
        ),
        "extractable" | "force" | "totalCount" | "allKeyStates" | "preventKeyDeletion" => {
            (json!({"type": "boolean"}), "true or false")
        }
        "search" => (json!({"type": "string"}), "Search in names and aliases"),
        "sort" => (
            json!({"type": "string"}),
            "Comma-separated sort fields (- for descending)",
        ),
        "filter" => (
            json!({"type": "string"}),
            "Space-separated prop=op:value filters",
        ),
        "policy" => (json!({"type": "string"}), "Which policy type"),
        "action" => (json!({"type": "string"}), "The action"),
        "urlEncodedResourceCRNQuery" => (json!({"type": "string"}), "A CRN pattern (* wildcards)"),
        _ => (json!({"type": "string"}), ""),
    };
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": what})
}

fn header_param(name: &str) -> Value {
    match name {
        "Bluemix-Instance" => json!({"name": name, "in": "header", "required": true,
            "schema": {"type": "string"}, "description": "The key management instance id"}),
        "X-Kms-Key-Ring" => json!({"name": name, "in": "header", "required": false,
            "schema": {"type": "string"}, "description": "The key ring"}),
        "Prefer" => json!({"name": name, "in": "header", "required": false,
            "schema": {"type": "string", "enum": ["return=representation", "return=minimal"]}}),
        _ => json!({"name": name, "in": "header", "required": false, "schema": {"type": "string"},
            "description": "A request id, echoed as Correlation-Id and X-Request-Id (up to 128 visible ASCII characters; else one is made)"}),
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn request_id_headers() -> Value {
    json!({
        "Correlation-Id": {"schema": {"type": "string"}},
        "X-Request-Id": {"schema": {"type": "string"}},
    })
}

fn response(out: Out, plain_json: bool) -> Value {
    let content = |ctype: &str, schema: Value| json!({ctype: {"schema": schema}});
    let vendor = |t: &'static str| if plain_json { JSON } else { t };
    let mut r = json!({"description": "Success", "headers": request_id_headers()});
    match out {
        Out::Empty => {}
        Out::Json(s) => r["content"] = content(JSON, schema_ref(s)),
        Out::KeyVendor(s) => r["content"] = content(vendor(KEY_VENDOR), schema_ref(s)),
        Out::ActionVendor(s) => r["content"] = content(vendor(ACTION_VENDOR), schema_ref(s)),
        Out::Text => {
            r["content"] = content(crate::metrics::CONTENT_TYPE, json!({"type": "string"}))
        }
        Out::JsonLines => r["content"] = content("application/x-ndjson", json!({"type": "string"})),
    }
    r
}

fn operation(op: &Op, plain_json: bool) -> Value {
    let mut params: Vec<Value> = op.query.iter().map(|q| query_param(q)).collect();
    for seg in op.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
    if op.auth == Auth::Instance {
        params.push(header_param("Bluemix-Instance"));
    }
    params.extend(op.headers.iter().map(|h| header_param(h)));
    params.push(header_param("Correlation-Id"));

    let mut responses = Map::new();
    for (status, out) in op.ok {
        let key = status.to_string();
        match responses.get_mut(&key) {
            // Two bodies for one status (e.g. rotate with Prefer): either schema.
            Some(existing) => {
                let new = response(*out, plain_json);
                if let (Some(a), Some(b)) = (
                    existing["content"].as_object_mut(),
                    new["content"].as_object(),
                ) {
                    for (ctype, media) in b {
                        match a.get_mut(ctype) {
                            Some(m) => {
                                let prev = m["schema"].take();
                                m["schema"] = json!({"anyOf": [prev, media["schema"].clone()]});
                            }
                            None => {
                                a.insert(ctype.clone(), media.clone());
                            }
                        }
                    }
                }
            }
            None => {
                responses.insert(key, response(*out, plain_json));
            }
        }
    }
    let error_schema = if op.tag == "iam" {
        json!({"anyOf": [schema_ref("IamError"), schema_ref("ErrorEnvelope")]})
    } else {
        schema_ref("ErrorEnvelope")
    };
    for status in op.errors {
        let mut r = json!({"description": "Error (Key Protect error envelope; see `reasons[].code`)",
            "headers": request_id_headers()});
        // A HEAD answer has no body, errors included (RFC 9110 §9.3.2).
        if op.method != "head" {
            r["content"] = json!({JSON: {"schema": error_schema.clone()}});
        }
        responses.insert(status.to_string(), r);
    }
    if op.method == "head" {
        if let Some(r) = responses.get_mut("200") {
            r["headers"]["Key-Total"] = json!({"schema": {"type": "integer"}});
        }
    }

    let mut o = json!({
        "operationId": op.id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    });
    o["security"] = match op.auth {
        Auth::Open => json!([]),
        _ => json!([{"bearer": []}]),
    };
    match op.body {
        In::None => {}
        In::Json {
            schema,
            types,
            required,
        } => {
            let content: Map<String, Value> = types
                .iter()
                .map(|t| (t.to_string(), json!({"schema": schema_ref(schema)})))
                .collect();
            o["requestBody"] = json!({"required": required, "content": content});
        }
        In::Form(schema) => {
            o["requestBody"] = json!({"required": true,
                "content": {"application/x-www-form-urlencoded": {"schema": schema_ref(schema)}}});
        }
    }
    o
}

fn schemas() -> Value {
    let version = json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "creationDate": {"type": "string"}}});
    let mut m = Map::new();
    m.insert("Object".into(), json!({"type": "object"}));
    m.insert("Collection".into(), json!({"type": "object", "required": ["metadata", "resources"], "properties": {
            "metadata": {"type": "object", "required": ["collectionType", "collectionTotal"], "properties": {
                "collectionType": {"type": "string"}, "collectionTotal": {"type": "integer"}, "totalCount": {"type": "integer"}}},
            "resources": {"type": "array", "items": {"type": "object"}}}}));
    m.insert("Key".into(), json!({"type": "object", "required": ["type", "id", "name", "state", "extractable", "crn"], "properties": {
            "type": {"type": "string"}, "id": {"type": "string"}, "name": {"type": "string"},
            "aliases": {"type": "array", "items": {"type": "string"}}, "description": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}}, "state": {"type": "integer", "enum": [0, 1, 2, 3, 5]},
            "extractable": {"type": "boolean"}, "crn": {"type": "string"}, "imported": {"type": "boolean"},
            "keyRingID": {"type": "string"}, "creationDate": {"type": "string"}, "lastUpdateDate": {"type": "string"},
            "keyVersion": version, "deleted": {"type": "boolean"}, "payload": {"type": "string"},
            "dualAuthDelete": {"type": "object"}}}));
    m.insert("KeyCollection".into(), json!({"type": "object", "required": ["metadata", "resources"], "properties": {
            "metadata": {"type": "object", "required": ["collectionType", "collectionTotal"], "properties": {
                "collectionType": {"type": "string", "enum": [KEY_VENDOR]}, "collectionTotal": {"type": "integer"}}},
            "resources": {"type": "array", "items": schema_ref("Key")}}}));
    m.insert("KeyCreate".into(), json!({"type": "object", "required": ["metadata", "resources"], "properties": {
            "metadata": {"type": "object", "properties": {"collectionType": {"type": "string"}, "collectionTotal": {"type": "integer"}}},
            "resources": {"type": "array", "items": {"type": "object", "properties": {
                "type": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                "extractable": {"type": "boolean"}, "expirationDate": {"type": "string"},
                "aliases": {"type": "array", "items": {"type": "string"}}, "tags": {"type": "array", "items": {"type": "string"}},
                "payload": {"type": "string"}, "encryptedNonce": {"type": "string"}, "iv": {"type": "string"},
                "encryptionAlgorithm": {"type": "string"}, "rotation": {"type": "object"}, "dualAuthDelete": {"type": "object"}}}}}}));
    m.insert(
        "KeyPatch".into(),
        json!({"type": "object", "properties": {"keyRingID": {"type": "string"}}}),
    );
    m.insert("KeyAction".into(), json!({"type": "object", "description": "wrap: plaintext (optional), aad; unwrap/rewrap: ciphertext, aad; rotate: payload etc. for imported keys",
            "properties": {"plaintext": {"type": "string"}, "ciphertext": {"type": "string"},
                "aad": {"type": "array", "items": {"type": "string"}}, "payload": {"type": "string"},
                "encryptedNonce": {"type": "string"}, "iv": {"type": "string"}, "encryptionAlgorithm": {"type": "string"}}}));
    m.insert("KeyActionResult".into(), json!({"type": "object", "description": "wrap: ciphertext, keyVersion (+ plaintext when generated); unwrap: plaintext, keyVersion (+ ciphertext, rewrappedKeyVersion after a rotation); rewrap: ciphertext, keyVersion, rewrappedKeyVersion",
            "required": ["keyVersion"], "properties": {"plaintext": {"type": "string"}, "ciphertext": {"type": "string"},
                "keyVersion": version, "rewrappedKeyVersion": version}}));
    m.insert("Material".into(), json!({"type": "object", "properties": {"payload": {"type": "string"}, "encryptedNonce": {"type": "string"},
            "iv": {"type": "string"}, "encryptionAlgorithm": {"type": "string"}}}));
    m.insert("PolicyPut".into(), json!({"type": "object", "required": ["metadata", "resources"], "properties": {
            "metadata": {"type": "object"}, "resources": {"type": "array", "items": {"type": "object"}}}}));
    m.insert("ImportTokenCreate".into(), json!({"type": "object", "properties": {"expiration": {"type": "integer"}, "maxAllowedRetrievals": {"type": "integer"}}}));
    m.insert("ImportToken".into(), json!({"type": "object", "properties": {"creationDate": {"type": "string"}, "expirationDate": {"type": "string"},
            "maxAllowedRetrievals": {"type": "integer"}, "remainingRetrievals": {"type": "integer"},
            "payload": {"type": "string"}, "nonce": {"type": "string"}}}));
    m.insert("TokenRequest".into(), json!({"type": "object", "required": ["grant_type"], "properties": {
            "grant_type": {"type": "string", "enum": ["urn:ibm:params:oauth:grant-type:apikey", "refresh_token"]},
            "apikey": {"type": "string"}, "refresh_token": {"type": "string"}}}));
    m.insert("TokenResponse".into(), json!({"type": "object", "required": ["access_token", "refresh_token", "token_type", "expires_in", "expiration"],
            "properties": {"access_token": {"type": "string"}, "refresh_token": {"type": "string"}, "token_type": {"type": "string"},
                "expires_in": {"type": "integer"}, "expiration": {"type": "integer"}, "scope": {"type": "string"}}}));
    m.insert("IamError".into(), json!({"type": "object", "required": ["errorCode", "errorMessage"], "properties": {
            "errorCode": {"type": "string"}, "errorMessage": {"type": "string"}, "context": {"type": "object"}}}));
    m.insert("Jwks".into(), json!({"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {"type": "object"}}}}));
    m.insert("Health".into(), json!({"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}));
    m.insert("Ready".into(), json!({"type": "object", "required": ["status", "not_ready", "checks"], "properties": {
            "status": {"type": "string", "enum": ["ready", "not_ready"]},
            "not_ready": {"type": "array", "items": {"type": "string", "enum": ["store", "crypto_unit", "audit"]}},
            "checks": {"type": "object", "required": ["store", "crypto_unit", "audit"], "properties": {
                "store": {"type": "string"},
                "audit": {"type": "string", "enum": ["ok", "unavailable", "off"]},
                "crypto_unit": {"type": "object", "required": ["kind", "state"], "properties": {
                    "kind": {"type": "string"}, "state": {"type": "string", "enum": ["unsealed", "sealed", "zeroized"]}}}}}}}));
    m.insert("ErrorEnvelope".into(), json!({"type": "object", "required": ["metadata", "resources"], "properties": {
            "metadata": {"type": "object", "required": ["collectionType", "collectionTotal"], "properties": {
                "collectionType": {"type": "string", "enum": ["application/vnd.ibm.kms.error+json"]},
                "collectionTotal": {"type": "integer", "enum": [1]}}},
            "resources": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "object",
                "required": ["errorMsg", "reasons"], "properties": {"errorMsg": {"type": "string"},
                "reasons": {"type": "array", "minItems": 1, "items": {"type": "object",
                    "required": ["code", "message", "status", "moreInfo"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}, "status": {"type": "integer"},
                        "moreInfo": {"type": "string"}, "target": {"type": "object", "properties": {
                            "type": {"type": "string"}, "name": {"type": "string"}}}}}}}}}}}));
    Value::Object(m)
}

/// The document; `plain_json` mirrors `--plain-json` (every body `application/json`).
pub(crate) fn document(plain_json: bool) -> Value {
    let ops = ops();
    let mut paths = Map::new();
    // Described in route-table order, so the document reads like the router.
    for route in routes::table() {
        let method = route.method.as_str().to_ascii_lowercase();
        let Some(op) = ops
            .iter()
            .find(|o| o.path == route.path && o.method == method)
        else {
            // Caught by the coverage test; the route is still listed.
            continue;
        };
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        item[method] = operation(op, plain_json);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Keyhold",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A key management service speaking the IBM Key Protect v2 API. Generated from the server's route table.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "An access token from POST /identity/token"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn table_ops() -> BTreeSet<(String, String)> {
        routes::table()
            .iter()
            .map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.to_string()))
            .collect()
    }

    #[test]
    fn every_route_has_exactly_one_description_and_back() {
        let table = routes::table();
        let routed = table_ops();
        assert_eq!(routed.len(), table.len(), "a route is listed twice");
        let described: Vec<(String, String)> = ops()
            .iter()
            .map(|o| (o.method.to_string(), o.path.to_string()))
            .collect();
        let described_set: BTreeSet<_> = described.iter().cloned().collect();
        assert_eq!(
            described_set.len(),
            described.len(),
            "an operation is described twice"
        );
        let undescribed: Vec<_> = routed.difference(&described_set).collect();
        assert!(
            undescribed.is_empty(),
            "routes without an OpenAPI entry (add them to openapi.rs ops()): {undescribed:?}"
        );
        let unrouted: Vec<_> = described_set.difference(&routed).collect();
        assert!(
            unrouted.is_empty(),
            "OpenAPI entries without a route: {unrouted:?}"
        );
    }

    #[test]
    fn document_lists_every_route_with_its_methods_and_refs_resolve() {
        for plain in [false, true] {
            let doc = document(plain);
            let mut listed = BTreeSet::new();
            for (path, item) in doc["paths"].as_object().unwrap() {
                for (method, op) in item.as_object().unwrap() {
                    listed.insert((method.clone(), path.clone()));
                    assert!(op["operationId"].is_string());
                    assert!(!op["responses"].as_object().unwrap().is_empty());
                }
            }
            assert_eq!(listed, table_ops());
            let text = doc.to_string();
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            for part in text.split("#/components/schemas/").skip(1) {
                let name: String = part.chars().take_while(|c| *c != '"').collect();
                assert!(schemas.contains_key(&name), "unresolved $ref {name}");
            }
        }
        let vendor = document(false).to_string();
        assert!(vendor.contains(ACTION_VENDOR) && vendor.contains(KEY_VENDOR));
        let plain = document(true);
        let wrap = &plain["paths"]["/api/v2/keys/{id}/actions/{action}"]["post"]["responses"]
            ["200"]["content"];
        assert!(wrap.get(JSON).is_some() && wrap.get(ACTION_VENDOR).is_none());
    }

    /// Routes reach the router only through the table: a `.route(` or `.nest(`
    /// anywhere else in the api module would serve a path the table (and so the
    /// metrics and this document) does not know.
    #[test]
    fn routes_are_added_only_through_the_table() {
        let sources = [
            ("mod.rs", include_str!("mod.rs")),
            ("actions.rs", include_str!("actions.rs")),
            ("ceremony.rs", include_str!("ceremony.rs")),
            ("iam.rs", include_str!("iam.rs")),
            ("keys.rs", include_str!("keys.rs")),
            ("ops.rs", include_str!("ops.rs")),
            ("policies.rs", include_str!("policies.rs")),
            ("resources.rs", include_str!("resources.rs")),
        ];
        for (name, text) in sources {
            let routes = text.matches(".route(").count();
            let allowed = usize::from(name == "mod.rs");
            assert_eq!(routes, allowed, "{name} adds routes outside routes.rs");
            for other in [".nest(", ".nest_service(", ".route_service(", ".merge("] {
                assert!(!text.contains(other), "{name} adds routes with {other}");
            }
        }
        let lib = include_str!("../server.rs");
        assert!(
            !lib.contains(".route("),
            "server.rs adds routes outside routes.rs"
        );
    }

    /// The router is built from the same table; here every described operation is
    /// sent through it and must reach a handler (not the fallback, not 405).
    #[tokio::test]
    async fn router_serves_every_described_operation() {
        use tower::ServiceExt;
        let app = super::super::tests_support::router();
        for o in ops() {
            let path = o
                .path
                .replace("{id}", "4fa2bd38-0000-4000-8000-000000000000")
                .replace("{action}", "sync")
                .replace("{crn}", "crn")
                .replace("{alias}", "alias")
                .replace("{ring}", "ring");
            let req = axum::http::Request::builder()
                .method(o.method.to_ascii_uppercase().as_str())
                .uri(&path)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_ne!(
                resp.status(),
                405,
                "{} {} is not routed for its method",
                o.method,
                o.path
            );
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            assert!(
                !String::from_utf8_lossy(&body).contains("No such endpoint"),
                "{} {} fell through to the fallback",
                o.method,
                o.path
            );
        }
    }
}
