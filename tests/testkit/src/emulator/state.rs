//! The emulated instance: orgs and users as event-sourced aggregates with per-aggregate sequences,
//! their metadata, the tokens that may call the API, and the service users (with their public
//! keys) that obtain access tokens from the token endpoint.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};

use super::model::{Mode, TokenGrant};

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
    pub(crate) sequence: u64,
    pub(crate) creation_date: DateTime<Utc>,
    pub(crate) change_date: DateTime<Utc>,
    pub(crate) metadata: BTreeMap<String, MetaEntry>,
    /// The latest metadata event (set or removed) of this aggregate.
    pub(crate) last_metadata_event: Option<Stamp>,
}

impl Aggregate {
    fn new(creation_events: u64, at: DateTime<Utc>) -> Self {
        Aggregate {
            sequence: creation_events,
            creation_date: at,
            change_date: at,
            metadata: BTreeMap::new(),
            last_metadata_event: None,
        }
    }

    /// Appends a non-metadata event.
    pub(crate) fn push(&mut self, at: DateTime<Utc>) -> Stamp {
        self.sequence += 1;
        self.change_date = at;
        Stamp {
            sequence: self.sequence,
            at,
        }
    }

    /// Appends a `*.metadata.set` event.
    pub(crate) fn set_metadata(&mut self, key: &str, value: &[u8], at: DateTime<Utc>) -> Stamp {
        let stamp = self.push(at);
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
    pub(crate) fn remove_metadata(&mut self, key: &str, at: DateTime<Utc>) -> Stamp {
        let stamp = self.push(at);
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

/// The whole emulated instance.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) orgs: BTreeMap<String, Org>,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) tokens: HashMap<String, TokenGrant>,
    pub(crate) mode: Mode,
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
    last_time: Option<DateTime<Utc>>,
}

impl State {
    /// The grant of a bearer token: a registered token, or an unexpired access token of an
    /// existing service user issued with ZITADEL's API audience.
    pub(crate) fn token_grant(&self, token: &str) -> Option<TokenGrant> {
        if let Some(grant) = self.tokens.get(token) {
            return Some(grant.clone());
        }
        let issued = self
            .issued_tokens
            .get(token)
            .filter(|t| t.api_audience && Instant::now() < t.expires_at)?;
        self.service_users
            .get(&issued.user_id)
            .map(|u| u.grant.clone())
    }

    /// Lifetime of newly issued access tokens.
    pub(crate) fn access_token_lifetime(&self) -> Duration {
        self.access_token_lifetime
            .unwrap_or(DEFAULT_ACCESS_TOKEN_LIFETIME)
    }

    /// A strictly increasing event timestamp with microsecond precision (like Postgres).
    pub(crate) fn now(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let now = now
            .duration_trunc(ChronoDuration::microseconds(1))
            .unwrap_or(now);
        let now = match self.last_time {
            Some(last) if now <= last => last + ChronoDuration::microseconds(1),
            _ => now,
        };
        self.last_time = Some(now);
        now
    }

    /// Creates an org, or renames an existing one (appending an `org.changed` event).
    pub(crate) fn add_org(&mut self, id: &str, name: &str) {
        let at = self.now();
        match self.orgs.get_mut(id) {
            Some(org) => {
                if org.name != name {
                    org.name = name.to_owned();
                    org.agg.push(at);
                    self.total_events += 1;
                }
            }
            None => {
                let primary = primary_domain(id, name);
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
                        agg: Aggregate::new(ORG_CREATION_EVENTS, at),
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
        let at = self.now();
        let org = self
            .orgs
            .get_mut(org_id)
            .unwrap_or_else(|| panic!("add_org_domain: unknown org {org_id}"));
        let events = match org.domains.iter_mut().find(|d| d.domain == domain) {
            Some(existing) if verified && !existing.verified => {
                existing.verified = true;
                1
            }
            Some(_) => 0,
            None => {
                org.domains.push(OrgDomain {
                    domain: domain.to_owned(),
                    verified,
                });
                if verified { VERIFIED_DOMAIN_EVENTS } else { 1 }
            }
        };
        for _ in 0..events {
            org.agg.push(at);
        }
        self.total_events += events;
    }

    /// Removes an org together with its users (their metadata disappears from reads).
    pub(crate) fn remove_org(&mut self, id: &str) {
        if self.orgs.remove(id).is_some() {
            self.users.retain(|_, u| u.org_id != id);
            self.total_events += 1;
        }
    }

    /// Creates a user, or updates org and user name of an existing one (appending an event).
    pub(crate) fn add_user(&mut self, id: &str, org_id: &str, user_name: &str) {
        let at = self.now();
        match self.users.get_mut(id) {
            Some(user) => {
                if user.org_id != org_id || user.user_name != user_name {
                    user.org_id = org_id.to_owned();
                    user.user_name = user_name.to_owned();
                    user.agg.push(at);
                    self.total_events += 1;
                }
            }
            None => {
                self.users.insert(
                    id.to_owned(),
                    User {
                        id: id.to_owned(),
                        org_id: org_id.to_owned(),
                        user_name: user_name.to_owned(),
                        email: None,
                        agg: Aggregate::new(USER_CREATION_EVENTS, at),
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
        let at = self.now();
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
        for _ in 0..EMAIL_CHANGE_EVENTS {
            user.agg.push(at);
        }
        self.total_events += EMAIL_CHANGE_EVENTS;
    }

    /// Removes a user (its metadata disappears from reads).
    pub(crate) fn remove_user(&mut self, id: &str) {
        if self.users.remove(id).is_some() {
            self.total_events += 1;
        }
    }
}
