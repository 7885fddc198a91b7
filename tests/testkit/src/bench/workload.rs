//! The benchmark's workload: N objects, half `OrgMetadata` (one org each) and half
//! `UserMetadata` (one user each), every object with the same number of keys.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::emulator::{Emulator, Fault, Operation, RecordedRequest, TokenGrant};

/// The bearer token the benchmark registers in its emulators.
pub const TOKEN: &str = "bench-token";

/// Which metadata store an object writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// An organization's metadata (`OrgMetadata`).
    Org,
    /// A user's metadata (`UserMetadata`).
    User,
}

/// One object of the workload.
#[derive(Clone, Debug)]
pub struct Object {
    /// Kubernetes name.
    pub name: String,
    /// Org or user.
    pub kind: TargetKind,
    /// The org (for a user: the user's org).
    pub org_id: String,
    /// The user (empty for an org).
    pub user_id: String,
    /// Desired key/value pairs.
    pub entries: Vec<(String, String)>,
}

impl Object {
    /// The object as JSON for the Kubernetes API.
    pub fn manifest(&self, namespace: &str) -> Value {
        let metadata: Vec<Value> = self
            .entries
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let (kind, spec) = match self.kind {
            TargetKind::Org => (
                "OrgMetadata",
                json!({"organizationId": self.org_id, "metadata": metadata}),
            ),
            TargetKind::User => (
                "UserMetadata",
                json!({"userId": self.user_id, "organizationId": self.org_id, "metadata": metadata}),
            ),
        };
        json!({
            "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": self.name, "namespace": namespace},
            "spec": spec,
        })
    }
}

/// `n` objects (orgs and users alternate; the user `i` belongs to org `i`), `keys` keys each.
pub fn objects(n: usize, keys: usize) -> Vec<Object> {
    (0..n)
        .map(|i| {
            let j = i / 2;
            let org_id = format!("{}", 300_000_000_000_000_000u64 + j as u64);
            let entries = (0..keys)
                .map(|k| (format!("key-{k}"), format!("value-{i}-{k}")))
                .collect();
            if i % 2 == 0 {
                Object {
                    name: format!("org-{j:05}"),
                    kind: TargetKind::Org,
                    org_id,
                    user_id: String::new(),
                    entries,
                }
            } else {
                Object {
                    name: format!("user-{j:05}"),
                    kind: TargetKind::User,
                    org_id,
                    user_id: format!("{}", 400_000_000_000_000_000u64 + j as u64),
                    entries,
                }
            }
        })
        .collect()
}

/// A fresh emulator holding every org and user of `objects`, the IAM-owner [`TOKEN`], and a
/// latency fault on every operation.
pub async fn emulator(objects: &[Object], latency: Duration) -> anyhow::Result<Emulator> {
    let emu = Emulator::start().await?;
    for o in objects {
        match o.kind {
            TargetKind::Org => emu.add_org(&o.org_id, &format!("Bench {}", o.name)),
            TargetKind::User => {
                emu.add_org(&o.org_id, &format!("Bench org of {}", o.name));
                emu.add_user(&o.user_id, &o.org_id, &o.name);
            }
        }
    }
    let owner = objects.first().map_or("1", |o| o.org_id.as_str());
    emu.add_token(TOKEN, TokenGrant::iam_owner(owner));
    if !latency.is_zero() {
        emu.inject(Fault::latency(latency));
    }
    Ok(emu)
}

/// Kinds of ZITADEL calls the benchmark reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// List (`_search`) of org/user metadata.
    List,
    /// Bulk set.
    BulkSet,
    /// Bulk remove.
    BulkRemove,
    /// Single-key set (the per-key strategy).
    Set,
    /// Anything else (user lookups, single removes, gets, ...).
    Other,
}

impl CallKind {
    /// Classifies an emulator operation.
    pub fn of(op: Operation) -> CallKind {
        match op {
            Operation::ListOrgMetadata
            | Operation::ListUserMetadata
            | Operation::ListOrgMetadataV2
            | Operation::ListOrgMetadataV2beta
            | Operation::ListUserMetadataV2 => CallKind::List,
            // v2 Set and Delete take several keys: the bulk operations of v2.
            Operation::BulkSetOrgMetadata
            | Operation::BulkSetUserMetadata
            | Operation::SetOrgMetadataV2
            | Operation::SetOrgMetadataV2beta
            | Operation::SetUserMetadataV2 => CallKind::BulkSet,
            Operation::BulkRemoveOrgMetadata
            | Operation::BulkRemoveUserMetadata
            | Operation::DeleteOrgMetadataV2
            | Operation::DeleteOrgMetadataV2beta
            | Operation::DeleteUserMetadataV2 => CallKind::BulkRemove,
            Operation::SetOrgMetadata | Operation::SetUserMetadata => CallKind::Set,
            _ => CallKind::Other,
        }
    }

    /// Whether the call writes metadata.
    pub fn writes(self) -> bool {
        matches!(
            self,
            CallKind::BulkSet | CallKind::BulkRemove | CallKind::Set
        )
    }
}

/// Maps recorded requests to the object whose target they act on.
pub struct Targets {
    orgs: HashMap<String, usize>,
    users: HashMap<String, usize>,
}

impl Targets {
    /// The index of `objects`.
    pub fn new(objects: &[Object]) -> Targets {
        let mut orgs = HashMap::new();
        let mut users = HashMap::new();
        for (i, o) in objects.iter().enumerate() {
            match o.kind {
                TargetKind::Org => orgs.insert(o.org_id.clone(), i),
                TargetKind::User => users.insert(o.user_id.clone(), i),
            };
        }
        Targets { orgs, users }
    }

    /// The object a metadata request acts on (`None` for other requests): v1 paths, v2 REST
    /// paths, and v2 Connect calls (the id is in the body).
    pub fn object_of(&self, r: &RecordedRequest) -> Option<usize> {
        for (prefix, map) in [
            ("/v2/users/", &self.users),
            ("/v2/organizations/", &self.orgs),
            ("/v2beta/organizations/", &self.orgs),
        ] {
            if let Some(rest) = r.path.strip_prefix(prefix) {
                let (id, tail) = rest.split_once('/')?;
                return tail.starts_with("metadata").then(|| map.get(id).copied())?;
            }
        }
        if r.path.starts_with("/zitadel.") && r.path.ends_with("Metadata") {
            let field = |name: &str| r.body.get(name).and_then(serde_json::Value::as_str);
            if let Some(user) = field("userId") {
                return self.users.get(user).copied();
            }
            return self.orgs.get(field("organizationId")?).copied();
        }
        let rest = r.path.strip_prefix("/management/v1/")?;
        if let Some(user_path) = rest.strip_prefix("users/") {
            let (user, tail) = user_path.split_once('/')?;
            if !tail.starts_with("metadata/") {
                return None;
            }
            return self.users.get(user).copied();
        }
        if rest.starts_with("metadata/") {
            return self.orgs.get(r.org_header.as_deref()?).copied();
        }
        None
    }
}
