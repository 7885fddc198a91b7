//! Management API v1 over REST (`/management/v1/...`, `shared/zitadel-api.md` §1): metadata
//! calls, the page source of the listing, and the v1 user search.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::error::decode_base64;
use super::http::{HttpClient, SearchHit, SearchResponse};
use super::listing::{Page, PageQuery, PageSource};
use super::{ObjectDetails, Target, ZitadelError};

/// Bytes of JSON one v1 page should stay under. The REST gateway relays the answer from a gRPC
/// connection limited to 4 MiB of **protobuf**. A page only comes near that through its values,
/// and base64 makes a value's JSON 4/3 of its protobuf, so 3.5 MiB of protobuf — half a MiB of
/// margin for estimates — is about 4.67 MiB of JSON. (A page of long keys with small values has
/// a smaller JSON/protobuf ratio; if the gateway refuses one, its refusal names the size and the
/// page shrinks.)
pub(crate) const PAGE_BUDGET: usize =
    3 * 1024 * 1024 + 512 * 1024 + (3 * 1024 * 1024 + 512 * 1024) / 3;

/// v1 operation names (the `operation` metric label).
pub(crate) mod op {
    pub const LIST_ORG: &str = "ListOrgMetadata";
    pub const LIST_USER: &str = "ListUserMetadata";
    pub const BULK_SET_ORG: &str = "BulkSetOrgMetadata";
    pub const BULK_SET_USER: &str = "BulkSetUserMetadata";
    pub const BULK_REMOVE_ORG: &str = "BulkRemoveOrgMetadata";
    pub const BULK_REMOVE_USER: &str = "BulkRemoveUserMetadata";
    pub const GET_USER_BY_LOGIN_NAME: &str = "GetUserByLoginNameGlobal";
    pub const LIST_USERS: &str = "ListUsers";
    pub const GET_MY_ORG: &str = "GetMyOrg";
    pub const LIST_ORGS_ADMIN: &str = "AdminListOrgs";
}

#[derive(Serialize)]
struct ListRequest<'a> {
    query: ListQuery,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    queries: Vec<MetadataQuery<'a>>,
}

#[derive(Serialize)]
struct ListQuery {
    /// uint64 → JSON string, as protojson writes it.
    offset: String,
    /// Absent: every row (v1 has no maximum).
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
    asc: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetadataQuery<'a> {
    key_query: KeyQuery<'a>,
}

#[derive(Serialize)]
struct KeyQuery<'a> {
    key: &'a str,
    method: &'static str,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListResponse {
    #[serde(default)]
    details: ListDetails,
    #[serde(default)]
    result: Vec<MetadataItem>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListDetails {
    #[serde(default, deserialize_with = "super::string_or_number")]
    total_result: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct MetadataItem {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: String,
}

/// Decode list items (base64 values) into (key, value) rows.
pub(crate) fn decode_items(
    items: Vec<MetadataItem>,
) -> Result<Vec<(String, Vec<u8>)>, ZitadelError> {
    items
        .into_iter()
        .map(|item| {
            let value = decode_base64(&item.value).map_err(|_| {
                ZitadelError::Decode(format!("metadata key {:?}: value is not base64", item.key))
            })?;
            Ok((item.key, value))
        })
        .collect()
}

/// Parse `totalResult` (absent = unknown).
pub(crate) fn parse_total(total: Option<&str>) -> Result<Option<u64>, ZitadelError> {
    total
        .map(|t| {
            t.parse::<u64>()
                .map_err(|_| ZitadelError::Decode(format!("totalResult {t:?} is not a number")))
        })
        .transpose()
}

#[derive(Serialize)]
struct BulkSetRequest<'a> {
    metadata: Vec<SetItem<'a>>,
}

/// One key to set, as both APIs' set calls take it (v1 `BulkSetMetadata`, v2
/// `Set{User,Organization}Metadata`).
#[derive(Serialize)]
pub(super) struct SetItem<'a> {
    key: &'a str,
    /// Standard base64; never empty (an empty value deletes the key on newer v2 builds).
    value: String,
}

/// The entries to set, their values in standard base64.
pub(super) fn set_items<'a>(entries: &[(&'a str, &[u8])]) -> Vec<SetItem<'a>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    entries
        .iter()
        .map(|(key, value)| SetItem {
            key,
            value: base64::Engine::encode(&b64, value),
        })
        .collect()
}

#[derive(Serialize)]
struct BulkRemoveRequest<'a> {
    keys: &'a [&'a str],
}

#[derive(Deserialize, Default)]
struct DetailsResponse {
    #[serde(default)]
    details: ObjectDetails,
}

#[derive(Deserialize, Default)]
struct UserByLoginName {
    #[serde(default)]
    user: Option<SearchHit>,
}

/// The pages of one target's v1 metadata.
pub(crate) struct V1Pages<'a> {
    pub(crate) client: &'a HttpClient,
    pub(crate) target: &'a Target,
}

impl PageSource for V1Pages<'_> {
    fn max_page(&self) -> Option<u32> {
        None
    }

    fn budget(&self) -> usize {
        PAGE_BUDGET
    }

    async fn page(&self, query: PageQuery<'_>) -> Result<Page, ZitadelError> {
        let body = ListRequest {
            query: ListQuery {
                offset: query.offset.to_string(),
                limit: query.limit,
                asc: true,
            },
            queries: query
                .key
                .map(|key| MetadataQuery {
                    key_query: KeyQuery {
                        key,
                        method: "TEXT_QUERY_METHOD_EQUALS",
                    },
                })
                .into_iter()
                .collect(),
        };
        let url = self.client.metadata_url(self.target, "_search")?;
        let raw = self
            .client
            .rest_raw(
                self.target.pick(op::LIST_ORG, op::LIST_USER),
                Method::POST,
                url,
                Some(self.target.org_id()),
                Some(&body),
            )
            .await?;
        let response: ListResponse = super::http::decode_json(&raw)?;
        Ok(Page {
            total: parse_total(response.details.total_result.as_deref())?,
            items: decode_items(response.result)?,
            bytes: raw.len(),
        })
    }
}

