//! The emulated instance: orgs and users as event-sourced aggregates with per-aggregate sequences,
//! their metadata, the tokens that may call the API, and the service users (with their public
//! keys) that obtain access tokens from the token endpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::model::{ListOrder, Mode, TokenGrant};
use super::profile::Profile;

/// Events written when an org is created (org.added, org.domain.added, org.domain.verified,
/// org.domain.primary.set, org.member.added), so a fresh org starts at this sequence.
pub(crate) const ORG_CREATION_EVENTS: u64 = 5;
/// Events written when a user is created (user.human.added, user.human.email.verified).
pub(crate) const USER_CREATION_EVENTS: u64 = 2;
/// Events written when a verified domain is added to an org (org.domain.added,
/// org.domain.verified); an unverified one writes only the first.
pub(crate) const VERIFIED_DOMAIN_EVENTS: u64 = 2;
/// Events written when a user's email changes (user.human.email.changed,
/// user.human.email.verified).
pub(crate) const EMAIL_CHANGE_EVENTS: u64 = 2;

/// Sequence and creation date of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) sequence: u64,
    pub(crate) at: DateTime<Utc>,
}

/// Global order of events (ZITADEL's `position` + `in_tx_order`): shared by every emulator in
/// the process, only the relative order matters.
static NEXT_POSITION: AtomicU64 = AtomicU64::new(1);

/// Aggregate type of an event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum AggKind {
    /// `org`
    Org,
    /// `user`
    User,
}

impl AggKind {
    /// ZITADEL's aggregate type name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AggKind::Org => "org",
            AggKind::User => "user",
        }
    }
}

/// One stored event (ZITADEL's `eventstore.events2` row).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredEvent {
    /// Global order (position, then in-transaction order).
    pub(crate) position: u64,
    pub(crate) agg_kind: AggKind,
    pub(crate) agg_id: String,
    pub(crate) owner: String,
    /// Per-aggregate sequence.
    pub(crate) sequence: u64,
    /// Creation date; every event of one push shares it.
    pub(crate) at: DateTime<Utc>,
    pub(crate) event_type: &'static str,
    /// `editor_user` / `creator`.
    pub(crate) editor: String,
    /// JSON payload; `None` when the event has none.
    pub(crate) payload: Option<Value>,
}

/// One push (one transaction): its timestamp and the user it is written for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Push {
    pub(crate) at: DateTime<Utc>,
    pub(crate) editor: String,
}

/// The projected state of one metadata key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetaEntry {
    pub(crate) value: Vec<u8>,
    /// First set since the key last (re)appeared.
    pub(crate) creation_date: DateTime<Utc>,
    /// Last set.
    pub(crate) change_date: DateTime<Utc>,
    /// Aggregate sequence of the last set.
    pub(crate) sequence: u64,
}

/// One event stream (an org or a user).
#[derive(Debug, Clone)]
pub(crate) struct Aggregate {
    pub(crate) kind: AggKind,
    pub(crate) id: String,
    /// Resource owner: the org itself, or the user's org.
    pub(crate) owner: String,
    pub(crate) sequence: u64,
    pub(crate) creation_date: DateTime<Utc>,
    pub(crate) change_date: DateTime<Utc>,
    pub(crate) metadata: BTreeMap<String, MetaEntry>,
    /// The latest metadata event (set or removed) of this aggregate.
    pub(crate) last_metadata_event: Option<Stamp>,
    /// Every event of this aggregate, oldest first.
    pub(crate) events: Vec<StoredEvent>,
}

/// `{"key":k,"value":"<padded std base64>"}` (Go `[]byte` in JSON).
fn metadata_payload(key: &str, value: Option<&[u8]>) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("key".into(), Value::String(key.to_owned()));
    if let Some(value) = value {
        map.insert("value".into(), Value::String(super::wire::base64(value)));
    }
    Value::Object(map)
}

