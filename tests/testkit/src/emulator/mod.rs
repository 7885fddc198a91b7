//! A stateful emulator of the ZITADEL APIs the operator uses, written to the contract in
//! `shared/zitadel-api.md` and `shared/zitadel-v2-and-events.md` (cited as "api §n" and
//! "v2e §n").
//!
//! It serves, over real HTTP on loopback:
//!
//! | API | routes | contract |
//! |---|---|---|
//! | Management v1 metadata | `/management/v1/metadata/...`, `/management/v1/users/{id}/metadata/...` (Set, BulkSet, List, Get, Remove, BulkRemove) | api §1–§3 |
//! | v1 lookups | `GET /management/v1/users/{id}`, `GET /management/v1/orgs/me`, `…/global/orgs/_by_domain`, `…/global/users/_by_login_name`, `POST /management/v1/users/_search` | api §6 |
//! | user v2 metadata | Connect `POST /zitadel.user.v2.UserService/{Set,List,Delete}UserMetadata`; REST `POST /v2/users/{id}/metadata`, `POST …/metadata/search`, `DELETE …/metadata?keys=` | v2e §1.1–§1.6 |
//! | org v2 metadata | Connect `/zitadel.org.v2.OrganizationService/{Set,List,Delete}OrganizationMetadata`; REST `/v2/organizations/{id}/metadata[...]` | v2e §1.1–§1.6 |
//! | org v2beta metadata | Connect `/zitadel.org.v2beta.OrganizationService/…`; REST `/v2beta/organizations/{id}/metadata[...]` (`filter`, `TEXT_QUERY_METHOD_*`) | v2e §1.2 |
//! | v2 lookups | `GET /v2/users/{id}` and Connect `UserService/GetUserByID`, `POST /v2/users` and `UserService/ListUsers`, `POST /v2/organizations/_search` and `OrganizationService/ListOrganizations` | v2e §1.8, api §10 |
//! | events | `POST /admin/v1/events/_search`, `…/events/types/_search`, `…/aggregates/types/_search` (`events.read`), `POST /management/v1/orgs/me/changes/_search`, `POST /management/v1/users/{id}/changes/_search` | v2e Part 2, api §9 |
//! | machine auth | `POST /oauth/v2/token` (JWT profile grant), `GET /.well-known/openid-configuration` | api §5, §11 |
//! | admin (loopback, no auth) | `/_emulator/state`, `/_emulator/requests`, `/_emulator/faults` | — |
//!
//! Which of these exist, and how the v2 commands behave, follows the selected ZITADEL version
//! line ([`Profile`]: `V3`, `V4_0`, `V4x`, `Main2026` (default), `V5`; the per-version table is
//! in the `profile` module): a removed API answers the gateway's routing 404
//! `{"code":5,"message":"Not Found"}`, a Connect service without the method `text/plain`
//! `404 page not found` (v2e §1.7).
//!
//! For tests:
//!
//! * profiles: [`Emulator::start_with`], [`Emulator::start_seeded_with`],
//!   [`Emulator::set_profile`], [`Emulator::profile`];
//! * faults ([`Emulator::inject`]): latency, status codes, 429s, hangs, resets, lost and
//!   corrupted writes, and the deletion-safety answers [`Fault::org_lookup_failed`] (transient
//!   403 `AUTH-Bs7Ds` for an existing org), [`Fault::no_membership`] (404 `AUTHZ-cdgFk`) and
//!   [`Fault::route_not_found`]; a caller whose [`TokenGrant`] holds no role in the context org
//!   gets `AUTHZ-cdgFk` without any fault (api §3);
//! * row order: [`Emulator::set_list_order`] with [`ListOrder::Shuffled`] (a new order per
//!   request for the lists ZITADEL does not sort);
//! * clock: [`Emulator::set_clock_offset`] (skew against the client, also for the JWT `iat`
//!   check), [`Emulator::freeze_clock`] / [`Emulator::unfreeze_clock`] (same-timestamp batches),
//!   [`Emulator::now`];
//! * events: [`Emulator::events`] ([`EmulatedEvent`]: type, aggregate, owner, sequence, date,
//!   editor, payload), editors named by [`TokenGrant::with_user_id`] (service users' tokens use
//!   their id; [`ANONYMOUS_EDITOR`], [`OUT_OF_BAND_EDITOR`] otherwise);
//! * recording: [`Emulator::requests`] with request and answer bodies
//!   ([`RecordedRequest::body`], [`RecordedRequest::response_body`], up to
//!   [`RECORDED_BODY_LIMIT`]).
//!
//! REST answers (v1, `/v2/...`, admin) whose protobuf encoding exceeds 4 MiB fail like the
//! gateway's gRPC client does: 429 `{"code":8,"message":"grpc: received message larger than max
//! (N vs. 4194304)"}`; so do REST requests over 4 MiB. Connect has no limit (v2e §1.0).
//!
//! Behaviour follows ZITADEL: grpc-gateway routing and protojson wire format, bearer-token
//! authentication and `x-zitadel-orgid` context orgs, PGV validation messages, per-aggregate
//! sequences, all-or-nothing bulk operations, same-value-write semantics selectable by [`Mode`],
//! and ZITADEL's error body with `zitadel.v1.ErrorDetail` (optionally with German messages).
//! Every request is recorded ([`Emulator::requests`]) and faults can be injected
//! ([`Emulator::inject`]), including silently dropped or corrupted metadata writes
//! ([`FaultKind::DropWrites`], [`FaultKind::CorruptWrites`]), connections closed without an
//! answer ([`FaultKind::Reset`]) and faults hitting a share of requests drawn from a seeded
//! generator ([`Fault::with_probability`], [`Emulator::seed_faults`]).
//!
//! Domains, login names and emails: an org gets the verified primary domain `<slug>.localhost`
//! (its lower-cased name, non-alphanumerics as `-`), more with [`Emulator::add_org_domain`]. A
//! user's login names are `<userName>@<domain>` for every verified domain of its org, the primary
//! one first; the preferred login name is the one with the primary domain. A user's email is its
//! preferred login name (verified) until [`Emulator::set_user_email`] sets another. The instance's
//! default org (v2 `defaultQuery`) is the first org created.
//!
//! Seeded demo data ([`Emulator::seed_demo`]):
//!
//! | object | id | name | domains | login name = email |
//! |---|---|---|---|---|
//! | org | [`DEMO_ORG_ACME`] | Acme | `acme.localhost` (primary, verified; default org) | |
//! | org | [`DEMO_ORG_GLOBEX`] | Globex | `globex.localhost` (primary, verified) | |
//! | user | [`DEMO_USER_ALICE`] (Acme) | `alice` | | `alice@acme.localhost` |
//! | user | [`DEMO_USER_BOB`] (Globex) | `bob` | | `bob@globex.localhost` |
//!
//! plus the IAM-owner token [`DEMO_ADMIN_TOKEN`] (owner org Acme).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use zmo_testkit::emulator::{Emulator, Fault, Operation};
//!
//! let emu = Emulator::start_seeded().await?;
//! emu.inject(Fault::unavailable().on(Operation::SetOrgMetadata).times(1));
//! // ... point a client at emu.url() with `Authorization: Bearer demo-admin-token` ...
//! assert_eq!(emu.count(Operation::SetOrgMetadata), 0);
//! emu.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod conn;
mod connect;
mod errors;
mod events;
mod handlers;
mod inspect;
mod model;
mod oauth;
mod profile;
mod routes;
mod server;
mod state;
mod tls;
mod v2;
mod wire;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use model::{
    Fault, FaultKind, ListOrder, Mode, Operation, Permission, RECORDED_BODY_LIMIT, RecordedRequest,
    TokenGrant,
};
pub use profile::Profile;
pub use state::{ANONYMOUS_EDITOR, OUT_OF_BAND_EDITOR};
pub use tls::TlsMaterial;

