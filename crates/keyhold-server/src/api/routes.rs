//! The route table: every route the API serves, one (method, path template,
//! handler) per line. The router ([`super::router`]), the route labels of the
//! metrics and the OpenAPI document (openapi.rs) are all built from it, so a
//! route cannot be served without being measured and described: adding one is
//! a line here plus its entry in openapi.rs (a unit test fails without it).

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};

use super::{
    actions, audit, ceremony, iam, identities, instances, keys, ops, policies, resources, AppState,
};

pub(crate) struct RouteDef {
    pub method: Method,
    pub path: &'static str,
    pub handler: MethodRouter<AppState>,
}

fn filter(m: &Method) -> MethodFilter {
    match *m {
        Method::GET => MethodFilter::GET,
        Method::HEAD => MethodFilter::HEAD,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        _ => MethodFilter::OPTIONS,
    }
}

fn r<H, T>(method: Method, path: &'static str, handler: H) -> RouteDef
where
    H: Handler<T, AppState>,
    T: 'static,
{
    RouteDef {
        handler: on(filter(&method), handler),
        method,
        path,
    }
}

/// Every route. A GET route also answers HEAD (axum does that); only the
/// explicit HEAD of `/api/v2/keys` is an operation of its own.
pub(crate) fn table() -> Vec<RouteDef> {
    use Method as M;
    vec![
        r(M::GET, "/api/v2/keys", keys::list),
        r(M::HEAD, "/api/v2/keys", keys::count),
        r(M::POST, "/api/v2/keys", keys::create),
        r(
            M::POST,
            "/api/v2/keys_with_policy_overrides",
            keys::create_with_overrides,
        ),
        r(
            M::GET,
            "/api/v2/keys/registrations",
            resources::list_all_registrations,
        ),
        r(M::GET, "/api/v2/keys/{id}", keys::get),
        r(M::POST, "/api/v2/keys/{id}", actions::query_action),
        r(M::PATCH, "/api/v2/keys/{id}", keys::patch),
        r(M::DELETE, "/api/v2/keys/{id}", keys::delete),
        r(M::GET, "/api/v2/keys/{id}/metadata", keys::metadata),
        r(M::DELETE, "/api/v2/keys/{id}/purge", keys::purge),
        r(M::POST, "/api/v2/keys/{id}/restore", keys::restore),
        r(M::GET, "/api/v2/keys/{id}/versions", keys::versions),
        r(
            M::POST,
            "/api/v2/keys/{id}/actions/{action}",
            actions::path_action,
        ),
        r(
            M::GET,
            "/api/v2/keys/{id}/policies",
            policies::get_key_policies,
        ),
        r(
            M::PUT,
            "/api/v2/keys/{id}/policies",
            policies::put_key_policies,
        ),
        r(
            M::GET,
            "/api/v2/keys/{id}/registrations",
            resources::list_key_registrations,
        ),
        r(
            M::POST,
            "/api/v2/keys/{id}/registrations",
            resources::registration_action,
        ),
        r(
            M::POST,
            "/api/v2/keys/{id}/registrations/{crn}",
            resources::create_registration,
        ),
        r(
            M::PATCH,
            "/api/v2/keys/{id}/registrations/{crn}",
            resources::update_registration,
        ),
        r(
            M::PUT,
            "/api/v2/keys/{id}/registrations/{crn}",
            resources::replace_registration,
        ),
        r(
            M::DELETE,
            "/api/v2/keys/{id}/registrations/{crn}",
            resources::delete_registration,
        ),
        r(
            M::POST,
            "/api/v2/keys/{id}/aliases/{alias}",
            resources::create_alias,
        ),
        r(
            M::DELETE,
            "/api/v2/keys/{id}/aliases/{alias}",
            resources::delete_alias,
        ),
        r(
            M::GET,
            "/api/v2/instance/policies",
            policies::get_instance_policies,
        ),
        r(
            M::PUT,
            "/api/v2/instance/policies",
            policies::put_instance_policies,
        ),
        r(
            M::GET,
            "/api/v2/instance/allowed_ip_port",
            policies::allowed_ip_port,
        ),
        r(M::GET, "/api/v2/import_token", resources::get_import_token),
        r(
            M::POST,
            "/api/v2/import_token",
            resources::create_import_token,
        ),
        r(M::GET, "/api/v2/key_rings", resources::list_rings),
        r(M::POST, "/api/v2/key_rings/{ring}", resources::create_ring),
        r(
            M::DELETE,
            "/api/v2/key_rings/{ring}",
            resources::delete_ring,
        ),
        r(M::POST, "/identity/token", iam::token),
        r(M::POST, "/oidc/token", iam::token),
        r(M::GET, "/identity/keys", iam::jwks),
        r(
            M::POST,
            "/v2/resource_instances",
            instances::create_instance,
        ),
        r(M::GET, "/v2/resource_instances", instances::list_instances),
        r(
            M::GET,
            "/v2/resource_instances/{id}",
            instances::get_instance,
        ),
        r(
            M::PATCH,
            "/v2/resource_instances/{id}",
            instances::update_instance,
        ),
        r(
            M::DELETE,
            "/v2/resource_instances/{id}",
            instances::delete_instance,
        ),
        r(M::POST, "/v2/resource_keys", instances::create_resource_key),
        r(
            M::GET,
            "/crypto_v1/instances/{id}",
            instances::connection_info,
        ),
        r(
            M::GET,
            "/crypto_v2/instances/{id}",
            instances::connection_info,
        ),
        r(
            M::POST,
            "/v1/authorizations",
            instances::create_authorization,
        ),
        r(M::GET, "/v1/authorizations", instances::list_authorizations),
        r(
            M::GET,
            "/v1/authorizations/{id}",
            instances::get_authorization,
        ),
        r(
            M::DELETE,
            "/v1/authorizations/{id}",
            instances::delete_authorization,
        ),
        r(M::GET, "/v1/whoami", identities::whoami),
        r(M::GET, "/v1/users", identities::list_users),
        r(M::POST, "/v1/users", identities::create_user),
        r(M::GET, "/v1/users/{id}", identities::get_user),
        r(M::DELETE, "/v1/users/{id}", identities::delete_user),
        r(M::GET, "/v1/serviceids", identities::list_service_ids),
        r(M::POST, "/v1/serviceids", identities::create_service_id),
        r(M::GET, "/v1/serviceids/{id}", identities::get_service_id),
        r(
            M::DELETE,
            "/v1/serviceids/{id}",
            identities::delete_service_id,
        ),
        r(M::GET, "/v2/groups", identities::list_groups),
        r(M::POST, "/v2/groups", identities::create_group),
        r(M::GET, "/v2/groups/{id}", identities::get_group),
        r(M::DELETE, "/v2/groups/{id}", identities::delete_group),
        r(M::GET, "/v2/groups/{id}/members", identities::list_members),
        r(M::PUT, "/v2/groups/{id}/members", identities::add_members),
        r(
            M::DELETE,
            "/v2/groups/{id}/members/{iam_id}",
            identities::remove_member,
        ),
        r(M::GET, "/v1/apikeys", identities::list_api_keys),
        r(M::POST, "/v1/apikeys", identities::create_api_key),
        r(M::GET, "/v1/apikeys/{id}", identities::get_api_key),
        r(M::DELETE, "/v1/apikeys/{id}", identities::delete_api_key),
        r(
            M::POST,
            "/v1/apikeys/{id}/rotate",
            identities::rotate_api_key,
        ),
        r(M::GET, "/v1/policies", identities::list_policies),
        r(M::POST, "/v1/policies", identities::create_policy),
        r(M::GET, "/v1/policies/{id}", identities::get_policy),
        r(M::DELETE, "/v1/policies/{id}", identities::delete_policy),
        r(M::GET, "/ceremony/v1/status", ceremony::status),
        r(M::POST, "/ceremony/v1/commands", ceremony::command),
        r(M::GET, "/audit/v1/events", audit::events),
        r(M::GET, "/audit/v1/export", audit::export),
        r(M::GET, "/audit/v1/keys", audit::keys),
        r(M::GET, "/health", ops::health),
        r(M::GET, "/ready", ops::ready),
        r(M::GET, "/metrics", ops::metrics),
        r(M::GET, "/openapi.json", ops::openapi),
    ]
}
