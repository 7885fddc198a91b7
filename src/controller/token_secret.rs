//! The default connection's `--token-secret` Secret: held with the finalizer
//! [`DEFAULT_CONNECTION`] while at least one object uses the default connection (so that deleting
//! the Secret — or the namespace it lives in — cannot take the token away from objects that still
//! have keys to remove), released as soon as none does. The operator stopping does not release
//! it: the next operator still needs it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use tokio::sync::watch;

use super::default_connection::Requeue;
use super::finalizers::{DEFAULT_CONNECTION, Finalizers, Held, Presence};
use super::usage::{ConnectionKey, UsageIndex, User, describe_users};
use super::{FIELD_MANAGER, Shutdown};
use crate::reason::Reason;

/// Re-check delay after a failed finalizer update.
const RETRY: Duration = Duration::from_secs(5);

/// What one step found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The finalizer is as wanted (or the Secret does not exist).
    Done,
    /// The Secret is being deleted while objects use it: it stays (message for an Event).
    Kept(String),
    /// The finalizer could not be changed.
    Failed(String),
}

/// Hold or release `secret` for `users` (held while there is any).
pub(super) async fn step(finalizers: &dyn Finalizers, secret: &Held, users: &[User]) -> Step {
    let want = !users.is_empty();
    match finalizers.ensure(secret, DEFAULT_CONNECTION, want).await {
        Ok(Presence::Present { deleting: true, .. }) if want => Step::Kept(format!(
            "{secret} is the operator's --token-secret and is being deleted; it stays while {} use the default connection",
            describe_users(users, 5)
        )),
        Ok(_) => Step::Done,
        Err(e) => Step::Failed(format!(
            "cannot update the finalizer {DEFAULT_CONNECTION} on {secret}: {e}"
        )),
    }
}

/// Keep the finalizer on `secret` in step with the default connection's users until `shutdown`;
/// re-checked when the users come and go (from none to some and back), when the credential
/// changed (`kicks`: e.g. the Secret was created), and every `recheck`.
pub(super) async fn run(
    client: Client,
    finalizers: Arc<dyn Finalizers>,
    usage: UsageIndex,
    secret: Held,
    recheck: Duration,
    mut kicks: watch::Receiver<Requeue>,
    shutdown: Shutdown,
) {
    let recorder = Recorder::new(client, Reporter::from(FIELD_MANAGER));
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        namespace: secret.namespace.clone(),
        name: Some(secret.name.clone()),
        ..Default::default()
    };
    let mut changes = usage.subscribe();
    let work = async {
        usage.synced().await;
        loop {
            let users = usage.users(&ConnectionKey::Default);
            let step = step(finalizers.as_ref(), &secret, &users).await;
            let wait = match &step {
                Step::Done => recheck,
                Step::Kept(note) | Step::Failed(note) => {
                    tracing::warn!(secret = %secret, "{note}");
                    let reason = if matches!(step, Step::Kept(_)) {
                        Reason::InUse
                    } else {
                        Reason::FinalizerFailed
                    };
                    let event = Event {
                        type_: EventType::Warning,
                        reason: reason.to_string(),
                        note: Some(note.chars().take(1000).collect()),
                        action: "Hold".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&event, &regarding).await {
                        tracing::debug!(error = %e, "cannot publish event");
                    }
                    recheck.min(RETRY)
                }
            };
            let last = (step == Step::Done).then_some(!users.is_empty());
            // Until the users go from none to some (or back), the wait ends, or the operator stops.
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    kicked = kicks.changed() => {
                        if kicked.is_ok() {
                            break;
                        }
                        // The credential follower stopped: only the timer and users remain.
                        kicks = watch::channel(Requeue::default()).1;
                    }
                    key = changes.recv() => match key {
                        Some(ConnectionKey::Default) => {
                            let now = !usage.users(&ConnectionKey::Default).is_empty();
                            if last != Some(now) {
                                break;
                            }
                        }
                        Some(_) => {}
                        None => return,
                    },
                }
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::SourceKind;
    use crate::testing::{FakeFinalizers, kube_error};

    fn user() -> User {
        User {
            kind: "OrgMetadata",
            namespace: "team".into(),
            name: "a".into(),
        }
    }

    #[tokio::test]
    async fn the_token_secret_is_held_while_objects_use_the_default_connection() {
        let fake = FakeFinalizers::default();
        let secret = Held::source(SourceKind::Secret, "zitadel-system", "token");
        fake.put(&secret, &["example.com/other"], false);
        assert_eq!(step(&fake, &secret, &[user()]).await, Step::Done);
        assert_eq!(
            fake.finalizers(&secret),
            vec!["example.com/other", DEFAULT_CONNECTION]
        );
        assert_eq!(step(&fake, &secret, &[]).await, Step::Done);
        assert_eq!(fake.finalizers(&secret), vec!["example.com/other"]);
        // Deleted while in use: kept, and said so.
        fake.put(&secret, &[DEFAULT_CONNECTION], true);
        match step(&fake, &secret, &[user()]).await {
            Step::Kept(note) => assert!(
                note.contains("1 object (OrgMetadata team/a)") && note.contains("token"),
                "{note}"
            ),
            other => panic!("{other:?}"),
        }
        // The last user gone: released, and the Secret is deleted.
        assert_eq!(step(&fake, &secret, &[]).await, Step::Done);
        assert!(!fake.exists(&secret));
        // No Secret: nothing to hold. A failing API is reported.
        assert_eq!(step(&fake, &secret, &[user()]).await, Step::Done);
        fake.put(&secret, &[], false);
        fake.fail(&secret, kube_error(403));
        assert!(matches!(
            step(&fake, &secret, &[user()]).await,
            Step::Failed(_)
        ));
    }
}
