//! The v2 services over Connect (`POST /<package>.<Service>/<Method>`, JSON;
//! `shared/zitadel-v2-and-events.md` §1): user and org metadata, the page source of the
//! listing, user and org lookups.

use serde::{Deserialize, Serialize};

use super::http::{HttpClient, SearchHit};
use super::listing::{Page, PageQuery, PageSource};
use super::v1::{MetadataItem, SetItem, decode_items, parse_total, set_items};
use super::{ObjectDetails, Target, ZitadelError};

/// Largest `limit` of a v2 list (above it: 400 `QUERY-4M0fs`).
pub(crate) const MAX_PAGE: u32 = 1000;
/// Bytes of JSON one v2 page should stay under. Connect has no size limit (no gRPC hop); our
/// own cap ([`super::MAX_RESPONSE_BYTES`], 16 MiB) is the bound.
pub(crate) const PAGE_BUDGET: usize = 12 * 1024 * 1024;

/// Connect paths (without the leading `/`); also the `operation` metric label.
pub(crate) mod path {
    pub const SET_USER: &str = "zitadel.user.v2.UserService/SetUserMetadata";
    pub const LIST_USER: &str = "zitadel.user.v2.UserService/ListUserMetadata";
    pub const DELETE_USER: &str = "zitadel.user.v2.UserService/DeleteUserMetadata";
    pub const SET_ORG: &str = "zitadel.org.v2.OrganizationService/SetOrganizationMetadata";
    pub const LIST_ORG: &str = "zitadel.org.v2.OrganizationService/ListOrganizationMetadata";
    pub const DELETE_ORG: &str = "zitadel.org.v2.OrganizationService/DeleteOrganizationMetadata";
    pub const GET_USER: &str = "zitadel.user.v2.UserService/GetUserByID";
    pub const LIST_USERS: &str = "zitadel.user.v2.UserService/ListUsers";
    pub const LIST_ORGS: &str = "zitadel.org.v2.OrganizationService/ListOrganizations";
}

/// The date protojson writes for an unset timestamp: not a real change date.
const ZERO_DATE: &str = "0001-01-01T00:00:00Z";

/// `userId` or `organizationId`: the v2 requests name the object in the body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Owner<'a> {
    UserId(&'a str),
    OrganizationId(&'a str),
}

fn owner(target: &Target) -> Owner<'_> {
    match target {
        Target::Org { org_id } => Owner::OrganizationId(org_id),
        Target::User { user_id, .. } => Owner::UserId(user_id),
    }
}

#[derive(Serialize)]
struct ListRequest<'a> {
    #[serde(flatten)]
    owner: Owner<'a>,
    pagination: Pagination,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filters: Vec<MetadataFilter<'a>>,
}

/// `zitadel.filter.v2.PaginationRequest`.
#[derive(Serialize)]
struct Pagination {
    /// uint64 → JSON string.
    offset: String,
    limit: u32,
    asc: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetadataFilter<'a> {
    key_filter: KeyFilter<'a>,
}

#[derive(Serialize)]
struct KeyFilter<'a> {
    key: &'a str,
    method: &'static str,
}

#[derive(Deserialize, Default)]
struct ListResponse {
    #[serde(default)]
    pagination: PaginationResponse,
    #[serde(default)]
    metadata: Vec<MetadataItem>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PaginationResponse {
    #[serde(default, deserialize_with = "super::string_or_number")]
    total_result: Option<String>,
}

#[derive(Serialize)]
struct SetRequest<'a> {
    #[serde(flatten)]
    owner: Owner<'a>,
    metadata: Vec<SetItem<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SetResponse {
    #[serde(default)]
    set_date: Option<String>,
}

#[derive(Serialize)]
struct DeleteRequest<'a> {
    #[serde(flatten)]
    owner: Owner<'a>,
    keys: &'a [&'a str],
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeleteResponse {
    #[serde(default)]
    deletion_date: Option<String>,
}

/// A write's date as [`ObjectDetails`]: no sequence (v2 has none), no resource owner.
fn dated(date: Option<String>) -> ObjectDetails {
    ObjectDetails {
        change_date: date.filter(|d| !d.is_empty() && d != ZERO_DATE),
        ..ObjectDetails::default()
    }
}

/// The pages of one target's v2 metadata.
pub(crate) struct V2Pages<'a> {
    pub(crate) client: &'a HttpClient,
    pub(crate) target: &'a Target,
}

impl PageSource for V2Pages<'_> {
    fn max_page(&self) -> Option<u32> {
        Some(MAX_PAGE)
    }

    fn budget(&self) -> usize {
        PAGE_BUDGET
    }

    async fn page(&self, query: PageQuery<'_>) -> Result<Page, ZitadelError> {
        let body = ListRequest {
            owner: owner(self.target),
            pagination: Pagination {
                offset: query.offset.to_string(),
                limit: query.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE),
                asc: true,
            },
            filters: query
                .key
                .map(|key| MetadataFilter {
                    key_filter: KeyFilter {
                        key,
                        method: "TEXT_FILTER_METHOD_EQUALS",
                    },
                })
                .into_iter()
                .collect(),
        };
        let raw = self
            .client
            .connect_raw(self.target.pick(path::LIST_ORG, path::LIST_USER), &body)
            .await?;
        let response: ListResponse = super::http::decode_json(&raw)?;
        Ok(Page {
            total: parse_total(response.pagination.total_result.as_deref())?,
            items: decode_items(response.metadata)?,
            bytes: raw.len(),
        })
    }
}

