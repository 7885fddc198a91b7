//! grpc-gateway style routing.
//!
//! The gateway runs in the legacy unescaping mode: the whole path is percent-decoded before it is
//! split into segments, so an encoded `/` (`%2F`) in a key produces an extra segment and the route
//! no longer matches. For each method the handler registered last wins; ZITADEL's proto order
//! registers `{key}` before `_bulk` / `_search`, so those literals win for POST and DELETE, while
//! `GET .../metadata/_bulk` is still a Get of the key `_bulk`. A path that matches a pattern only
//! under another method is a 405 (code 12), anything else a 404 (code 5).

use percent_encoding::percent_decode_str;

use super::model::Operation;
use super::profile::ProfileFacts;

/// Path parameters of a matched route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Params {
    /// `{id}` / `{userId}`.
    pub(crate) id: Option<String>,
    /// `{key}`.
    pub(crate) key: Option<String>,
}

/// The routing outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// A served operation.
    Api(Operation, Params),
    /// No pattern matches the path (404, code 5 "Not Found").
    NotFound,
    /// A pattern matches the path under another method (code 12 "Method Not Allowed").
    MethodNotAllowed,
    /// A served operation called over Connect (`POST /<pkg>.<Service>/<Method>`).
    Connect(Operation),
    /// A Connect service that exists without this method: connect-go's generated handler
    /// answers `http.NotFound` (`404`, `text/plain`, `404 page not found`; v2e §1.7).
    ConnectNoMethod,
    /// A served Connect method called with another HTTP method than POST (405).
    ConnectWrongMethod,
}

