use super::*;

fn route(service_exists: bool) -> Result<(), ZitadelError> {
    Err(ZitadelError::from_response(
        404,
        None,
        if service_exists {
            "404 page not found"
        } else {
            r#"{"code":5,"message":"Not Found"}"#
        },
    ))
}

fn v1_route_missing() -> Result<(), ZitadelError> {
    Err(ZitadelError::from_response(
        404,
        None,
        r#"{"code":5,"message":"Not Found"}"#,
    ))
}

/// What each ZITADEL version answers and what `Auto` chooses (README "ZITADEL versions"):
/// v1 wherever it is served; v2 only where v1 is gone and the v2 method answers.
// Long because it is one table: a row per ZITADEL version, read top to bottom.
#[test]
fn decision_table() {
    use ProbeAnswer::*;
    let served =
        |v1: Result<(), ZitadelError>, v2: Option<Result<(), ZitadelError>>| ServiceProbe {
            v1: classify_v1(v1).expect("conclusive"),
            v2: v2.map(|r| classify(r).expect("conclusive")),
        };
    let cases = [
        // v3 and older, v4.0, v4.x: v1 is served for both; v2 is not even asked.
        (
            "v3..v4.x",
            served(Ok(()), None),
            served(Ok(()), None),
            (Api::V1, Api::V1, false, false),
        ),
        // v5: the v1 routes answer the routing 404; both v2 methods answer.
        (
            "v5",
            served(v1_route_missing(), Some(Ok(()))),
            served(v1_route_missing(), Some(Ok(()))),
            (Api::V2, Api::V2, true, true),
        ),
        // Hypothetical: v1 gone for orgs only, the org v2 service without the method: v1
        // stays (its calls report ZitadelApiUnavailable).
        (
            "org v1 gone, no org v2",
            served(Ok(()), None),
            served(v1_route_missing(), Some(route(true))),
            (Api::V1, Api::V1, false, true),
        ),
        // Nothing at all (a URL that is not ZITADEL's API).
        (
            "none",
            served(v1_route_missing(), Some(route(false))),
            served(v1_route_missing(), Some(route(false))),
            (Api::V1, Api::V1, false, false),
        ),
    ];
    for (version, user, org, (user_api, org_api, user_svc, org_svc)) in cases {
        let sel = decide(user, org);
        assert_eq!(sel.user_metadata, user_api, "{version}");
        assert_eq!(sel.org_metadata, org_api, "{version}");
        assert_eq!(sel.user_service_v2, user_svc, "{version}");
        assert_eq!(sel.org_service_v2, org_svc, "{version}");
        assert!(sel.probed);
    }
    assert_eq!(classify(route(true)).ok(), Some(MethodMissing));
    assert_eq!(classify(route(false)).ok(), Some(ServiceMissing));
    // v1 answered by ZITADEL itself (an error id): served, the caller just lacks rights.
    for body in [
        (
            403,
            r#"{"code":7,"message":"x","details":[{"id":"AUTH-5mWD2"}]}"#,
        ),
        (
            404,
            r#"{"code":5,"message":"x","details":[{"id":"AUTHZ-cdgFk"}]}"#,
        ),
    ] {
        let err = ZitadelError::from_response(body.0, None, body.1);
        assert_eq!(classify_v1(Err(err)).ok(), Some(true), "{body:?}");
    }
    // Token problems, server errors and timeouts decide nothing, on either probe.
    for body in [
        (
            401,
            r#"{"code":"unauthenticated","message":"auth header missing"}"#,
        ),
        (403, r#"{"code":"permission_denied","message":"no"}"#),
        (503, "upstream down"),
        (415, ""),
        (
            404,
            r#"{"code":5,"message":"User not found","details":[{"id":"X-1"}]}"#,
        ),
    ] {
        let err = ZitadelError::from_response(body.0, None, body.1);
        assert!(classify(Err(err)).is_err(), "{body:?}");
    }
    for body in [
        (401, r#"{"code":16,"message":"auth header missing"}"#),
        (503, "upstream down"),
    ] {
        let err = ZitadelError::from_response(body.0, None, body.1);
        assert!(classify_v1(Err(err)).is_err(), "{body:?}");
    }
    let timeout = || ZitadelError::Timeout(std::time::Duration::from_secs(1));
    assert!(classify(Err(timeout())).is_err());
    assert!(classify_v1(Err(timeout())).is_err());
}

#[test]
fn pinned_modes_and_display() {
    assert_eq!(ApiSelection::pinned(ApiMode::Auto), None);
    let v1 = ApiSelection::pinned(ApiMode::V1).expect("pinned");
    assert_eq!((v1.user_metadata, v1.org_metadata), (Api::V1, Api::V1));
    assert!(!v1.user_service_v2);
    assert_eq!(v1.to_string(), "user=v1 org=v1 (pinned)");
    let probed = decide(
        ServiceProbe {
            v1: false,
            v2: Some(ProbeAnswer::Available),
        },
        ServiceProbe { v1: true, v2: None },
    );
    assert_eq!(probed.to_string(), "user=v2 org=v1");
}

#[test]
fn forgetting_only_the_generation_seen() {
    let s = Selector::new(ApiMode::Auto);
    assert!(s.get().is_none());
    let v1 = ServiceProbe { v1: true, v2: None };
    let v2 = ServiceProbe {
        v1: false,
        v2: Some(ProbeAnswer::Available),
    };
    let g1 = s.store(decide(v2, v2));
    let g2 = s.store(decide(v2, v1));
    // A caller that saw the first selection fail does not discard the newer one.
    s.forget(Some(g1));
    assert_eq!(s.get().map(|(g, _)| g), Some(g2));
    s.forget(Some(g2));
    assert!(s.get().is_none());
    assert_eq!(s.probes(), 2);
    // Pinned: never forgotten.
    let pinned = Selector::new(ApiMode::V2);
    pinned.forget(None);
    assert!(pinned.get().is_some());
}
