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
}

impl Route {
    /// The operation used for recording and faults.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Route::Api(op, _) => *op,
            Route::NotFound | Route::MethodNotAllowed => Operation::Other,
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

/// Routes `method` + raw (percent-encoded) `path`.
pub(crate) fn route(method: &str, raw_path: &str) -> Route {
    let decoded = percent_decode_str(raw_path).decode_utf8_lossy();
    let Some(rest) = decoded.strip_prefix('/') else {
        return Route::NotFound;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let mut other_method = false;
    for (m, pattern, op) in PATTERNS {
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
        route(method, path)
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
