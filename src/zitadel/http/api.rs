//! The ZitadelApi implementation of [`HttpClient`]: each call dispatched to v1 or v2.

use super::*;

#[async_trait::async_trait]
impl ZitadelApi for HttpClient {
    async fn list_metadata(
        &self,
        target: &Target,
    ) -> Result<crate::zitadel::MetadataMap, ZitadelError> {
        Ok(self
            .list_metadata_for(target, Relevant::All)
            .await?
            .metadata)
    }

    async fn list_metadata_for(
        &self,
        target: &Target,
        relevant: Relevant<'_>,
    ) -> Result<Listing, ZitadelError> {
        self.on_service(service_of(target), move |selection| {
            Box::pin(self.list_with(selection, target, relevant))
        })
        .await
    }

    async fn bulk_set_metadata(
        &self,
        target: &Target,
        entries: &[(&str, &[u8])],
    ) -> Result<ObjectDetails, ZitadelError> {
        check_entries(entries)?;
        let service = service_of(target);
        self.on_service(service, move |selection| {
            Box::pin(async move {
                match selection.for_service(service) {
                    Api::V1 => self.v1_bulk_set(target, entries).await,
                    Api::V2 => {
                        self.ensure_user_in_org(selection, target).await?;
                        self.v2_set(target, entries).await
                    }
                }
            })
        })
        .await
    }

    async fn bulk_remove_metadata(
        &self,
        target: &Target,
        keys: &[&str],
    ) -> Result<ObjectDetails, ZitadelError> {
        if keys.is_empty() {
            return Err(ZitadelError::InvalidRequest(
                "a metadata removal needs at least one key".into(),
            ));
        }
        let service = service_of(target);
        self.on_service(service, move |selection| {
            Box::pin(async move {
                match selection.for_service(service) {
                    Api::V1 => self.v1_bulk_remove(target, keys).await,
                    Api::V2 => {
                        self.ensure_user_in_org(selection, target).await?;
                        self.v2_delete(target, keys).await
                    }
                }
            })
        })
        .await
    }

    async fn user_organization(&self, user_id: &str) -> Result<String, ZitadelError> {
        self.on_service(Service::User, move |selection| {
            Box::pin(self.user_org(selection, user_id))
        })
        .await
    }

    async fn find_organizations(&self, query: &OrgQuery) -> Result<Vec<Found>, ZitadelError> {
        let q = match query {
            OrgQuery::Name(name) => {
                serde_json::json!({"nameQuery": {"name": name, "method": "TEXT_QUERY_METHOD_EQUALS"}})
            }
            OrgQuery::Domain(domain) => {
                serde_json::json!({"domainQuery": {"domain": domain, "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}})
            }
        };
        let body = serde_json::json!({"query": {"offset": "0", "limit": 100}, "queries": [q]});
        let hits = self
            .on_service(Service::Org, |selection| {
                Box::pin(self.search_orgs(selection, &body))
            })
            .await?;
        Ok(hits
            .into_iter()
            .filter(|h| !h.id.is_empty())
            .map(|h| Found {
                org_id: h.id.clone(),
                id: h.id,
            })
            .collect())
    }

    async fn find_users(&self, query: &UserQuery) -> Result<Vec<Found>, ZitadelError> {
        let hits = self
            .on_service(Service::User, move |selection| {
                Box::pin(async move {
                    if selection.user_service_v2 {
                        let method = "TEXT_QUERY_METHOD_EQUALS";
                        let queries = match query {
                            UserQuery::LoginName(login) => vec![
                                serde_json::json!({"loginNameQuery": {"loginName": login, "method": method}}),
                            ],
                            UserQuery::UserName { org_id, user_name } => vec![
                                serde_json::json!({"organizationIdQuery": {"organizationId": org_id}}),
                                serde_json::json!({"userNameQuery": {"userName": user_name, "method": method}}),
                            ],
                            UserQuery::Email { org_id, email } => vec![
                                serde_json::json!({"organizationIdQuery": {"organizationId": org_id}}),
                                serde_json::json!({"emailQuery": {"emailAddress": email, "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}}),
                            ],
                        };
                        return self.v2_list_users(queries).await;
                    }
                    match query {
                        UserQuery::LoginName(login) => self.v1_user_by_login_name(login).await,
                        UserQuery::UserName { org_id, user_name } => {
                            let q = serde_json::json!({"userNameQuery": {"userName": user_name, "method": "TEXT_QUERY_METHOD_EQUALS"}});
                            self.v1_search_users(org_id, q).await
                        }
                        UserQuery::Email { org_id, email } => {
                            let q = serde_json::json!({"emailQuery": {"emailAddress": email, "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}});
                            self.v1_search_users(org_id, q).await
                        }
                    }
                })
            })
            .await?;
        Ok(hits
            .into_iter()
            .filter(|h| !h.id.is_empty())
            .map(|h| Found {
                id: h.id,
                org_id: h.details.resource_owner.unwrap_or_default(),
            })
            .collect())
    }

    async fn target_exists(&self, target: &Target) -> Result<Existence, ZitadelError> {
        match target {
            Target::User { user_id, .. } => {
                self.on_service(Service::User, move |selection| {
                    Box::pin(self.user_exists(selection, user_id))
                })
                .await
            }
            Target::Org { org_id } => {
                self.on_service(Service::Org, move |selection| {
                    Box::pin(self.org_exists(selection, org_id))
                })
                .await
            }
        }
    }

    fn api_selection(&self) -> Option<ApiSelection> {
        self.selector.get().map(|(_, selection)| selection)
    }

    async fn list_events(
        &self,
        query: &crate::zitadel::EventQuery,
    ) -> Result<Vec<crate::zitadel::Event>, ZitadelError> {
        self.admin_list_events(query).await
    }

    fn caller_id(&self) -> Option<String> {
        match &self.config.token {
            TokenSource::JwtProfile(profile) => Some(profile.user_id().to_owned()),
            _ => None,
        }
    }
}
