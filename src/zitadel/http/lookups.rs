//! Lookups behind the API calls: users, their organizations, org searches, existence checks.

use super::*;

pub(super) fn service_of(target: &Target) -> Service {
    match target {
        Target::Org { .. } => Service::Org,
        Target::User { .. } => Service::User,
    }
}

impl HttpClient {
    /// `GetUserByID`: over Connect where the v2 user service is served, else `GET /v2/users/{id}`.
    pub(super) async fn get_user(
        &self,
        selection: ApiSelection,
        user_id: &str,
    ) -> Result<crate::zitadel::v2::GetUserResponse, ZitadelError> {
        if selection.user_service_v2 {
            self.v2_get_user(user_id).await
        } else {
            let url = self.url(&["v2", "users", user_id])?;
            self.rest::<()>(op::GET_USER, Method::GET, url, None, None)
                .await?
                .json()
        }
    }

    /// The organization of `user_id` (remembered: users never change organization).
    pub(super) async fn user_org(
        &self,
        selection: ApiSelection,
        user_id: &str,
    ) -> Result<String, ZitadelError> {
        if let Some(org) = self.user_orgs.get(user_id) {
            return Ok(org);
        }
        let org = self
            .get_user(selection, user_id)
            .await?
            .resource_owner()
            .ok_or_else(|| {
                ZitadelError::Decode(format!("user {user_id}: answer names no organization"))
            })?;
        self.user_orgs.put(user_id, &org);
        Ok(org)
    }

    /// v2 acts on a user whatever organization the target names (v1's `x-zitadel-orgid` makes
    /// ZITADEL refuse a user of another org): check it, so an object cannot reach a user
    /// outside the organizations its connection allows.
    pub(super) async fn ensure_user_in_org(
        &self,
        selection: ApiSelection,
        target: &Target,
    ) -> Result<(), ZitadelError> {
        let Target::User { org_id, user_id } = target else {
            return Ok(());
        };
        let actual = self.user_org(selection, user_id).await?;
        if &actual == org_id {
            Ok(())
        } else {
            Err(ZitadelError::UserNotInOrganization {
                user_id: user_id.clone(),
                org_id: org_id.clone(),
                actual,
            })
        }
    }

    pub(super) async fn list_with(
        &self,
        selection: ApiSelection,
        target: &Target,
        relevant: Relevant<'_>,
    ) -> Result<Listing, ZitadelError> {
        match selection.for_service(service_of(target)) {
            Api::V1 => {
                listing::list(
                    &V1Pages {
                        client: self,
                        target,
                    },
                    relevant,
                )
                .await
            }
            Api::V2 => {
                self.ensure_user_in_org(selection, target).await?;
                listing::list(
                    &V2Pages {
                        client: self,
                        target,
                    },
                    relevant,
                )
                .await
            }
        }
    }

    /// An org search (`{"query":…,"queries":[…]}`): Connect `ListOrganizations` where the v2
    /// org service is served, else `POST /v2/organizations/_search`, else (instances without
    /// it) `POST /admin/v1/orgs/_search`.
    pub(super) async fn search_orgs(
        &self,
        selection: ApiSelection,
        body: &serde_json::Value,
    ) -> Result<Vec<SearchHit>, ZitadelError> {
        if selection.org_service_v2 {
            return self.v2_list_orgs(body).await;
        }
        let url = self.url(&["v2", "organizations", "_search"])?;
        match self
            .rest(op::LIST_ORGS, Method::POST, url, None, Some(body))
            .await
            .and_then(|reply| reply.json::<SearchResponse>())
        {
            Ok(response) => Ok(response.result),
            Err(e) if e.is_route_missing() => self.v1_admin_search_orgs(body).await,
            Err(e) => Err(e),
        }
    }

    pub(super) async fn user_exists(
        &self,
        selection: ApiSelection,
        user_id: &str,
    ) -> Result<Existence, ZitadelError> {
        match self.get_user(selection, user_id).await {
            Ok(_) => Ok(Existence::Exists),
            Err(e)
                if e.status() == Some(404)
                    && e.id() == Some(crate::zitadel::ids::USER_NOT_FOUND) =>
            {
                Ok(Existence::Gone)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn org_exists(
        &self,
        selection: ApiSelection,
        org_id: &str,
    ) -> Result<Existence, ZitadelError> {
        let by_id = serde_json::json!({
            "query": {"offset": "0", "limit": 1},
            "queries": [{"idQuery": {"id": org_id}}],
        });
        if self
            .search_orgs(selection, &by_id)
            .await?
            .iter()
            .any(|hit| hit.id == org_id)
        {
            return Ok(Existence::Exists);
        }
        let any = serde_json::json!({"query": {"offset": "0", "limit": 1}});
        if self.search_orgs(selection, &any).await?.is_empty() {
            return Err(ZitadelError::Unproven(format!(
                "organization {org_id} is not visible to the operator, and no other organization is either: it may be deleted, or the service user may have lost its roles"
            )));
        }
        // Where v1 is the org metadata API, `x-zitadel-orgid` tells a deleted org
        // (`AUTH-Bs7Ds`) from one the caller lost its membership in (`AUTHZ-cdgFk` /
        // `AUTH-5mWD2`). Where v2 is, v1 may be gone (v5) and is not asked.
        if selection.org_metadata == Api::V2 {
            return Ok(Existence::Gone);
        }
        match self.v1_my_org(Some(org_id)).await {
            Ok(_) => Ok(Existence::Exists),
            Err(e) if e.is_org_lookup_failed() || e.is_route_missing() => Ok(Existence::Gone),
            Err(e) if e.is_permission() => Err(ZitadelError::Unproven(format!(
                "organization {org_id} is not visible to the operator although other organizations are, and ZITADEL refuses access to it ({e}): the service user's membership may have been removed"
            ))),
            Err(e) => Err(e),
        }
    }
}

/// An empty value means "delete this key" to newer v2 builds and is rejected by v1: never sent.
pub(super) fn check_entries(entries: &[(&str, &[u8])]) -> Result<(), ZitadelError> {
    if entries.is_empty() {
        return Err(ZitadelError::InvalidRequest(
            "a metadata write needs at least one key".into(),
        ));
    }
    if let Some((key, _)) = entries.iter().find(|(_, value)| value.is_empty()) {
        return Err(ZitadelError::InvalidRequest(format!(
            "metadata key {key:?}: an empty value is not sent (ZITADEL v2 reads it as \"delete\")"
        )));
    }
    Ok(())
}
