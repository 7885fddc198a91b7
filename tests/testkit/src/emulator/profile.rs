//! ZITADEL version profiles: which APIs an emulated instance serves and how its v2 commands
//! behave, as one table ([`FACTS`]) with the contract's section references
//! (`shared/zitadel-api.md` = "api", `shared/zitadel-v2-and-events.md` = "v2e").
//!
//! | fact | V3 | V4_0 | V4x | Main2026 (default) | V5 | source |
//! |---|---|---|---|---|---|---|
//! | Management API v1 (`/management/v1`) | ✓ | ✓ | ✓ | ✓ | routing 404 | api §7 "Deprecation", §10 |
//! | Connect transport for v2 (`/zitadel.<pkg>.<Svc>/<M>`) | JSON 404 | ✓ | ✓ | ✓ | ✓ | v2e §1.0 (#10145, v4.0) |
//! | user v2 metadata (Connect + `/v2/users/{id}/metadata`) | – | ✓ | ✓ | ✓ | ✓ | v2e §1.1 (#10151, v4.0) |
//! | org v2 `OrganizationService` (ListOrganizations) over Connect | – | ✓ | ✓ | ✓ | ✓ | v2e §1.7 |
//! | org v2 metadata | – | text/plain 404 | ✓ | ✓ | ✓ | v2e §1.1, §1.7 (#11045, v4.x) |
//! | org v2beta metadata | – | ✓ (always writes, no permission check) | ✓ (always writes) | ✓ | routing 404 | v2e §1.1, §1.3, §1.4 |
//! | v2 Set: empty value deletes, unchanged org values skipped | – | – | – | ✓ | ✓ | v2e §1.3 (#11776/#11790, main) |
//! | v1 same-value [`Mode`] | legacy | v4 | v4 | main_2026 | main_2026 | api §2, checklist 10 |
//! | REST v2 lookups (`GET /v2/users/{id}`, `POST /v2/users`, `POST /v2/organizations/_search`) | ✓ | ✓ | ✓ | ✓ | ✓ | api §6 |
//! | admin v1 events API (`/admin/v1/events/_search`, …) | ✓ | ✓ | ✓ | ✓ | ✓ (contract silent) | v2e §2.2 |
//!
//! Contract silences, decided here: whether the admin v1 events API survives the v1 removal in
//! v5 (kept: there is no v2 equivalent, v2e §2.2); whether v4.x org v2 skipped unchanged values
//! (no: tied to #11790 like "empty deletes"); when v2beta gained its permission check (V4x on).

use serde::{Deserialize, Serialize};

use super::model::Mode;

/// A ZITADEL version line the emulator imitates. Select one with
/// [`super::Emulator::start_with`] or [`super::Emulator::set_profile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Profile {
    /// ZITADEL v3.x and older: Management API v1 only; every Connect path answers the gateway's
    /// JSON 404 `{"code":5,"message":"Not Found"}`; no v2/v2beta metadata routes.
    V3,
    /// ZITADEL v4.0: user v2 metadata (Connect and REST); `zitadel.org.v2.OrganizationService`
    /// exists without the metadata methods (they answer `text/plain` `404 page not found`); org
    /// v2beta metadata (every Set writes an event, empty values rejected, no permission check);
    /// v1 present.
    V4_0,
    /// A later ZITADEL v4.x minor: user and org v2 metadata, v2beta, v1 still present.
    V4x,
    /// ZITADEL `main` of March 2026 (the v5 development line before the v1 removal): everything
    /// of [`Profile::V4x`] plus "an empty value deletes" and skip-unchanged on v2 Set. The
    /// default: the emulator's behaviour before profiles existed, plus the v2 APIs.
    #[default]
    Main2026,
    /// ZITADEL v5: v1 routes answer the routing 404 (JSON code 5 "Not Found", no details); v2
    /// present; v2beta removed; "empty value deletes" on v2 Set.
    V5,
}