use server::Core;

/// Id of the demo org "Acme".
pub const DEMO_ORG_ACME: &str = "100000000000000001";
/// Id of the demo org "Globex".
pub const DEMO_ORG_GLOBEX: &str = "100000000000000002";
/// Id of the demo user "alice" (in Acme).
pub const DEMO_USER_ALICE: &str = "200000000000000001";
/// Id of the demo user "bob" (in Globex).
pub const DEMO_USER_BOB: &str = "200000000000000002";
/// The demo IAM-owner token (owner org Acme).
pub const DEMO_ADMIN_TOKEN: &str = "demo-admin-token";

/// Generated key ids count up from here (18 digits, like ZITADEL's ids).
const GENERATED_KEY_IDS: u64 = 300_000_000_000_000_000;

/// How long [`Emulator::shutdown`] waits for in-flight requests before aborting the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Locks a mutex, recovering the data if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct Handle {
    core: Arc<Core>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A running emulator. Cheap to clone; the server stops on [`Emulator::shutdown`] or when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct Emulator {
    handle: Arc<Handle>,
}

impl Emulator {
    /// Starts an emulator on `127.0.0.1` with an OS-assigned port and empty state (no orgs, users
    /// or tokens).
    pub async fn start() -> anyhow::Result<Emulator> {
        Emulator::start_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    }

