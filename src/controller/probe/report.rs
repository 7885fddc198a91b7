//! Status patches and Events of a connection: its holds, its changes, its credential rotation.

use super::*;

pub(super) fn records(held: &BTreeSet<Held>) -> Vec<String> {
    held.iter().map(Held::record).collect()
}

impl Ctx {
    pub(super) async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: Reason,
        note: &str,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Probe".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    }

    /// Events for what holding and releasing found: a held Secret/ConfigMap being deleted
    /// (regarding it), and failures (regarding the connection).
    pub(super) async fn report_holds<C: ConnectionResource>(&self, obj: &C, done: &Executed) {
        let name = key_of(obj).to_string();
        for held in &done.deleting {
            let (kind, api_version) = match held.object.kind {
                HeldKind::Source(SourceKind::ConfigMap) => ("ConfigMap", "v1"),
                _ => ("Secret", "v1"),
            };
            let regarding = ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
                namespace: held.object.namespace.clone(),
                name: Some(held.object.name.clone()),
                ..Default::default()
            };
            let holders = held
                .finalizers
                .iter()
                .filter(|f| f.contains("zitadel-operator.dev/"))
                .count();
            let note = format!(
                "{} is being deleted but {name} reads it; it stays until the connection is deleted (held by {holders} of the operator's finalizers)",
                held.object
            );
            tracing::info!(connection = %name, object = %held.object, "held Secret/ConfigMap is being deleted; it stays while the connection exists");
            self.publish(&regarding, true, Reason::InUse, &note).await;
        }
        for (held, e) in done.hold_failures.iter().chain(&done.release_failures) {
            let note = format!("cannot update the operator's finalizer on {held}: {e}");
            tracing::warn!(connection = %name, object = %held, error = %e, "finalizer update failed");
            self.publish(&obj.object_ref(&()), true, Reason::FinalizerFailed, &note)
                .await;
        }
    }
}

/// Events for a changed status: Ready=False (Warning, the reason), the InUse message of a
/// connection being deleted, and around a credential change ([`credential_events`]).
pub(super) async fn announce<C: ConnectionResource>(
    obj: &C,
    ctx: &Ctx,
    previous: &ConnectionStatus,
    next: &ConnectionStatus,
) {
    let regarding = obj.object_ref(&());
    let changed = |type_: &str| {
        let old = conditions::find(&previous.conditions, type_)
            .map(|c| (&c.status, &c.reason, &c.message));
        let new = conditions::find(&next.conditions, type_);
        new.filter(|c| Some((&c.status, &c.reason, &c.message)) != old)
    };
    for (warning, reason, note) in credential_events(previous, next) {
        tracing::info!(connection = %key_of(obj), reason = %reason, "{note}");
        ctx.publish(&regarding, warning, reason, &note).await;
    }
    if let Some(ready) = changed(conditions::READY)
        && ready.status == "False"
        && let Some(reason) = Reason::parse(&ready.reason)
    {
        ctx.publish(&regarding, true, reason, &ready.message).await;
    }
    if let Some(in_use) = changed(conditions::TERMINATING) {
        tracing::info!(connection = %key_of(obj), message = %in_use.message, "connection in use");
        ctx.publish(&regarding, true, Reason::InUse, &in_use.message)
            .await;
    }
}

/// Reasons a probe fails on when ZITADEL (or the key file) refuses the credentials themselves.
/// `ZitadelRejected`: the token endpoint refuses a key's assertion with 400 `invalid_grant`.
pub(super) const REJECTIONS: [Reason; 4] = [
    Reason::ZitadelUnauthenticated,
    Reason::ZitadelPermissionDenied,
    Reason::InvalidCredentials,
    Reason::ZitadelRejected,
];

/// The Events of a credential change (pure): `CredentialsChanged` when the connection read other
/// Secret/ConfigMap versions (naming them, never their content), then `CredentialsAccepted` the
/// first time a probe succeeds since, or `CredentialsRejected` the first time one fails on the
/// credentials themselves. Returns (warning, reason, note).
pub(super) fn credential_events(
    previous: &ConnectionStatus,
    next: &ConnectionStatus,
) -> Vec<(bool, Reason, String)> {
    let mut events = Vec::new();
    let (old, new) = (
        &previous.observed_secret_versions,
        &next.observed_secret_versions,
    );
    let rotated = !new.is_empty() && old != new;
    if rotated {
        let picked: Vec<&str> = new
            .iter()
            .filter(|v| !old.contains(v))
            .map(String::as_str)
            .collect();
        let note = format!("picked up {}", picked.join(", "));
        events.push((false, Reason::CredentialsChanged, note));
    }
    let ready = |s: &ConnectionStatus| {
        conditions::find(&s.conditions, conditions::READY)
            .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
    };
    let before = ready(previous);
    match ready(next) {
        Some((true, _, _)) if rotated || !before.as_ref().is_some_and(|b| b.0) => {
            let who = next.identity.as_deref().unwrap_or("the service user");
            let note = format!("ZITADEL accepted the credentials ({who})");
            events.push((false, Reason::CredentialsAccepted, note));
        }
        Some((false, reason, message))
            if REJECTIONS.iter().any(|r| *r == reason.as_str())
                && (rotated || before.as_ref().is_none_or(|b| b.1 != reason)) =>
        {
            let note = format!("the credentials were rejected: {message}");
            events.push((true, Reason::CredentialsRejected, note));
        }
        _ => {}
    }
    events
}