impl Route {
    /// Whether the request is answered by a Connect handler (errors in Connect's shape).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(
            self,
            Route::Connect(_) | Route::ConnectNoMethod | Route::ConnectWrongMethod
        )
    }

    /// The operation used for recording and faults.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Route::Api(op, _) | Route::Connect(op) => *op,
            Route::NotFound
            | Route::MethodNotAllowed
            | Route::ConnectNoMethod
            | Route::ConnectWrongMethod => Operation::Other,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Seg {
    Lit(&'static str),
    Id,
    Key,
}

use Seg::{Id, Key, Lit};

const M: Seg = Lit("management");
const V1: Seg = Lit("v1");
const META: Seg = Lit("metadata");
const USERS: Seg = Lit("users");
const GLOBAL: Seg = Lit("global");
const V2: Seg = Lit("v2");
const V2BETA: Seg = Lit("v2beta");
const ORGS: Seg = Lit("organizations");
const ADMIN: Seg = Lit("admin");

/// Patterns in match priority order per method (the gateway tries the last registered first).
const PATTERNS: &[(&str, &[Seg], Operation)] = &[
    (
        "POST",
        &[M, V1, META, Lit("_bulk")],
        Operation::BulkSetOrgMetadata,
    ),
    (
        "POST",
        &[M, V1, META, Lit("_search")],
        Operation::ListOrgMetadata,
    ),
    ("POST", &[M, V1, META, Key], Operation::SetOrgMetadata),
    ("GET", &[M, V1, META, Key], Operation::GetOrgMetadata),
    (
        "DELETE",
        &[M, V1, META, Lit("_bulk")],
        Operation::BulkRemoveOrgMetadata,
    ),
    ("DELETE", &[M, V1, META, Key], Operation::RemoveOrgMetadata),
    (
        "POST",
        &[M, V1, USERS, Id, META, Lit("_bulk")],
        Operation::BulkSetUserMetadata,
    ),
    (
        "POST",
        &[M, V1, USERS, Id, META, Lit("_search")],
        Operation::ListUserMetadata,
    ),
    (
        "POST",
        &[M, V1, USERS, Id, META, Key],
        Operation::SetUserMetadata,
    ),
    (
        "GET",
        &[M, V1, USERS, Id, META, Key],
        Operation::GetUserMetadata,
    ),
    (
        "DELETE",
        &[M, V1, USERS, Id, META, Lit("_bulk")],
        Operation::BulkRemoveUserMetadata,
    ),
    (
        "DELETE",
        &[M, V1, USERS, Id, META, Key],
        Operation::RemoveUserMetadata,
    ),
    ("GET", &[M, V1, USERS, Id], Operation::GetUserV1),
    (
        "POST",
        &[M, V1, USERS, Lit("_search")],
        Operation::ListUsersV1,
    ),
    ("GET", &[M, V1, Lit("orgs"), Lit("me")], Operation::GetMyOrg),
    (
        "GET",
        &[M, V1, GLOBAL, Lit("orgs"), Lit("_by_domain")],
        Operation::GetOrgByDomain,
    ),
    (
        "GET",
        &[M, V1, GLOBAL, USERS, Lit("_by_login_name")],
        Operation::GetUserByLoginNameGlobal,
    ),
    ("GET", &[Lit("v2"), USERS, Id], Operation::GetUserV2),
    (
        "POST",
        &[Lit("v2"), Lit("organizations"), Lit("_search")],
        Operation::ListOrganizationsV2,
    ),
    ("POST", &[V2, USERS, Id, META], Operation::SetUserMetadataV2),
    (
        "POST",
        &[V2, USERS, Id, META, Lit("search")],
        Operation::ListUserMetadataV2,
    ),
    (
        "DELETE",
        &[V2, USERS, Id, META],
        Operation::DeleteUserMetadataV2,
    ),
    ("POST", &[V2, ORGS, Id, META], Operation::SetOrgMetadataV2),
    (
        "POST",
        &[V2, ORGS, Id, META, Lit("search")],
        Operation::ListOrgMetadataV2,
    ),
    (
        "DELETE",
        &[V2, ORGS, Id, META],
        Operation::DeleteOrgMetadataV2,
    ),
    (
        "POST",
        &[V2BETA, ORGS, Id, META],
        Operation::SetOrgMetadataV2beta,
    ),
    (
        "POST",
        &[V2BETA, ORGS, Id, META, Lit("search")],
        Operation::ListOrgMetadataV2beta,
    ),
    (
        "DELETE",
        &[V2BETA, ORGS, Id, META],
        Operation::DeleteOrgMetadataV2beta,
    ),
    ("POST", &[V2, USERS], Operation::ListUsersV2),
    (
        "POST",
        &[ADMIN, V1, Lit("events"), Lit("_search")],
        Operation::ListEvents,
    ),
    (
        "POST",
        &[ADMIN, V1, Lit("events"), Lit("types"), Lit("_search")],
        Operation::ListEventTypes,
    ),
    (
        "POST",
        &[ADMIN, V1, Lit("aggregates"), Lit("types"), Lit("_search")],
        Operation::ListAggregateTypes,
    ),
    (
        "POST",
        &[
            M,
            V1,
            Lit("orgs"),
            Lit("me"),
            Lit("changes"),
            Lit("_search"),
        ],
        Operation::ListOrgChanges,
    ),
    (
        "POST",
        &[M, V1, USERS, Id, Lit("changes"), Lit("_search")],
        Operation::ListUserChanges,
    ),
    (
        "POST",
        &[Lit("oauth"), Lit("v2"), Lit("token")],
        Operation::OAuthToken,
    ),
    (
        "GET",
        &[Lit(".well-known"), Lit("openid-configuration")],
        Operation::OidcDiscovery,
    ),
];

fn match_pattern(pattern: &[Seg], segments: &[&str]) -> Option<Params> {
    if pattern.len() != segments.len() {
        return None;
    }
    let mut params = Params::default();
    for (seg, actual) in pattern.iter().zip(segments) {
        match seg {
            Lit(lit) => {
                if lit != actual {
                    return None;
                }
            }
            Id => params.id = Some((*actual).to_owned()),
            Key => params.key = Some((*actual).to_owned()),
        }
    }
    Some(params)
}

/// Whether `facts` serve `op` over REST.
fn rest_served(op: Operation, facts: &ProfileFacts) -> bool {
    match op {
        Operation::SetUserMetadataV2
        | Operation::ListUserMetadataV2
        | Operation::DeleteUserMetadataV2 => facts.user_v2_metadata,
        Operation::SetOrgMetadataV2
        | Operation::ListOrgMetadataV2
        | Operation::DeleteOrgMetadataV2 => facts.org_v2_metadata,
        Operation::SetOrgMetadataV2beta
        | Operation::ListOrgMetadataV2beta
        | Operation::DeleteOrgMetadataV2beta => facts.org_v2beta_metadata,
        op if op.is_management_v1() => facts.v1,
        _ => true,
    }
}

/// The Connect methods a service serves under `facts`; `None` = no such service (the request
/// falls through to the gateway's catch-all route).
fn connect_methods(service: &str, facts: &ProfileFacts) -> Option<Vec<(&'static str, Operation)>> {
    if !facts.connect {
        return None;
    }
    let mut methods = Vec::new();
    match service {
        "zitadel.user.v2.UserService" => {
            methods.push(("GetUserByID", Operation::GetUserV2));
            methods.push(("ListUsers", Operation::ListUsersV2));
            if facts.user_v2_metadata {
                methods.push(("SetUserMetadata", Operation::SetUserMetadataV2));
                methods.push(("ListUserMetadata", Operation::ListUserMetadataV2));
                methods.push(("DeleteUserMetadata", Operation::DeleteUserMetadataV2));
            }
        }
        "zitadel.org.v2.OrganizationService" => {
            methods.push(("ListOrganizations", Operation::ListOrganizationsV2));
            if facts.org_v2_metadata {
                methods.push(("SetOrganizationMetadata", Operation::SetOrgMetadataV2));
                methods.push(("ListOrganizationMetadata", Operation::ListOrgMetadataV2));
                methods.push(("DeleteOrganizationMetadata", Operation::DeleteOrgMetadataV2));
            }
        }
        "zitadel.org.v2beta.OrganizationService" if facts.org_v2beta_metadata => {
            methods.push(("SetOrganizationMetadata", Operation::SetOrgMetadataV2beta));
            methods.push(("ListOrganizationMetadata", Operation::ListOrgMetadataV2beta));
            methods.push((
                "DeleteOrganizationMetadata",
                Operation::DeleteOrgMetadataV2beta,
            ));
        }
        _ => return None,
    }
    Some(methods)
}

/// Routes `method` + raw (percent-encoded) `path` on an instance with `facts`: Connect handlers
/// first (`/<pkg>.<Service>/<Method>`, mounted on the service prefix), then the gateway.
pub(crate) fn route(method: &str, raw_path: &str, facts: &ProfileFacts) -> Route {
    if let Some((service, rpc)) = raw_path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(service, _)| service.contains('.'))
        && let Some(methods) = connect_methods(service, facts)
    {
        return match methods.iter().find(|(name, _)| *name == rpc) {
            Some(_) if method != "POST" => Route::ConnectWrongMethod,
            Some((_, op)) => Route::Connect(*op),
            None => Route::ConnectNoMethod,
        };
    }
    let decoded = percent_decode_str(raw_path).decode_utf8_lossy();
    let Some(rest) = decoded.strip_prefix('/') else {
        return Route::NotFound;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let mut other_method = false;
    for (m, pattern, op) in PATTERNS {
        if !rest_served(*op, facts) {
            continue;
        }
        if let Some(params) = match_pattern(pattern, &segments) {
            if *m == method {
                return Route::Api(*op, params);
            }
            other_method = true;
        }
    }
    if other_method {
        Route::MethodNotAllowed
    } else {
        Route::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: &str, path: &str) -> Route {
        route(method, path, &crate::emulator::Profile::default().facts())
    }

    fn on(profile: crate::emulator::Profile, method: &str, path: &str) -> Route {
        route(method, path, &profile.facts())
    }

    #[test]
    fn connect_routes_follow_the_profile() {
        use crate::emulator::Profile;
        let user_list = "/zitadel.user.v2.UserService/ListUserMetadata";
        let org_list = "/zitadel.org.v2.OrganizationService/ListOrganizationMetadata";
        assert_eq!(on(Profile::V3, "POST", user_list), Route::NotFound);
        assert_eq!(
            on(Profile::V4_0, "POST", user_list),
            Route::Connect(Operation::ListUserMetadataV2)
        );
        assert_eq!(on(Profile::V4_0, "POST", org_list), Route::ConnectNoMethod);
        assert_eq!(
            on(Profile::V4x, "POST", org_list),
            Route::Connect(Operation::ListOrgMetadataV2)
        );
        assert_eq!(on(Profile::V4x, "GET", org_list), Route::ConnectWrongMethod);
        assert_eq!(
            on(
                Profile::V5,
                "POST",
                "/zitadel.org.v2beta.OrganizationService/SetOrganizationMetadata"
            ),
            Route::NotFound
        );
        assert_eq!(
            on(Profile::V5, "POST", "/management/v1/metadata/_search"),
            Route::NotFound
        );
        assert_eq!(
            on(
                Profile::V5,
                "POST",
                "/zitadel.admin.v1.AdminService/ListEvents"
            ),
            Route::NotFound
        );
        assert_eq!(
            on(Profile::V3, "DELETE", "/v2/users/1/metadata"),
            Route::NotFound
        );
        assert_eq!(
            on(Profile::V4_0, "DELETE", "/v2/users/1/metadata").operation(),
            Operation::DeleteUserMetadataV2
        );
    }

    #[test]
    fn literals_win_for_post_and_delete() {
        assert_eq!(
            op("POST", "/management/v1/metadata/_bulk").operation(),
            Operation::BulkSetOrgMetadata
        );
        assert_eq!(
            op("DELETE", "/management/v1/metadata/_bulk").operation(),
            Operation::BulkRemoveOrgMetadata
        );
        assert_eq!(
            op("POST", "/management/v1/metadata/_search").operation(),
            Operation::ListOrgMetadata
        );
        assert_eq!(
            op("GET", "/management/v1/metadata/_bulk"),
            Route::Api(
                Operation::GetOrgMetadata,
                Params {
                    id: None,
                    key: Some("_bulk".into())
                }
            )
        );
        assert_eq!(
            op("DELETE", "/management/v1/metadata/_search").operation(),
            Operation::RemoveOrgMetadata
        );
    }

    #[test]
    fn encoded_slash_breaks_the_route() {
        assert_eq!(op("GET", "/management/v1/metadata/a%2Fb"), Route::NotFound);
        assert_eq!(
            op("GET", "/management/v1/metadata/a%20b"),
            Route::Api(
                Operation::GetOrgMetadata,
                Params {
                    id: None,
                    key: Some("a b".into())
                }
            )
        );
    }

    #[test]
    fn search_and_global_routes() {
        assert_eq!(
            op("POST", "/management/v1/users/_search").operation(),
            Operation::ListUsersV1
        );
        // GET on the same path is a user lookup of the id `_search`.
        assert_eq!(
            op("GET", "/management/v1/users/_search"),
            Route::Api(
                Operation::GetUserV1,
                Params {
                    id: Some("_search".into()),
                    key: None
                }
            )
        );
        assert_eq!(
            op("POST", "/v2/organizations/_search").operation(),
            Operation::ListOrganizationsV2
        );
        assert_eq!(
            op("GET", "/v2/organizations/_search"),
            Route::MethodNotAllowed
        );
        assert_eq!(
            op("GET", "/management/v1/global/orgs/_by_domain").operation(),
            Operation::GetOrgByDomain
        );
        assert_eq!(
            op("GET", "/management/v1/global/users/_by_login_name").operation(),
            Operation::GetUserByLoginNameGlobal
        );
        assert_eq!(
            op("POST", "/management/v1/global/orgs/_by_domain"),
            Route::MethodNotAllowed
        );
    }

    #[test]
    fn oauth_routes() {
        assert_eq!(
            op("POST", "/oauth/v2/token").operation(),
            Operation::OAuthToken
        );
        assert_eq!(op("GET", "/oauth/v2/token"), Route::MethodNotAllowed);
        assert_eq!(
            op("GET", "/.well-known/openid-configuration").operation(),
            Operation::OidcDiscovery
        );
    }

    #[test]
    fn wrong_method_is_405() {
        assert_eq!(
            op("PUT", "/management/v1/metadata/k"),
            Route::MethodNotAllowed
        );
        assert_eq!(op("GET", "/management/v1/nothing"), Route::NotFound);
    }
}