impl HttpClient {
    /// `…/management/v1/metadata/<last>` or `…/management/v1/users/{id}/metadata/<last>`.
    pub(crate) fn metadata_url(
        &self,
        target: &Target,
        last: &str,
    ) -> Result<url::Url, ZitadelError> {
        let mut segments = vec!["management", "v1"];
        if let Target::User { user_id, .. } = target {
            segments.push("users");
            segments.push(user_id);
        }
        segments.push("metadata");
        segments.push(last);
        self.url(&segments)
    }

    /// BulkSet (`POST …/metadata/_bulk`).
    pub(crate) async fn v1_bulk_set(
        &self,
        target: &Target,
        entries: &[(&str, &[u8])],
    ) -> Result<ObjectDetails, ZitadelError> {
        let body = BulkSetRequest {
            metadata: set_items(entries),
        };
        let operation = target.pick(op::BULK_SET_ORG, op::BULK_SET_USER);
        self.v1_bulk(target, operation, Method::POST, &body).await
    }

    /// BulkRemove (`DELETE …/metadata/_bulk` with a JSON body).
    pub(crate) async fn v1_bulk_remove(
        &self,
        target: &Target,
        keys: &[&str],
    ) -> Result<ObjectDetails, ZitadelError> {
        let operation = target.pick(op::BULK_REMOVE_ORG, op::BULK_REMOVE_USER);
        let body = BulkRemoveRequest { keys };
        self.v1_bulk(target, operation, Method::DELETE, &body).await
    }

    /// One all-or-nothing call on `…/metadata/_bulk` in the target's organization; the
    /// details of the change.
    async fn v1_bulk<B: Serialize>(
        &self,
        target: &Target,
        operation: &'static str,
        method: Method,
        body: &B,
    ) -> Result<ObjectDetails, ZitadelError> {
        let url = self.metadata_url(target, "_bulk")?;
        let response: DetailsResponse = self
            .rest(operation, method, url, Some(target.org_id()), Some(body))
            .await?;
        Ok(response.details)
    }

    /// `GET /management/v1/global/users/_by_login_name` (exact, instance-wide).
    pub(crate) async fn v1_user_by_login_name(
        &self,
        login: &str,
    ) -> Result<Vec<SearchHit>, ZitadelError> {
        let mut url = self.url(&["management", "v1", "global", "users", "_by_login_name"])?;
        url.query_pairs_mut().append_pair("loginName", login);
        match self
            .rest::<(), UserByLoginName>(op::GET_USER_BY_LOGIN_NAME, Method::GET, url, None, None)
            .await
        {
            Ok(r) => Ok(r.user.into_iter().collect()),
            // Not found (the user does not exist, or is not visible): no hit. A missing route
            // or a membership problem is an error, not "no such user".
            Err(e) if e.status() == Some(404) && !e.is_route_missing() && !e.is_permission() => {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /management/v1/users/_search` in `org_id` with one query.
    pub(crate) async fn v1_search_users(
        &self,
        org_id: &str,
        query: serde_json::Value,
    ) -> Result<Vec<SearchHit>, ZitadelError> {
        let body = serde_json::json!({"query": {"offset": "0", "limit": 100}, "queries": [query]});
        let url = self.url(&["management", "v1", "users", "_search"])?;
        let response: SearchResponse = self
            .rest(op::LIST_USERS, Method::POST, url, Some(org_id), Some(&body))
            .await?;
        Ok(response.result)
    }

    /// `POST /admin/v1/orgs/_search` (instance role `iam.read`): the org search of instances
    /// without `/v2/organizations/_search`.
    pub(crate) async fn v1_admin_search_orgs(
        &self,
        body: &serde_json::Value,
    ) -> Result<Vec<SearchHit>, ZitadelError> {
        let url = self.url(&["admin", "v1", "orgs", "_search"])?;
        let response: SearchResponse = self
            .rest(op::LIST_ORGS_ADMIN, Method::POST, url, None, Some(body))
            .await?;
        Ok(response.result)
    }

    /// `GET /management/v1/orgs/me` in the context of `org_id` (`None`: the caller's own org):
    /// the org's id and name.
    pub(crate) async fn v1_my_org(
        &self,
        org_id: Option<&str>,
    ) -> Result<(String, String), ZitadelError> {
        #[derive(Deserialize, Default)]
        struct MyOrg {
            #[serde(default)]
            org: Option<OrgItem>,
        }
        #[derive(Deserialize)]
        struct OrgItem {
            #[serde(default)]
            id: String,
            #[serde(default)]
            name: String,
        }
        let url = self.url(&["management", "v1", "orgs", "me"])?;
        let me: MyOrg = self
            .rest::<(), MyOrg>(op::GET_MY_ORG, Method::GET, url, org_id, None)
            .await?;
        let org = me
            .org
            .ok_or_else(|| ZitadelError::Decode("orgs/me answered without an org".into()))?;
        Ok((org.id, org.name))
    }
}
