//! Target resolution: the org/user the calls act on.

use crate::crd::{MetadataResource, MetadataStatus, OrgRef, TargetRef, UserRef};
use crate::reason::Reason;
use crate::zitadel::{Found, OrgQuery, Target, UserQuery, ZitadelApi, ZitadelError};

/// Why the target could not be resolved.
#[derive(Debug)]
pub enum TargetError {
    /// ZITADEL failed while searching.
    Zitadel(ZitadelError),
    /// The spec's reference does not resolve to exactly one org/user (Stalled).
    Unresolved {
        /// Why.
        reason: Reason,
        /// Human message.
        message: String,
    },
}

impl From<ZitadelError> for TargetError {
    fn from(e: ZitadelError) -> Self {
        TargetError::Zitadel(e)
    }
}

fn unresolved(reason: Reason, message: impl Into<String>) -> TargetError {
    TargetError::Unresolved {
        reason,
        message: message.into(),
    }
}

/// The org/user the calls act on. Names are resolved once through ZITADEL's search; the ids
/// found are kept in status and reused (the target fields are immutable). A UserMetadata without
/// an organization has its user looked up once for the org.
pub async fn resolve<K: MetadataResource>(
    obj: &K,
    api: &dyn ZitadelApi,
    previous: &MetadataStatus,
) -> Result<Target, TargetError> {
    let Some(target) = obj.target_ref() else {
        return Err(unresolved(
            Reason::InvalidSpec,
            "the spec names no target (set organizationId/organization or userId/user)",
        ));
    };
    match target {
        TargetRef::Org(OrgRef::Id(org_id)) => Ok(Target::Org { org_id }),
        TargetRef::Org(reference) => {
            if let Some(org_id) = previous.organization_id.clone() {
                return Ok(Target::Org { org_id });
            }
            let query = match &reference {
                OrgRef::Name(n) => OrgQuery::Name(n.clone()),
                OrgRef::Domain(d) => OrgQuery::Domain(d.clone()),
                // Handled above; kept total without panicking.
                OrgRef::Id(_) => OrgQuery::Name(String::new()),
            };
            let found = api.find_organizations(&query).await?;
            let hit = exactly_one(found, &TargetRef::Org(reference))?;
            Ok(Target::Org { org_id: hit.id })
        }
        TargetRef::User {
            user: UserRef::Id(user_id),
            org_id,
        } => {
            let org_id = match org_id.or_else(|| previous.organization_id.clone()) {
                Some(org) => org,
                None => api.user_organization(&user_id).await?,
            };
            Ok(Target::User { org_id, user_id })
        }
        TargetRef::User { user, org_id } => resolve_user(api, user, org_id, previous).await,
    }
}

/// A user named by login name, user name or email (searched once; the id is kept in status).
async fn resolve_user(
    api: &dyn ZitadelApi,
    user: UserRef,
    org_id: Option<String>,
    previous: &MetadataStatus,
) -> Result<Target, TargetError> {
    if let (Some(user_id), Some(org)) = (previous.user_id.clone(), previous.organization_id.clone())
    {
        return Ok(Target::User {
            org_id: org_id.unwrap_or(org),
            user_id,
        });
    }
    let query = match (&user, &org_id) {
        (UserRef::LoginName(l), _) => UserQuery::LoginName(l.clone()),
        (UserRef::UserName(u), Some(org)) => UserQuery::UserName {
            org_id: org.clone(),
            user_name: u.clone(),
        },
        (UserRef::Email(e), Some(org)) => UserQuery::Email {
            org_id: org.clone(),
            email: e.clone(),
        },
        _ => {
            return Err(unresolved(
                Reason::InvalidSpec,
                "user.userName and user.email need spec.organizationId",
            ));
        }
    };
    let reference = TargetRef::User {
        user,
        org_id: org_id.clone(),
    };
    let hit = exactly_one(api.find_users(&query).await?, &reference)?;
    Ok(Target::User {
        org_id: org_id.unwrap_or(hit.org_id),
        user_id: hit.id,
    })
}

/// Exactly one search hit, or a Stalled-worthy error naming the candidates.
fn exactly_one(mut found: Vec<Found>, reference: &TargetRef) -> Result<Found, TargetError> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(unresolved(
            Reason::TargetNotFound,
            format!("no {reference} is visible to the operator in ZITADEL"),
        )),
        n => Err(unresolved(
            Reason::TargetAmbiguous,
            format!(
                "{n} matches for {reference} (ids {}); use an id instead",
                found
                    .iter()
                    .map(|f| f.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Human description of the target for messages.
pub fn describe<K: MetadataResource>(obj: &K) -> String {
    obj.target_ref()
        .map_or_else(|| "no target".to_string(), |t| t.to_string())
}