    /// Starts an emulator listening on `addr`, with empty state.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Emulator> {
        let (listener, addr) = Emulator::bind(addr).await?;
        let (core, stop) = Emulator::new_core();
        // Plain TCP with a reset switch per connection (FaultKind::Reset); `tap_io` keeps
        // `ConnectInfo<SocketAddr>` available to the handlers.
        let listener =
            conn::ResettableListener::new(listener, Arc::clone(&core.connections)).tap_io(|_| ());
        let emulator = Emulator::serve(listener, (core, stop), addr, "ZITADEL emulator server");
        let issuer = emulator.url();
        emulator.with_state(|st| st.issuer = issuer);
        Ok(emulator)
    }

    /// Binds the emulator's TCP listener to `addr`; returns it and the address it got.
    async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the ZITADEL emulator to {addr}"))?;
        let addr = listener
            .local_addr()
            .context("reading the emulator's local address")?;
        Ok((listener, addr))
    }

    /// Serves `app` on `listener` until shut down (or every handle is dropped); `what` names
    /// the server in the warning if serving fails.
    /// A new emulator core (empty state) and the switch that stops its server.
    fn new_core() -> (Arc<Core>, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (Arc::new(Core::new(rx)), tx)
    }

    fn serve<L>(
        listener: L,
        (core, tx): (Arc<Core>, watch::Sender<bool>),
        addr: SocketAddr,
        what: &'static str,
    ) -> Emulator
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
        for<'a> SocketAddr:
            axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
    {
        let app = server::router(Arc::clone(&core));
        let mut stop = tx.subscribe();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                // Err = every handle dropped: shut down as well.
                let _ = stop.wait_for(|s| *s).await;
            };
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "{what} stopped with an error");
            }
        });
        Emulator {
            handle: Arc::new(Handle {
                core,
                addr,
                shutdown: tx,
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// Starts an emulator (empty state) that imitates the ZITADEL version line `profile`.
    pub async fn start_with(profile: Profile) -> anyhow::Result<Emulator> {
        let emulator = Emulator::start().await?;
        emulator.set_profile(profile);
        Ok(emulator)
    }

    /// [`Emulator::start_with`] followed by [`Emulator::seed_demo`].
    pub async fn start_seeded_with(profile: Profile) -> anyhow::Result<Emulator> {
        let emulator = Emulator::start_with(profile).await?;
        emulator.seed_demo();
        Ok(emulator)
    }

    /// [`Emulator::start`] followed by [`Emulator::seed_demo`].
    pub async fn start_seeded() -> anyhow::Result<Emulator> {
        let emulator = Emulator::start().await?;
        emulator.seed_demo();
        Ok(emulator)
    }

    /// Adds the demo data: orgs [`DEMO_ORG_ACME`] ("Acme", primary domain `acme.localhost`) and
    /// [`DEMO_ORG_GLOBEX`] ("Globex", `globex.localhost`), users [`DEMO_USER_ALICE`] (`alice`,
    /// Acme, login name and email `alice@acme.localhost`) and [`DEMO_USER_BOB`] (`bob`, Globex,
    /// `bob@globex.localhost`), and the IAM-owner token [`DEMO_ADMIN_TOKEN`] owned by Acme.
    /// Idempotent.
    pub fn seed_demo(&self) {
        self.add_org(DEMO_ORG_ACME, "Acme");
        self.add_org(DEMO_ORG_GLOBEX, "Globex");
        self.add_user(DEMO_USER_ALICE, DEMO_ORG_ACME, "alice");
        self.add_user(DEMO_USER_BOB, DEMO_ORG_GLOBEX, "bob");
        self.add_token(DEMO_ADMIN_TOKEN, TokenGrant::iam_owner(DEMO_ORG_ACME));
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (an unspecified bind address is reported as
    /// `127.0.0.1`).
    pub fn url(&self) -> String {
        let mut addr = self.handle.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}")
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    fn core(&self) -> &Core {
        &self.handle.core
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut state::State) -> R) -> R {
        f(&mut lock(&self.core().state))
    }

    /// Creates an org (its sequence starts after the org's creation events). For an existing id
    /// this renames the org (one more event) or does nothing.
    pub fn add_org(&self, id: &str, name: &str) {
        self.with_state(|st| st.add_org(id, name));
    }

    /// Adds a domain to an org (one `org.domain.added` event, plus `org.domain.verified` when
    /// `verified`), or verifies an unverified one (one event). A domain the org already has with
    /// at least that verification changes nothing. Verified domains add login names
    /// (`<userName>@<domain>`) to the org's users and are matched by the v2 org `domainQuery`; the
    /// primary domain never changes.
    ///
    /// # Panics
    /// If the org does not exist, or if `verified` and another org already verified `domain`
    /// (ZITADEL lets only one org verify a domain) — bugs in the calling test.
    pub fn add_org_domain(&self, org_id: &str, domain: &str, verified: bool) {
        self.with_state(|st| st.add_org_domain(org_id, domain, verified));
    }

    /// Sets a user's (verified) email address (two events: `user.human.email.changed` and
    /// `user.human.email.verified`; none when the address is unchanged). Until called, the email
    /// is the user's preferred login name.
    ///
    /// # Panics
    /// If the user does not exist (a bug in the calling test).
    pub fn set_user_email(&self, user_id: &str, email: &str) {
        self.with_state(|st| st.set_user_email(user_id, email));
    }

    /// Removes an org and its users; their metadata disappears from reads.
    pub fn remove_org(&self, id: &str) {
        self.with_state(|st| st.remove_org(id));
    }

    /// Creates a human user `user_name` in `org_id`. For an existing id this updates org and user
    /// name (one more event) or does nothing.
    pub fn add_user(&self, id: &str, org_id: &str, user_name: &str) {
        self.with_state(|st| st.add_user(id, org_id, user_name));
    }

    /// Removes a user; its metadata disappears from reads.
    pub fn remove_user(&self, id: &str) {
        self.with_state(|st| st.remove_user(id));
    }

    /// Registers (or replaces) a bearer token.
    pub fn add_token(&self, token: &str, grant: TokenGrant) {
        self.with_state(|st| st.tokens.insert(token.to_owned(), grant));
    }

    /// Revokes a bearer token (later calls with it get 401 `AUTH-7fs1e`).
    pub fn revoke_token(&self, token: &str) {
        self.with_state(|st| st.tokens.remove(token));
    }

    /// The OIDC issuer: the base URL ([`Emulator::url`]). JWT assertions must carry it in `aud`.
    pub fn issuer(&self) -> String {
        self.with_state(|st| st.issuer.clone())
    }

    /// Registers a service (machine) user that may obtain access tokens with the JWT profile
    /// grant. Its tokens act with `grant` (`grant.owner_org` is the user's org and the context org
    /// without `x-zitadel-orgid`, e.g. for `GET /management/v1/orgs/me`). For an existing user this
    /// replaces the grant, also for tokens already issued; its keys stay. The user is not added
    /// to the org's users (user lookups and searches do not see it).
    pub fn register_service_user(&self, user_id: &str, grant: TokenGrant) {
        self.with_state(|st| {
            st.service_users
                .entry(user_id.to_owned())
                .and_modify(|u| u.grant = grant.clone())
                .or_insert_with(|| state::ServiceUser {
                    grant,
                    keys: BTreeMap::new(),
                });
        });
    }

    /// Registers (or replaces) the public key `key_id` of a service user, as PEM: SPKI
    /// (`-----BEGIN PUBLIC KEY-----`) or PKCS#1 (`-----BEGIN RSA PUBLIC KEY-----`). Assertions with
    /// header `kid` = `key_id` and `iss` = `user_id` are verified with it.
    ///
    /// # Panics
    /// If the service user is not registered or `public_key_pem` is not an RSA public key (bugs
    /// in the calling test).
    pub fn add_service_user_key(&self, user_id: &str, key_id: &str, public_key_pem: &str) {
        if let Err(e) = oauth::check_public_key(public_key_pem) {
            panic!("add_service_user_key: key {key_id}: {e:#}");
        }
        self.with_state(|st| {
            st.service_users
                .get_mut(user_id)
                .unwrap_or_else(|| panic!("add_service_user_key: unknown service user {user_id}"))
                .keys
                .insert(key_id.to_owned(), public_key_pem.to_owned());
        });
    }

    /// Generates an RSA-2048 key pair for a service user, registers the public key under a new
    /// key id (18 digits, like ZITADEL's ids) and returns the key file ZITADEL would hand out:
    /// `{"type":"serviceaccount","keyId","key":"-----BEGIN RSA PRIVATE KEY-----…"` (PKCS#1 PEM)
    /// `,"expirationDate":"9999-12-31T23:59:59Z","userId"}`.
    ///
    /// Key generation is CPU-bound and takes a moment (more in debug builds).
    ///
    /// # Errors
    /// If the service user is not registered, or key generation fails.
    pub fn generate_key_file(&self, user_id: &str) -> anyhow::Result<String> {
        if !self.with_state(|st| st.service_users.contains_key(user_id)) {
            anyhow::bail!("generate_key_file: unknown service user {user_id}");
        }
        let (private_pem, public_pem) = oauth::generate_key_pair()?;
        let key_id = self.with_state(|st| {
            st.generated_keys += 1;
            format!("{}", GENERATED_KEY_IDS + st.generated_keys)
        });
        let file = oauth::key_file(user_id, &key_id, &private_pem)?;
        self.with_state(|st| {
            st.service_users
                .get_mut(user_id)
                .map(|u| u.keys.insert(key_id.clone(), public_pem))
                .with_context(|| format!("generate_key_file: service user {user_id} vanished"))
        })?;
        Ok(file)
    }

    /// Removes a public key of a service user (later assertions signed with it are rejected
    /// with `invalid_grant`; access tokens already issued stay valid until they expire). Does
    /// nothing for an unknown user or key.
    pub fn remove_service_user_key(&self, user_id: &str, key_id: &str) {
        self.with_state(|st| {
            if let Some(user) = st.service_users.get_mut(user_id) {
                user.keys.remove(key_id);
            }
        });
    }

    /// Sets the lifetime of access tokens issued from now on (default 43 199 s, ZITADEL's 12 h as
    /// reported in `expires_in`). `expires_in` is the lifetime in seconds, rounded up.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.with_state(|st| st.access_token_lifetime = Some(lifetime));
    }

    /// Makes every access token issued so far expire now, as if its lifetime had passed (API
    /// calls with it get 401 like any unknown token; tokens issued later live normally).
    pub fn expire_access_tokens(&self) {
        self.with_state(|st| {
            let now = std::time::Instant::now();
            for token in st.issued_tokens.values_mut() {
                token.expires_at = token.expires_at.min(now);
            }
        });
    }

    /// Number of recorded requests to the token endpoint (`POST /oauth/v2/token`), whatever
    /// their outcome; same as `count(Operation::OAuthToken)`.
    pub fn token_requests(&self) -> usize {
        self.count(Operation::OAuthToken)
    }

    /// Current metadata of an org, values decoded (empty for an unknown org).
    pub fn org_metadata(&self, org_id: &str) -> BTreeMap<String, Vec<u8>> {
        self.with_state(|st| {
            st.orgs
                .get(org_id)
                .map(|o| metadata_values(&o.agg))
                .unwrap_or_default()
        })
    }

    /// Current metadata of a user, values decoded (empty for an unknown user).
    pub fn user_metadata(&self, user_id: &str) -> BTreeMap<String, Vec<u8>> {
        self.with_state(|st| {
            st.users
                .get(user_id)
                .map(|u| metadata_values(&u.agg))
                .unwrap_or_default()
        })
    }

    /// Current sequence of an org's event stream (0 for an unknown org).
    pub fn org_sequence(&self, org_id: &str) -> u64 {
        self.with_state(|st| st.orgs.get(org_id).map_or(0, |o| o.agg.sequence))
    }

    /// Current sequence of a user's event stream (0 for an unknown user).
    pub fn user_sequence(&self, user_id: &str) -> u64 {
        self.with_state(|st| st.users.get(user_id).map_or(0, |u| u.agg.sequence))
    }

    /// Out-of-band change by "someone else": appends an `org.metadata.set` event (always, even
    /// for an identical value).
    ///
    /// # Panics
    /// If the org does not exist (a bug in the calling test).
    pub fn put_org_metadata(&self, org_id: &str, key: &str, value: &[u8]) {
        self.with_state(|st| {
            let push = st.push_out_of_band();
            let org = st
                .orgs
                .get_mut(org_id)
                .unwrap_or_else(|| panic!("put_org_metadata: unknown org {org_id}"));
            org.agg.set_metadata(&push, key, value);
            st.total_events += 1;
        });
    }

    /// Out-of-band removal: appends an `org.metadata.removed` event if the key exists.
    pub fn delete_org_metadata(&self, org_id: &str, key: &str) {
        self.with_state(|st| {
            let push = st.push_out_of_band();
            if let Some(org) = st.orgs.get_mut(org_id)
                && org.agg.metadata.contains_key(key)
            {
                org.agg.remove_metadata(&push, key);
                st.total_events += 1;
            }
        });
    }

    /// Out-of-band change: appends a `user.metadata.set` event (always).
    ///
    /// # Panics
    /// If the user does not exist (a bug in the calling test).
    pub fn put_user_metadata(&self, user_id: &str, key: &str, value: &[u8]) {
        self.with_state(|st| {
            let push = st.push_out_of_band();
            let user = st
                .users
                .get_mut(user_id)
                .unwrap_or_else(|| panic!("put_user_metadata: unknown user {user_id}"));
            user.agg.set_metadata(&push, key, value);
            st.total_events += 1;
        });
    }

    /// Out-of-band removal: appends a `user.metadata.removed` event if the key exists.
    pub fn delete_user_metadata(&self, user_id: &str, key: &str) {
        self.with_state(|st| {
            let push = st.push_out_of_band();
            if let Some(user) = st.users.get_mut(user_id)
                && user.agg.metadata.contains_key(key)
            {
                user.agg.remove_metadata(&push, key);
                st.total_events += 1;
            }
        });
    }

    /// Every request received since start or the last [`Emulator::clear_requests`] (admin routes
    /// excluded), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.core().requests()
    }

    /// Number of recorded requests routed to `op`, whatever their status.
    pub fn count(&self, op: Operation) -> usize {
        self.core().count(op)
    }

    /// Keeps (default) or drops answer bodies in the request log
    /// ([`RecordedRequest::response_body`] stays `null` while off): long benchmark runs with
    /// tens of thousands of calls need not hold every answer in memory.
    pub fn record_answer_bodies(&self, on: bool) {
        self.core()
            .record_answers
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.core().clear_requests();
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.core().inject(fault);
    }

    /// Removes all faults (requests already hanging keep hanging until the client gives up or the
    /// emulator shuts down).
    pub fn clear_faults(&self) {
        self.core().clear_faults();
    }

    /// Re-seeds the generator deciding which requests probabilistic faults hit
    /// ([`Fault::with_probability`]); the same seed and request order give the same hits. A fixed
    /// default seed is used until called.
    pub fn seed_faults(&self, seed: u64) {
        self.core().seed_faults(seed);
    }

    /// Switches the ZITADEL version line imitated from now on (routes, v2 semantics) and selects
    /// that profile's same-value-write [`Mode`] (override it afterwards with
    /// [`Emulator::set_mode`]). State, tokens and recorded requests are kept.
    pub fn set_profile(&self, profile: Profile) {
        self.with_state(|st| {
            st.profile = profile;
            st.mode = profile.mode();
        });
    }

    /// The current [`Profile`] (default [`Profile::Main2026`]).
    pub fn profile(&self) -> Profile {
        self.with_state(|st| st.profile)
    }

    /// Sets the row order of the lists ZITADEL does not sort ([`ListOrder`]); a
    /// [`ListOrder::Shuffled`] seed restarts its generator.
    pub fn set_list_order(&self, order: ListOrder) {
        use rand::SeedableRng as _;
        self.with_state(|st| {
            st.list_order = order;
            if let ListOrder::Shuffled { seed } = order {
                st.list_rng = rand::rngs::StdRng::seed_from_u64(seed);
            }
        });
    }

    /// The current [`ListOrder`].
    pub fn list_order(&self) -> ListOrder {
        self.with_state(|st| st.list_order)
    }

    /// Skews the emulator's clock by `offset` from the machine's (negative = behind): event and
    /// metadata timestamps and the token endpoint's `iat` / `exp` checks use it. A client whose
    /// clock runs 5 s ahead of ZITADEL is `set_clock_offset(TimeDelta::seconds(-5))`.
    pub fn set_clock_offset(&self, offset: chrono::TimeDelta) {
        self.with_state(|st| st.clock_offset = offset);
    }

    /// The emulator's current time (machine clock plus offset, or the frozen time).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.with_state(|st| st.clock())
    }

    /// Freezes the clock at `at` (`None` = its current time): until
    /// [`Emulator::unfreeze_clock`], every write — API calls and test helpers alike — gets
    /// exactly this timestamp, so events of several pushes share one `creationDate` (what a
    /// busy ZITADEL produces for events of one transaction). Within a push events are still
    /// ordered by their position.
    pub fn freeze_clock(&self, at: Option<chrono::DateTime<chrono::Utc>>) {
        self.with_state(|st| {
            let at = at.unwrap_or_else(|| st.clock());
            st.frozen_at = Some(at);
        });
    }

    /// Lets the clock run again (timestamps stay strictly increasing after the frozen time).
    pub fn unfreeze_clock(&self) {
        self.with_state(|st| {
            if let Some(at) = st.frozen_at.take() {
                st.last_time = Some(st.last_time.map_or(at, |l| l.max(at)));
            }
        });
    }

    /// Every event recorded so far (removed orgs and users included), in ZITADEL's global order
    /// (position, then order within the push).
    pub fn events(&self) -> Vec<EmulatedEvent> {
        self.with_state(|st| {
            st.all_events()
                .into_iter()
                .map(|e| EmulatedEvent {
                    aggregate_type: e.agg_kind.as_str().to_owned(),
                    aggregate_id: e.agg_id.clone(),
                    resource_owner: e.owner.clone(),
                    sequence: e.sequence,
                    creation_date: e.at,
                    event_type: e.event_type.to_owned(),
                    editor_user_id: e.editor.clone(),
                    payload: e.payload.clone(),
                })
                .collect()
        })
    }

    /// Whether a v1 call by a caller without any membership in the context org (and no
    /// instance role) answers 404 `AUTHZ-cdgFk` as ZITADEL does (api §3; the default), or — when
    /// `false` — the 403 `AUTH-5mWD2` the emulator answered before. Only for suites not yet
    /// updated to the contract.
    pub fn set_membership_check(&self, on: bool) {
        self.with_state(|st| st.membership_check = on);
    }

    /// Selects the same-value-write behaviour.
    pub fn set_mode(&self, mode: Mode) {
        self.with_state(|st| st.mode = mode);
    }

    /// The current [`Mode`].
    pub fn mode(&self) -> Mode {
        self.with_state(|st| st.mode)
    }

    /// Emits error messages in German (ids and codes unchanged).
    pub fn set_language_german(&self, on: bool) {
        self.with_state(|st| st.german = on);
    }

    /// Stops the server: waits briefly for in-flight requests, releases hanging ones, then
    /// aborts.
    pub async fn shutdown(self) {
        let _ = self.handle.shutdown.send(true);
        let task = lock(&self.handle.task).take();
        if let Some(mut task) = task
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

/// One recorded event, as [`Emulator::events`] reports it (the fields ListEvents serves).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EmulatedEvent {
    /// `org` or `user`.
    pub aggregate_type: String,
    /// Org or user id.
    pub aggregate_id: String,
    /// The org itself (org events) or the user's org.
    pub resource_owner: String,
    /// Per-aggregate sequence.
    pub sequence: u64,
    /// Creation date (shared by all events of one push).
    pub creation_date: chrono::DateTime<chrono::Utc>,
    /// ZITADEL's event type, e.g. `user.metadata.set`.
    pub event_type: String,
    /// The user whose call wrote it ([`TokenGrant::user_id`], a service user's id,
    /// [`ANONYMOUS_EDITOR`] or [`OUT_OF_BAND_EDITOR`]).
    pub editor_user_id: String,
    /// The JSON payload (`{"key","value"}` for `*.metadata.set`, `{"key"}` for removals).
    pub payload: Option<serde_json::Value>,
}

fn metadata_values(agg: &state::Aggregate) -> BTreeMap<String, Vec<u8>> {
    agg.metadata
        .iter()
        .map(|(k, e)| (k.clone(), e.value.clone()))
        .collect()
}
