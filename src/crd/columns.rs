//! The `kubectl get` columns of each kind, one table per family (the connection kinds share
//! theirs; the metadata kinds differ only in the target columns). [`super::all`] puts them on
//! the generated CRDs instead of repeating `printcolumn` attributes on every derive.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition as Column;

/// A column shown by `kubectl get` (`type_` is `string`, `integer` or `date`).
fn column(name: &str, type_: &str, json_path: &str) -> Column {
    Column {
        name: name.to_string(),
        type_: type_.to_string(),
        json_path: json_path.to_string(),
        ..Column::default()
    }
}

/// A column shown only by `kubectl get -o wide` (priority 1).
fn wide(column: Column) -> Column {
    Column {
        priority: Some(1),
        ..column
    }
}

/// `field` (`status` or `reason`) of the condition of type `type_`.
fn condition(name: &str, type_: &str, field: &str) -> Column {
    let path = format!(".status.conditions[?(@.type==\"{type_}\")].{field}");
    column(name, "string", &path)
}

fn age() -> Column {
    column("Age", "date", ".metadata.creationTimestamp")
}

/// The columns of `ZitadelConnection` and `ClusterZitadelConnection`.
pub(super) fn connection() -> Vec<Column> {
    vec![
        column("URL", "string", ".spec.url"),
        condition("Ready", "Ready", "status"),
        column("Identity", "string", ".status.identity"),
        column("Drift", "string", ".status.driftDetection.mode"),
        column("UserAPI", "string", ".status.api.userMetadata"),
        column("OrgAPI", "string", ".status.api.orgMetadata"),
        wide(condition("Reason", "Ready", "reason")),
        age(),
    ]
}

/// The columns of `OrgMetadata`: the organization it resolved first.
pub(super) fn org_metadata() -> Vec<Column> {
    metadata(organization(), None)
}

/// The columns of `UserMetadata`: the user it resolved first, its organization in `-o wide`.
pub(super) fn user_metadata() -> Vec<Column> {
    let user = column("User", "string", ".status.userId");
    metadata(user, Some(wide(organization())))
}

fn organization() -> Column {
    column("Organization", "string", ".status.organizationId")
}

/// The metadata columns around the kind's `target` (first) and `wide_target` (first of the
/// `-o wide` ones).
fn metadata(target: Column, wide_target: Option<Column>) -> Vec<Column> {
    let mut columns = vec![
        target,
        column("Keys", "integer", ".status.managedKeyCount"),
        condition("Ready", "Ready", "status"),
        column("Sequence", "string", ".status.sequence"),
    ];
    columns.extend(wide_target);
    columns.extend([
        // Stalled carries the same reason as Ready, and is also there while suspended (no Ready).
        wide(condition("Reason", "Stalled", "reason")),
        wide(column("Changed", "string", ".status.changeDate")),
        age(),
    ]);
    columns
}