/// `GetUserByID` / `GET /v2/users/{id}` answer.
#[derive(Deserialize, Default)]
pub(crate) struct GetUserResponse {
    #[serde(default)]
    details: ObjectDetails,
    #[serde(default)]
    user: Option<UserV2>,
}

#[derive(Deserialize)]
struct UserV2 {
    #[serde(default)]
    details: ObjectDetails,
}

impl GetUserResponse {
    /// The user's organization.
    pub(crate) fn resource_owner(self) -> Option<String> {
        self.user
            .and_then(|u| u.details.resource_owner)
            .or(self.details.resource_owner)
            .filter(|org| !org.is_empty())
    }
}

/// `ListUsers` answer.
#[derive(Deserialize, Default)]
struct ListUsersResponse {
    #[serde(default)]
    result: Vec<UserHit>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserHit {
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    details: ObjectDetails,
}

impl HttpClient {
    /// `Set{User,Organization}Metadata`.
    pub(crate) async fn v2_set(
        &self,
        target: &Target,
        entries: &[(&str, &[u8])],
    ) -> Result<ObjectDetails, ZitadelError> {
        let body = SetRequest {
            owner: owner(target),
            metadata: set_items(entries),
        };
        let response: SetResponse = self
            .connect(target.pick(path::SET_ORG, path::SET_USER), &body)
            .await?;
        Ok(dated(response.set_date))
    }

    /// `Delete{User,Organization}Metadata`.
    pub(crate) async fn v2_delete(
        &self,
        target: &Target,
        keys: &[&str],
    ) -> Result<ObjectDetails, ZitadelError> {
        let body = DeleteRequest {
            owner: owner(target),
            keys,
        };
        let response: DeleteResponse = self
            .connect(target.pick(path::DELETE_ORG, path::DELETE_USER), &body)
            .await?;
        Ok(dated(response.deletion_date))
    }

    /// `GetUserByID` over Connect.
    pub(crate) async fn v2_get_user(&self, user_id: &str) -> Result<GetUserResponse, ZitadelError> {
        self.connect(path::GET_USER, &serde_json::json!({ "userId": user_id }))
            .await
    }

    /// `ListUsers` with `queries` (ANDed).
    pub(crate) async fn v2_list_users(
        &self,
        queries: Vec<serde_json::Value>,
    ) -> Result<Vec<SearchHit>, ZitadelError> {
        let body = serde_json::json!({
            "query": {"offset": "0", "limit": 100, "asc": true},
            "queries": queries,
        });
        let response: ListUsersResponse = self.connect(path::LIST_USERS, &body).await?;
        Ok(response
            .result
            .into_iter()
            .map(|u| SearchHit {
                id: u.user_id,
                details: u.details,
            })
            .collect())
    }

    /// `ListOrganizations` over Connect (`body` as built by the caller).
    pub(crate) async fn v2_list_orgs(
        &self,
        body: &serde_json::Value,
    ) -> Result<Vec<SearchHit>, ZitadelError> {
        let response: super::http::SearchResponse = self.connect(path::LIST_ORGS, body).await?;
        Ok(response.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_use_the_proto_json_names() {
        let user = Target::User {
            org_id: "1".into(),
            user_id: "2".into(),
        };
        let org = Target::Org { org_id: "1".into() };
        let list = ListRequest {
            owner: owner(&user),
            pagination: Pagination {
                offset: "1000".into(),
                limit: 1000,
                asc: true,
            },
            filters: vec![MetadataFilter {
                key_filter: KeyFilter {
                    key: "a/b%c",
                    method: "TEXT_FILTER_METHOD_EQUALS",
                },
            }],
        };
        assert_eq!(
            serde_json::to_value(&list).expect("json"),
            serde_json::json!({"userId": "2", "pagination": {"offset": "1000", "limit": 1000, "asc": true},
                "filters": [{"keyFilter": {"key": "a/b%c", "method": "TEXT_FILTER_METHOD_EQUALS"}}]})
        );
        let set = SetRequest {
            owner: owner(&org),
            metadata: set_items(&[("k", b"v")]),
        };
        assert_eq!(
            serde_json::to_value(&set).expect("json"),
            serde_json::json!({"organizationId": "1", "metadata": [{"key": "k", "value": "dg=="}]})
        );
        let delete = DeleteRequest {
            owner: owner(&user),
            keys: &["a", "b"],
        };
        assert_eq!(
            serde_json::to_value(&delete).expect("json"),
            serde_json::json!({"userId": "2", "keys": ["a", "b"]})
        );
    }

    #[test]
    fn write_results_carry_a_date_and_never_a_sequence() {
        let d = dated(Some("2026-03-30T10:15:02.123456Z".into()));
        assert_eq!(d.sequence, None);
        assert_eq!(d.date(), Some("2026-03-30T10:15:02.123456Z"));
        // A no-op on an object without metadata events answers the zero date: no date.
        assert_eq!(dated(Some(ZERO_DATE.into())).date(), None);
        assert_eq!(dated(None), ObjectDetails::default());
    }
}
