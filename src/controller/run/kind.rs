//! One kind's controller for one watch scope: its trigger stream and the watches that re-sync dependents.

use super::*;

/// The controller of kind `K` for one watch scope, with its trigger stream (which also feeds the
/// target index) and the watches that re-sync dependents of Secrets, ConfigMaps and connections.
pub(super) fn kind_controller<K>(
    client: &Client,
    scope: Option<String>,
    targets: &TargetIndex,
    usage: &UsageIndex,
    settings: &Settings,
    requeues: &tokio::sync::watch::Receiver<Requeue>,
    drifted: mpsc::UnboundedReceiver<ObjectRef<K>>,
) -> Controller<K>
where
    K: MetadataResource + Resource<DynamicType = ()>,
{
    let api: Api<K> = scoped_api(client, scope.as_deref());
    let (reader, writer) = reflector::store();
    let index = targets.clone();
    let users = usage.clone();
    let watched = scope.clone();
    // Sharded: this process reconciles only the objects its selector matches; the target index
    // and the connections' users are fed by the watch of all objects instead ([`claims_watch`]).
    let sharded = settings.watch_selector.is_some();
    let trigger = watch_selected(api, settings.watch_selector.as_deref())
        // Nothing reads managedFields (three quarters of the cache's memory) or kubectl's copy of
        // the last applied object; the entries are kept packed (restored by the reconcile).
        .modify(cache_form::<K>)
        .inspect_ok(move |event| {
            if !sharded {
                index.observe(watched.as_deref(), event, claims::identity::<K>);
                users.observe(watched.as_deref(), event);
            }
        })
        .reflect(writer)
        .applied_objects()
        // Reconcile on changes of spec (generation; deletion bumps it too), finalizers, labels
        // and annotations — not on the operator's own status writes, which would cost one more
        // ZITADEL read per write. Drift is caught from ZITADEL's event log (`drifted`) or by
        // the periodic resync.
        .predicate_filter(
            predicates::generation
                .combine(predicates::finalizers)
                .combine(predicates::labels)
                .combine(predicates::annotations),
            PredicateConfig::default(),
        );
    let drifted =
        futures::stream::unfold(
            drifted,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        );
    let controller = Controller::for_stream(trigger, reader)
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .trigger_backoff(NoTriggerBackoff)
        .reconcile_on(drifted);
    with_dependent_watches(controller, client, scope.as_deref(), requeues)
}

/// `controller` with the watches that re-sync dependents: of the Secrets/ConfigMaps named in
/// `valueFrom` (metadata-only watches: values are read on reconcile, never cached), and of the
/// connections (it becomes Ready, rotates, is deleted; the default connection's credential).
fn with_dependent_watches<K>(
    controller: Controller<K>,
    client: &Client,
    ns: Option<&str>,
    requeues: &tokio::sync::watch::Receiver<Requeue>,
) -> Controller<K>
where
    K: MetadataResource + Resource<DynamicType = ()>,
{
    // Re-sync objects whose valueFrom names a Secret/ConfigMap that changed (metadata-only
    // watches: values are read on reconcile, never cached), and the objects using a connection
    // when what they depend on changes (it becomes Ready, rotates, is deleted).
    let secrets: Api<PartialObjectMeta<Secret>> = scoped_api(client, ns);
    let config_maps: Api<PartialObjectMeta<ConfigMap>> = scoped_api(client, ns);
    let connections: Api<ZitadelConnection> = scoped_api(client, ns);
    let cluster_connections: Api<ClusterZitadelConnection> = Api::all(client.clone());
    let store = controller.store();
    let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
    // A change of the default connection's credential re-queues the objects it can unblock.
    let controller = controller.reconcile_on(default_requeues(store.clone(), requeues.clone()));
    let connections = connection_changes(watch(connections), |c: &ZitadelConnection| {
        c.status.as_ref()
    });
    let cluster_connections = connection_changes(
        watch(cluster_connections),
        |c: &ClusterZitadelConnection| c.status.as_ref(),
    );
    controller
        .watches_stream(connections, move |c| {
            let ns = c.metadata.namespace.as_deref();
            connection_dependents(&s1, ConnectionKind::ZitadelConnection, ns, &c.name_any())
        })
        .watches_stream(cluster_connections, move |c| {
            let kind = ConnectionKind::ClusterZitadelConnection;
            connection_dependents(&s2, kind, None, &c.name_any())
        })
        .watches_stream(watch(secrets).touched_objects(), move |s| {
            dependents(&s3, SourceKind::Secret, &s)
        })
        .watches_stream(watch(config_maps).touched_objects(), move |c| {
            dependents(&store, SourceKind::ConfigMap, &c)
        })
}

/// The form a cached object is kept in: [`strip_meta`], and the entries packed into one buffer
/// ([`MetadataResource::pack`]; the reconcile unpacks its object, the other readers of the cache
/// walk the packed keys and source names).
pub(super) fn cache_form<K: MetadataResource>(o: &mut K) {
    strip_meta(o);
    o.pack();
}

/// Drop what nothing reads from a cached object: managedFields (three quarters of the cache's
/// memory) and kubectl's copy of the last applied object.
pub(super) fn strip_meta<K: MetadataResource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Sharded (`--watch-label-selector`): a watch of **all** objects of kind `K` in `scope`, whose
/// cache holds only what key claims and connection usage read (targets, keys, status ids and
/// conditions, finalizers; no values), so that a shard still sees the claims of objects other
/// shards reconcile, and connections are not released while another shard's objects use them.
/// Feeds the target index and the usage index. Returns the cache and the stream to drive.
pub(super) fn claims_watch<K: MetadataResource + Resource<DynamicType = ()>>(
    client: &Client,
    scope: Option<String>,
    targets: &TargetIndex,
    usage: &UsageIndex,
) -> (Store<K>, futures::future::BoxFuture<'static, ()>) {
    let api: Api<K> = scoped_api(client, scope.as_deref());
    let (reader, writer) = reflector::store();
    let (index, users) = (targets.clone(), usage.clone());
    let drive = watch(api)
        .modify(|o: &mut K| {
            strip_meta(o);
            for entry in o.entries_mut() {
                entry.value = None;
                entry.binary_value = None;
                entry.value_from = None;
            }
            o.pack();
        })
        .inspect_ok(move |event| {
            index.observe(scope.as_deref(), event, claims::identity::<K>);
            users.observe(scope.as_deref(), event);
        })
        .reflect(writer)
        .for_each(|_| futures::future::ready(()))
        .boxed();
    (reader, drive)
}