impl Aggregate {
    fn new(
        kind: AggKind,
        id: &str,
        owner: &str,
        creation: &[(&'static str, Option<Value>)],
        push: &Push,
    ) -> Self {
        let mut agg = Aggregate {
            kind,
            id: id.to_owned(),
            owner: owner.to_owned(),
            sequence: 0,
            creation_date: push.at,
            change_date: push.at,
            metadata: BTreeMap::new(),
            last_metadata_event: None,
            events: Vec::new(),
        };
        for (event_type, payload) in creation {
            agg.push(push, event_type, payload.clone());
        }
        agg
    }

    /// Appends an event.
    pub(crate) fn push(
        &mut self,
        push: &Push,
        event_type: &'static str,
        payload: Option<Value>,
    ) -> Stamp {
        self.sequence += 1;
        self.change_date = push.at;
        self.events.push(StoredEvent {
            position: NEXT_POSITION.fetch_add(1, AtomicOrdering::Relaxed),
            agg_kind: self.kind,
            agg_id: self.id.clone(),
            owner: self.owner.clone(),
            sequence: self.sequence,
            at: push.at,
            event_type,
            editor: push.editor.clone(),
            payload,
        });
        Stamp {
            sequence: self.sequence,
            at: push.at,
        }
    }

    fn metadata_event(&self, set: bool) -> &'static str {
        match (self.kind, set) {
            (AggKind::Org, true) => "org.metadata.set",
            (AggKind::Org, false) => "org.metadata.removed",
            (AggKind::User, true) => "user.metadata.set",
            (AggKind::User, false) => "user.metadata.removed",
        }
    }

    /// Appends a `*.metadata.set` event.
    pub(crate) fn set_metadata(&mut self, push: &Push, key: &str, value: &[u8]) -> Stamp {
        let event_type = self.metadata_event(true);
        let stamp = self.push(push, event_type, Some(metadata_payload(key, Some(value))));
        let at = push.at;
        self.metadata
            .entry(key.to_owned())
            .and_modify(|e| {
                e.value = value.to_vec();
                e.change_date = at;
                e.sequence = stamp.sequence;
            })
            .or_insert_with(|| MetaEntry {
                value: value.to_vec(),
                creation_date: at,
                change_date: at,
                sequence: stamp.sequence,
            });
        self.last_metadata_event = Some(stamp);
        stamp
    }

    /// Appends a `*.metadata.removed` event.
    pub(crate) fn remove_metadata(&mut self, push: &Push, key: &str) -> Stamp {
        let event_type = self.metadata_event(false);
        let stamp = self.push(push, event_type, Some(metadata_payload(key, None)));
        self.metadata.remove(key);
        self.last_metadata_event = Some(stamp);
        stamp
    }

    /// Whether `key` currently holds exactly `value`.
    pub(crate) fn holds(&self, key: &str, value: &[u8]) -> bool {
        self.metadata.get(key).is_some_and(|e| e.value == value)
    }

    /// Details of the latest metadata event, falling back to the aggregate's latest event.
    pub(crate) fn last_metadata_stamp(&self) -> Stamp {
        self.last_metadata_event.unwrap_or(Stamp {
            sequence: self.sequence,
            at: self.change_date,
        })
    }
}

/// One domain of an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrgDomain {
    pub(crate) domain: String,
    pub(crate) verified: bool,
}

/// An organization.
#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) primary_domain: String,
    /// Every domain of the org in the order added; the primary domain (verified) comes first.
    pub(crate) domains: Vec<OrgDomain>,
    pub(crate) agg: Aggregate,
}

impl Org {
    /// The verified domains, primary first.
    pub(crate) fn verified_domains(&self) -> impl Iterator<Item = &str> {
        self.domains
            .iter()
            .filter(|d| d.verified)
            .map(|d| d.domain.as_str())
    }
}

/// A (human) user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) org_id: String,
    pub(crate) user_name: String,
    /// Explicitly set (verified) email; `None` = the preferred login name.
    pub(crate) email: Option<String>,
    pub(crate) agg: Aggregate,
}