/// What one [`Profile`] serves and how (one row of [`FACTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProfileFacts {
    pub(crate) profile: Profile,
    /// `/management/v1/...` routes exist.
    pub(crate) v1: bool,
    /// v2 services are served over Connect.
    pub(crate) connect: bool,
    /// User v2 Set/List/DeleteUserMetadata.
    pub(crate) user_v2_metadata: bool,
    /// Org v2 Set/List/DeleteOrganizationMetadata.
    pub(crate) org_v2_metadata: bool,
    /// Org v2beta metadata RPCs.
    pub(crate) org_v2beta_metadata: bool,
    /// v2beta metadata RPCs check permissions.
    pub(crate) v2beta_permission_check: bool,
    /// v2 Set: an empty value deletes the key (PGV `min_len` 0), and org v2/v2beta Set skips
    /// unchanged values.
    pub(crate) empty_value_deletes: bool,
    /// v1 same-value-write behaviour selected with the profile.
    pub(crate) mode: Mode,
}

/// The per-version facts, one row per profile.
pub(crate) const FACTS: [ProfileFacts; 5] = [
    ProfileFacts {
        profile: Profile::V3,
        v1: true,
        connect: false,
        user_v2_metadata: false,
        org_v2_metadata: false,
        org_v2beta_metadata: false,
        v2beta_permission_check: false,
        empty_value_deletes: false,
        mode: Mode::legacy(),
    },
    ProfileFacts {
        profile: Profile::V4_0,
        v1: true,
        connect: true,
        user_v2_metadata: true,
        org_v2_metadata: false,
        org_v2beta_metadata: true,
        v2beta_permission_check: false,
        empty_value_deletes: false,
        mode: Mode::v4(),
    },
    ProfileFacts {
        profile: Profile::V4x,
        v1: true,
        connect: true,
        user_v2_metadata: true,
        org_v2_metadata: true,
        org_v2beta_metadata: true,
        v2beta_permission_check: true,
        empty_value_deletes: false,
        mode: Mode::v4(),
    },
    ProfileFacts {
        profile: Profile::Main2026,
        v1: true,
        connect: true,
        user_v2_metadata: true,
        org_v2_metadata: true,
        org_v2beta_metadata: true,
        v2beta_permission_check: true,
        empty_value_deletes: true,
        mode: Mode::main_2026(),
    },
    ProfileFacts {
        profile: Profile::V5,
        v1: false,
        connect: true,
        user_v2_metadata: true,
        org_v2_metadata: true,
        org_v2beta_metadata: false,
        v2beta_permission_check: true,
        empty_value_deletes: true,
        mode: Mode::main_2026(),
    },
];

impl Profile {
    /// Every profile, oldest first.
    pub const ALL: [Profile; 5] = [
        Profile::V3,
        Profile::V4_0,
        Profile::V4x,
        Profile::Main2026,
        Profile::V5,
    ];

    /// This profile's row of [`FACTS`].
    pub(crate) fn facts(self) -> ProfileFacts {
        FACTS
            .iter()
            .copied()
            .find(|f| f.profile == self)
            .unwrap_or(FACTS[3])
    }

    /// Whether `/management/v1/...` is served.
    pub fn serves_v1(self) -> bool {
        self.facts().v1
    }

    /// Whether v2 services answer over Connect.
    pub fn serves_connect(self) -> bool {
        self.facts().connect
    }

    /// Whether user v2 metadata RPCs exist.
    pub fn serves_user_v2_metadata(self) -> bool {
        self.facts().user_v2_metadata
    }

    /// Whether org v2 metadata RPCs exist.
    pub fn serves_org_v2_metadata(self) -> bool {
        self.facts().org_v2_metadata
    }

    /// Whether org v2beta metadata RPCs exist.
    pub fn serves_org_v2beta_metadata(self) -> bool {
        self.facts().org_v2beta_metadata
    }

    /// Whether a v2 Set with an empty value deletes the key (else PGV rejects it).
    pub fn empty_value_deletes(self) -> bool {
        self.facts().empty_value_deletes
    }

    /// The v1 same-value-write [`Mode`] this profile selects.
    pub fn mode(self) -> Mode {
        self.facts().mode
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::V3 => "v3",
            Profile::V4_0 => "v4.0",
            Profile::V4x => "v4.x",
            Profile::Main2026 => "main-2026",
            Profile::V5 => "v5",
        })
    }
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.to_string().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown ZITADEL profile {s:?} (v3, v4.0, v4.x, main-2026, v5)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_has_one_row() {
        for p in Profile::ALL {
            assert_eq!(FACTS.iter().filter(|f| f.profile == p).count(), 1, "{p}");
            assert_eq!(p.to_string().parse::<Profile>(), Ok(p));
        }
    }
}
