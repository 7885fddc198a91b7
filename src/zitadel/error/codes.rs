//! ZITADEL gRPC status codes and the error ids the client tells apart.

/// gRPC status codes ZITADEL reports in the `code` field of its error body.
pub mod code {
    /// Unknown (HTTP 500).
    pub const UNKNOWN: i32 = 2;
    /// InvalidArgument (HTTP 400).
    pub const INVALID_ARGUMENT: i32 = 3;
    /// DeadlineExceeded (HTTP 504).
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// NotFound (HTTP 404).
    pub const NOT_FOUND: i32 = 5;
    /// PermissionDenied (HTTP 403).
    pub const PERMISSION_DENIED: i32 = 7;
    /// ResourceExhausted (HTTP 429).
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// FailedPrecondition (HTTP 400).
    pub const FAILED_PRECONDITION: i32 = 9;
    /// Aborted (HTTP 409).
    pub const ABORTED: i32 = 10;
    /// Unimplemented (HTTP 501).
    pub const UNIMPLEMENTED: i32 = 12;
    /// Internal (HTTP 500).
    pub const INTERNAL: i32 = 13;
    /// Unavailable (HTTP 503).
    pub const UNAVAILABLE: i32 = 14;
    /// Unauthenticated (HTTP 401).
    pub const UNAUTHENTICATED: i32 = 16;

    /// The numeric code of a Connect error code name (`"not_found"` → 5).
    pub fn from_connect(name: &str) -> Option<i32> {
        Some(match name {
            "canceled" => 1,
            "unknown" => 2,
            "invalid_argument" => 3,
            "deadline_exceeded" => 4,
            "not_found" => 5,
            "already_exists" => 6,
            "permission_denied" => 7,
            "resource_exhausted" => 8,
            "failed_precondition" => 9,
            "aborted" => 10,
            "out_of_range" => 11,
            "unimplemented" => 12,
            "internal" => 13,
            "unavailable" => 14,
            "data_loss" => 15,
            "unauthenticated" => 16,
            _ => return None,
        })
    }
}

/// ZITADEL error ids (`details[].id`) the operator reacts to. Messages are translated, ids are not.
pub mod ids {
    /// BulkRemove / Delete of org metadata with a key that does not exist.
    pub const ORG_KEY_NOT_EXISTING: &str = "META-2npds";
    /// BulkRemove / Delete of user metadata with a key that does not exist.
    pub const USER_KEY_NOT_EXISTING: &str = "META-2nnds";
    /// A user metadata write for a user that is not in the context org (v1), or that does not
    /// exist (v2, looked up in any org). Not proof that the user is gone: on v1 it also means
    /// "the user is in another organization".
    pub const USER_NOT_FOUND_IN_ORG: &str = "COMMAND-uXHNj";
    /// v2 org metadata Set/Delete for an organization that does not exist (with instance
    /// rights; without them `AUTH-AWfge` comes first). Confirmed with `target_exists` before
    /// anyone calls the org gone.
    pub const ORG_NOT_FOUND_V2: &str = "COMMAND-QXPGs";
    /// `x-zitadel-orgid` could not be resolved: the org does not exist **or its lookup failed**
    /// (database error, timeout). Ambiguous; never proof (`shared/zitadel-api.md` §3).
    pub const ORG_DOES_NOT_EXIST: &str = "AUTH-Bs7Ds";
    /// The caller holds no role with the needed permission in the org (v1 interceptor).
    pub const NO_PERMISSION: &str = "AUTH-5mWD2";
    /// The caller holds no role with the needed permission (v2 handlers).
    pub const NO_PERMISSION_V2: &str = "AUTH-AWfge";
    /// The caller has no membership at all in the org or instance (404, a permission problem).
    pub const NO_MEMBERSHIP: &str = "AUTHZ-cdgFk";
    /// `GetUserByID`: no user with that id in the instance (looked up before any permission
    /// check) — the one positive proof that a user is gone.
    pub const USER_NOT_FOUND: &str = "QUERY-Dfbg2";
    /// v2 list `limit` above 1000.
    pub const LIMIT_EXCEEDED: &str = "QUERY-4M0fs";
}