impl User {
    /// The preferred login name: `username@primary-domain-of-org` (or just the user name when the
    /// org is unknown).
    pub(crate) fn login_name(&self, orgs: &BTreeMap<String, Org>) -> String {
        match orgs.get(&self.org_id) {
            Some(org) => format!("{}@{}", self.user_name, org.primary_domain),
            None => self.user_name.clone(),
        }
    }

    /// Every login name: `username@domain` for each verified domain of the org, primary first.
    pub(crate) fn login_names(&self, orgs: &BTreeMap<String, Org>) -> Vec<String> {
        match orgs.get(&self.org_id) {
            Some(org) => org
                .verified_domains()
                .map(|d| format!("{}@{d}", self.user_name))
                .collect(),
            None => vec![self.user_name.clone()],
        }
    }

    /// The (verified) email address: the one set explicitly, else the preferred login name.
    pub(crate) fn email(&self, orgs: &BTreeMap<String, Org>) -> String {
        self.email.clone().unwrap_or_else(|| self.login_name(orgs))
    }
}

/// A service (machine) user that authenticates with the JWT profile grant.
#[derive(Debug, Clone)]
pub(crate) struct ServiceUser {
    /// What the user's access tokens may do; `owner_org` is the user's org.
    pub(crate) grant: TokenGrant,
    /// Registered public keys (PEM) by key id.
    pub(crate) keys: BTreeMap<String, String>,
}

/// An opaque access token issued by the token endpoint.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub(crate) user_id: String,
    pub(crate) expires_at: Instant,
    /// Whether the token's audience includes ZITADEL's own project (scope
    /// `urn:zitadel:iam:org:project:id:zitadel:aud`); without it the API rejects the token.
    pub(crate) api_audience: bool,
}

/// Access token lifetime reported as `expires_in` by default (ZITADEL's 12 h default, as the
/// whole seconds it reports right after issuing).
pub(crate) const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(43_199);

/// Primary domain ZITADEL would generate for an org name: the lower-cased name with
/// non-alphanumerics replaced by `-`, under `localhost`.
fn primary_domain(id: &str, name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        format!("{id}.localhost")
    } else {
        format!("{slug}.localhost")
    }
}

/// Editor recorded for changes made through the test API ([`super::Emulator::put_org_metadata`],
/// [`super::Emulator::add_org`], ...): "someone else", not a caller of the API.
pub const OUT_OF_BAND_EDITOR: &str = "399999999999999998";
/// Editor recorded for API calls with a registered token whose grant names no user
/// ([`TokenGrant::user_id`]).
pub const ANONYMOUS_EDITOR: &str = "399999999999999999";

/// The whole emulated instance.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) orgs: BTreeMap<String, Org>,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) tokens: HashMap<String, TokenGrant>,
    pub(crate) mode: Mode,
    pub(crate) profile: Profile,
    pub(crate) german: bool,
    /// The instance's default org: the first org created (ZITADEL creates it at instance setup).
    pub(crate) default_org: Option<String>,
    /// Number of events written in the instance (reported as `processedSequence` on lists).
    pub(crate) total_events: u64,
    /// The OIDC issuer (the emulator's base URL); JWT assertions must name it in `aud`.
    pub(crate) issuer: String,
    /// Service users by user id.
    pub(crate) service_users: BTreeMap<String, ServiceUser>,
    /// Access tokens issued by the token endpoint.
    pub(crate) issued_tokens: HashMap<String, IssuedToken>,
    /// Lifetime of newly issued access tokens; `None` = [`DEFAULT_ACCESS_TOKEN_LIFETIME`].
    pub(crate) access_token_lifetime: Option<Duration>,
    /// Counter for generated key ids.
    pub(crate) generated_keys: u64,
    /// Events of removed orgs and users (ZITADEL never deletes events).
    pub(crate) removed_events: Vec<StoredEvent>,
    /// Row order of unsorted lists.
    pub(crate) list_order: ListOrder,
    /// Draws the row order of each listing in [`ListOrder::Shuffled`].
    pub(crate) list_rng: StdRng,
    /// Offset of the emulator's clock from the machine's.
    pub(crate) clock_offset: ChronoDuration,
    /// While set, every push gets exactly this timestamp.
    pub(crate) frozen_at: Option<DateTime<Utc>>,
    /// v1 calls without any membership in the context org answer 404 `AUTHZ-cdgFk` (else the
    /// pre-contract 403 `AUTH-5mWD2`).
    pub(crate) membership_check: bool,
    pub(crate) last_time: Option<DateTime<Utc>>,
}

impl Default for State {
    fn default() -> Self {
        let profile = Profile::default();
        State {
            orgs: BTreeMap::new(),
            users: BTreeMap::new(),
            tokens: HashMap::new(),
            mode: profile.facts().mode,
            profile,
            german: false,
            default_org: None,
            total_events: 0,
            issuer: String::new(),
            service_users: BTreeMap::new(),
            issued_tokens: HashMap::new(),
            access_token_lifetime: None,
            generated_keys: 0,
            removed_events: Vec::new(),
            list_order: ListOrder::default(),
            list_rng: StdRng::seed_from_u64(0),
            clock_offset: ChronoDuration::zero(),
            frozen_at: None,
            membership_check: true,
            last_time: None,
        }
    }
}

impl State {
    /// The grant of a bearer token: a registered token, or an unexpired access token of an
    /// existing service user issued with ZITADEL's API audience (its `user_id` is the service
    /// user's).
    pub(crate) fn token_grant(&self, token: &str) -> Option<TokenGrant> {
        if let Some(grant) = self.tokens.get(token) {
            return Some(grant.clone());
        }
        let issued = self
            .issued_tokens
            .get(token)
            .filter(|t| t.api_audience && Instant::now() < t.expires_at)?;
        self.service_users.get(&issued.user_id).map(|u| {
            let mut grant = u.grant.clone();
            grant.user_id.get_or_insert_with(|| issued.user_id.clone());
            grant
        })
    }

    /// Lifetime of newly issued access tokens.
    pub(crate) fn access_token_lifetime(&self) -> Duration {
        self.access_token_lifetime
            .unwrap_or(DEFAULT_ACCESS_TOKEN_LIFETIME)
    }

    /// The emulator's wall clock (the machine's plus [`State::clock_offset`], or the frozen
    /// time), microsecond precision.
    pub(crate) fn clock(&self) -> DateTime<Utc> {
        if let Some(at) = self.frozen_at {
            return at;
        }
        let now = Utc::now() + self.clock_offset;
        now.duration_trunc(ChronoDuration::microseconds(1))
            .unwrap_or(now)
    }

    /// The timestamp of a new push: strictly increasing with microsecond precision (like
    /// Postgres' `statement_timestamp()` of distinct transactions), or the frozen time.
    pub(crate) fn now(&mut self) -> DateTime<Utc> {
        if let Some(at) = self.frozen_at {
            return at;
        }
        let now = self.clock();
        let now = match self.last_time {
            Some(last) if now <= last => last + ChronoDuration::microseconds(1),
            _ => now,
        };
        self.last_time = Some(now);
        now
    }

    /// A new push by `editor`.
    pub(crate) fn push_by(&mut self, editor: &str) -> Push {
        Push {
            at: self.now(),
            editor: editor.to_owned(),
        }
    }

    /// A new push by [`OUT_OF_BAND_EDITOR`].
    pub(crate) fn push_out_of_band(&mut self) -> Push {
        self.push_by(OUT_OF_BAND_EDITOR)
    }

    /// A generator for the row order of one unsorted listing in [`ListOrder::Shuffled`] (a
    /// new order on every call); `None` in [`ListOrder::Sorted`].
    pub(crate) fn shuffler(&mut self) -> Option<StdRng> {
        match self.list_order {
            ListOrder::Sorted => None,
            ListOrder::Shuffled { .. } => {
                use rand::Rng as _;
                Some(StdRng::seed_from_u64(self.list_rng.random()))
            }
        }
    }

    /// Every stored event, in global order.
    pub(crate) fn all_events(&self) -> Vec<&StoredEvent> {
        let mut all: Vec<&StoredEvent> = self
            .orgs
            .values()
            .flat_map(|o| o.agg.events.iter())
            .chain(self.users.values().flat_map(|u| u.agg.events.iter()))
            .chain(self.removed_events.iter())
            .collect();
        all.sort_by_key(|e| e.position);
        all
    }

    /// Creates an org, or renames an existing one (appending an `org.changed` event).
    pub(crate) fn add_org(&mut self, id: &str, name: &str) {
        let push = self.push_out_of_band();
        match self.orgs.get_mut(id) {
            Some(org) => {
                if org.name != name {
                    org.name = name.to_owned();
                    org.agg
                        .push(&push, "org.changed", Some(json!({ "name": name })));
                    self.total_events += 1;
                }
            }
            None => {
                let primary = primary_domain(id, name);
                let domain = json!({ "domain": primary });
                let creation = [
                    ("org.added", Some(json!({ "name": name }))),
                    ("org.domain.added", Some(domain.clone())),
                    ("org.domain.verified", Some(domain.clone())),
                    ("org.domain.primary.set", Some(domain)),
                    (
                        "org.member.added",
                        Some(json!({ "userId": OUT_OF_BAND_EDITOR, "roles": ["ORG_OWNER"] })),
                    ),
                ];
                debug_assert_eq!(creation.len() as u64, ORG_CREATION_EVENTS);
                self.orgs.insert(
                    id.to_owned(),
                    Org {
                        id: id.to_owned(),
                        name: name.to_owned(),
                        primary_domain: primary.clone(),
                        domains: vec![OrgDomain {
                            domain: primary,
                            verified: true,
                        }],
                        agg: Aggregate::new(AggKind::Org, id, id, &creation, &push),
                    },
                );
                self.default_org.get_or_insert_with(|| id.to_owned());
                self.total_events += ORG_CREATION_EVENTS;
            }
        }
    }

    /// Adds a domain to an org (`org.domain.added`, plus `org.domain.verified` when `verified`),
    /// or verifies an existing unverified one. Nothing happens for a domain the org already has
    /// with at least the requested verification.
    ///
    /// # Panics
    /// If the org does not exist, or if `verified` and another org already verified the domain
    /// (ZITADEL allows a verified domain in one org only).
    pub(crate) fn add_org_domain(&mut self, org_id: &str, domain: &str, verified: bool) {
        if verified
            && let Some(other) = self.orgs.values().find(|o| {
                o.id != org_id && o.domains.iter().any(|d| d.verified && d.domain == domain)
            })
        {
            panic!(
                "add_org_domain: {domain} is already verified by org {}",
                other.id
            );
        }
        let push = self.push_out_of_band();
        let org = self
            .orgs
            .get_mut(org_id)
            .unwrap_or_else(|| panic!("add_org_domain: unknown org {org_id}"));
        let events: &[&'static str] = match org.domains.iter_mut().find(|d| d.domain == domain) {
            Some(existing) if verified && !existing.verified => {
                existing.verified = true;
                &["org.domain.verified"]
            }
            Some(_) => &[],
            None => {
                org.domains.push(OrgDomain {
                    domain: domain.to_owned(),
                    verified,
                });
                if verified {
                    &["org.domain.added", "org.domain.verified"]
                } else {
                    &["org.domain.added"]
                }
            }
        };
        debug_assert!(events.len() as u64 <= VERIFIED_DOMAIN_EVENTS);
        for event_type in events {
            org.agg
                .push(&push, event_type, Some(json!({ "domain": domain })));
        }
        self.total_events += events.len() as u64;
    }

    /// Removes an org (an `org.removed` event) together with its users (their metadata
    /// disappears from reads; like ZITADEL, no `user.removed` events are written for them).
    pub(crate) fn remove_org(&mut self, id: &str) {
        let push = self.push_out_of_band();
        self.remove_org_by(id, &push);
    }

    /// [`State::remove_org`] with an explicit push.
    pub(crate) fn remove_org_by(&mut self, id: &str, push: &Push) {
        if let Some(mut org) = self.orgs.remove(id) {
            org.agg.push(push, "org.removed", None);
            self.removed_events.append(&mut org.agg.events);
            let removed: Vec<String> = self
                .users
                .values()
                .filter(|u| u.org_id == id)
                .map(|u| u.id.clone())
                .collect();
            for user_id in removed {
                if let Some(mut user) = self.users.remove(&user_id) {
                    self.removed_events.append(&mut user.agg.events);
                }
            }
            self.total_events += 1;
        }
    }

    /// Creates a user, or updates org and user name of an existing one (appending an event).
    pub(crate) fn add_user(&mut self, id: &str, org_id: &str, user_name: &str) {
        let push = self.push_out_of_band();
        match self.users.get_mut(id) {
            Some(user) => {
                if user.org_id != org_id || user.user_name != user_name {
                    user.org_id = org_id.to_owned();
                    user.user_name = user_name.to_owned();
                    user.agg.owner = org_id.to_owned();
                    user.agg.push(
                        &push,
                        "user.username.changed",
                        Some(json!({ "userName": user_name })),
                    );
                    self.total_events += 1;
                }
            }
            None => {
                let creation = [
                    ("user.human.added", Some(json!({ "userName": user_name }))),
                    ("user.human.email.verified", None),
                ];
                debug_assert_eq!(creation.len() as u64, USER_CREATION_EVENTS);
                self.users.insert(
                    id.to_owned(),
                    User {
                        id: id.to_owned(),
                        org_id: org_id.to_owned(),
                        user_name: user_name.to_owned(),
                        email: None,
                        agg: Aggregate::new(AggKind::User, id, org_id, &creation, &push),
                    },
                );
                self.total_events += USER_CREATION_EVENTS;
            }
        }
    }

    /// Sets a user's email as verified (`user.human.email.changed` and
    /// `user.human.email.verified`); nothing happens when it already is that address.
    ///
    /// # Panics
    /// If the user does not exist.
    pub(crate) fn set_user_email(&mut self, user_id: &str, email: &str) {
        let push = self.push_out_of_band();
        let orgs = &self.orgs;
        let user = self
            .users
            .get_mut(user_id)
            .unwrap_or_else(|| panic!("set_user_email: unknown user {user_id}"));
        let unchanged = user.email(orgs) == email;
        user.email = Some(email.to_owned());
        if unchanged {
            return;
        }
        user.agg.push(
            &push,
            "user.human.email.changed",
            Some(json!({ "email": email })),
        );
        user.agg.push(&push, "user.human.email.verified", None);
        self.total_events += EMAIL_CHANGE_EVENTS;
    }

    /// Removes a user (a `user.removed` event; its metadata disappears from reads).
    pub(crate) fn remove_user(&mut self, id: &str) {
        if let Some(mut user) = self.users.remove(id) {
            let push = self.push_out_of_band();
            user.agg.push(
                &push,
                "user.removed",
                Some(json!({ "userName": user.user_name })),
            );
            self.removed_events.append(&mut user.agg.events);
            self.total_events += 1;
        }
    }
}

/// Puts the rows of one unsorted listing in the order drawn by `rng` ([`State::shuffler`]), or
/// leaves them (sorted) without one.
pub(crate) fn apply_order<T>(rng: Option<StdRng>, items: &mut [T]) {
    if let Some(mut rng) = rng {
        use rand::seq::SliceRandom as _;
        items.shuffle(&mut rng);
    }
}
