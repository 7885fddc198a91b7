use super::*;

/// Base64 (standard alphabet, no padding) of `ErrorDetail{id, message}` as Connect sends it.
fn detail_value(id: &str, message: &str, padded: bool) -> String {
    let mut bytes = vec![0x0a, id.len() as u8];
    bytes.extend_from_slice(id.as_bytes());
    bytes.push(0x12);
    bytes.push(message.len() as u8);
    bytes.extend_from_slice(message.as_bytes());
    if padded {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    } else {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    }
}

#[test]
fn connect_error_ids_come_from_the_protobuf_detail() {
    // The contract's own example (zitadel-v2-and-events.md §1.6), value unpadded.
    let body = r#"{"code":"not_found","message":"One or more keys do not exist (META-2nnds)",
            "details":[{"type":"zitadel.v1.ErrorDetail","value":"CgpNRVRBLTJubmRzEh1PbmUgb3IgbW9yZSBrZXlzIGRvIG5vdCBleGlzdA",
            "debug":{"id":"META-2nnds","message":"One or more keys do not exist"}}]}"#;
    let err = ZitadelError::from_response(404, None, body);
    assert_eq!(err.id(), Some("META-2nnds"));
    assert!(err.is_key_not_existing() && err.is_transient());
    assert!(matches!(err, ZitadelError::Api { code: 5, .. }));

    // The table of §1.6: values computed by ZITADEL's encoding, unpadded.
    for (status, code_name, value, id) in [
        (
            400,
            "failed_precondition",
            "Cg1DT01NQU5ELXVYSE5qEhdVc2VyIGNvdWxkIG5vdCBiZSBmb3VuZA",
            "COMMAND-uXHNj",
        ),
        (
            404,
            "not_found",
            "CgpNRVRBLTJucGRzEh1PbmUgb3IgbW9yZSBrZXlzIGRvIG5vdCBleGlzdA",
            "META-2npds",
        ),
        (
            403,
            "permission_denied",
            "CgpBVVRILUFXZmdlEh1ObyBtYXRjaGluZyBwZXJtaXNzaW9ucyBmb3VuZA",
            "AUTH-AWfge",
        ),
    ] {
        // No debug, and a message without the id: the protobuf is the only source.
        let body = format!(
            r#"{{"code":"{code_name}","message":"x","details":[{{"type":"zitadel.v1.ErrorDetail","value":"{value}"}}]}}"#
        );
        let err = ZitadelError::from_response(status, None, &body);
        assert_eq!(err.id(), Some(id), "{body}");
    }
    let err = ZitadelError::from_response(
        403,
        None,
        r#"{"code":"permission_denied","message":"x","details":[{"type":"zitadel.v1.ErrorDetail","value":"CgpBVVRILUFXZmdlEh1ObyBtYXRjaGluZyBwZXJtaXNzaW9ucyBmb3VuZA"}]}"#,
    );
    assert!(err.is_permission() && !err.is_transient());
    assert_eq!(err.reason(), Reason::ZitadelPermissionDenied);
}

#[test]
fn padded_unpadded_and_url_safe_values_decode_alike() {
    for padded in [true, false] {
        // "QUERY-Dfbg2" + a 23-byte message: 38 bytes → padding needed when padded.
        let value = detail_value("QUERY-Dfbg2", "User could not be found", padded);
        assert_eq!(value.ends_with('='), padded, "{value}");
        let body = format!(
            r#"{{"code":"not_found","message":"Benutzer nicht gefunden","details":[{{"type":"zitadel.v1.ErrorDetail","value":"{value}"}}]}}"#
        );
        let err = ZitadelError::from_response(404, None, &body);
        assert_eq!(err.id(), Some(ids::USER_NOT_FOUND));
        let url_safe = value.replace('+', "-").replace('/', "_");
        assert!(decode_base64(&url_safe).is_ok());
    }
    // CredentialsCheckError carries its id in field 1 too (field 3 = failed attempts, a
    // varint, is skipped).
    let mut bytes = vec![0x0a, 13];
    bytes.extend_from_slice(b"COMMAND-3M0fs");
    bytes.extend_from_slice(&[0x18, 0x96, 0x01]);
    bytes.extend_from_slice(&[0x12, 1, b'x']);
    let value = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    let body = format!(
        r#"{{"code":"invalid_argument","message":"x","details":[{{"type":"zitadel.v1.CredentialsCheckError","value":"{value}"}}]}}"#
    );
    assert_eq!(
        ZitadelError::from_response(400, None, &body).id(),
        Some("COMMAND-3M0fs")
    );
}

#[test]
fn fallbacks_debug_then_message_then_code() {
    // Undecodable value: debug.id.
    let body = r#"{"code":"not_found","message":"x","details":[{"type":"zitadel.v1.ErrorDetail","value":"!!!","debug":{"id":"META-2npds"}}]}"#;
    assert_eq!(
        ZitadelError::from_response(404, None, body).id(),
        Some("META-2npds")
    );
    // Truncated protobuf (length beyond the end): debug.id.
    let value = base64::engine::general_purpose::STANDARD_NO_PAD.encode([0x0a, 40, b'M']);
    let body = format!(
        r#"{{"code":"not_found","message":"x","details":[{{"type":"zitadel.v1.ErrorDetail","value":"{value}","debug":{{"id":"QUERY-Dfbg2"}}}}]}}"#
    );
    assert_eq!(
        ZitadelError::from_response(404, None, &body).id(),
        Some("QUERY-Dfbg2")
    );
    // No usable detail: the message's "(ID)" suffix.
    let body = r#"{"code":"failed_precondition","message":"User could not be found (COMMAND-uXHNj)","details":[{"type":"other.Type","value":"AAAA"}]}"#;
    let err = ZitadelError::from_response(400, None, body);
    assert_eq!(err.id(), Some("COMMAND-uXHNj"));
    assert!(err.is_user_not_in_org());
    assert_eq!(err.reason(), Reason::UserNotFound);
    // Nothing at all: the code only.
    let err = ZitadelError::from_response(
        400,
        None,
        r#"{"code":"invalid_argument","message":"invalid SetUserMetadataRequest.Metadata[0]: value length must be between 1 and 500000 bytes (inclusive)"}"#,
    );
    assert!(
        matches!(
            err,
            ZitadelError::Api {
                code: 3,
                id: None,
                ..
            }
        ),
        "{err:?}"
    );
    // Not an id: words in parentheses.
    assert_eq!(id_from_message("failed (for some reason)"), None);
    assert_eq!(id_from_message("x (AUTH-Bs7Ds)"), Some("AUTH-Bs7Ds".into()));
}

#[test]
fn rest_v2_errors_use_the_at_type_detail() {
    let body = r#"{"code":9,"message":"User could not be found (COMMAND-uXHNj)","details":[{"@type":"type.googleapis.com/zitadel.v1.ErrorDetail","id":"COMMAND-uXHNj","message":"User could not be found"}]}"#;
    let err = ZitadelError::from_response(400, None, body);
    assert_eq!(err.id(), Some("COMMAND-uXHNj"));
    assert!(matches!(err, ZitadelError::Api { code: 9, .. }));
    let body = r#"{"code":5,"message":"User could not be found (QUERY-Dfbg2)","details":[{"@type":"type.googleapis.com/zitadel.v1.ErrorDetail","id":"QUERY-Dfbg2","message":"User could not be found"}]}"#;
    let err = ZitadelError::from_response(404, None, body);
    assert_eq!(err.id(), Some(ids::USER_NOT_FOUND));
    assert!(!err.is_route_missing() && !err.is_permission());
    assert_eq!(err.reason(), Reason::ZitadelNotFound);
    // GetUserByID's answer for an id no user has: the one error that is proof.
    assert!(err.is_target_missing() && !err.is_transient());
}

#[test]
fn route_404_shapes_are_their_own_kind() {
    for (body, service_exists) in [
        (r#"{"code":5,"message":"Not Found"}"#, false),
        (r#"{"code":5,"message":"Not Found","details":[]}"#, false),
        ("404 page not found\n", true),
    ] {
        let err = ZitadelError::from_response(404, None, body);
        assert!(err.is_route_missing(), "{body}: {err:?}");
        assert!(
            matches!(err, ZitadelError::RouteMissing { service_exists: s, .. } if s == service_exists)
        );
        assert!(!err.is_transient() && !err.is_permission() && !err.is_target_missing());
        assert_eq!(err.reason(), Reason::ZitadelApiUnavailable);
        assert_eq!(err.status(), Some(404));
    }
    // A 404 with an id, or another message, is not a missing route.
    for body in [
        r#"{"code":5,"message":"Metadata not found (META-mcnw3)","details":[{"@type":"type.googleapis.com/zitadel.v1.ErrorDetail","id":"META-mcnw3"}]}"#,
        r#"{"code":5,"message":"User not found"}"#,
        "<html>404</html>",
    ] {
        let err = ZitadelError::from_response(404, None, body);
        assert!(!err.is_route_missing(), "{body}");
        assert_eq!(err.reason(), Reason::ZitadelNotFound);
    }
    // 405 on a REST path that exists with another method: rejected, not a missing route.
    let err =
        ZitadelError::from_response(405, None, r#"{"code":12,"message":"Method Not Allowed"}"#);
    assert!(!err.is_route_missing());
}

#[test]
fn no_membership_is_a_permission_problem_not_a_missing_target() {
    let body = r#"{"code":5,"message":"membership not found (AUTHZ-cdgFk)","details":[{"@type":"type.googleapis.com/zitadel.v1.ErrorDetail","id":"AUTHZ-cdgFk","message":"membership not found"}]}"#;
    let err = ZitadelError::from_response(404, None, body);
    assert!(err.is_permission());
    assert!(!err.is_route_missing() && !err.is_transient() && !err.is_target_missing());
    assert_eq!(err.reason(), Reason::ZitadelPermissionDenied);
}

#[test]
fn org_lookup_failure_is_retried_never_proof() {
    let body = r#"{"code":7,"message":"Organisation doesn't exist (AUTH-Bs7Ds)","details":[{"@type":"type.googleapis.com/zitadel.v1.ErrorDetail","id":"AUTH-Bs7Ds"}]}"#;
    let err = ZitadelError::from_response(403, None, body);
    assert!(err.is_org_lookup_failed());
    assert!(err.is_transient());
    assert!(!err.is_permission() && !err.is_target_missing());
    assert_eq!(err.reason(), Reason::OrganizationLookupFailed);
    assert!(err.reason().is_transient());
    // v1 permission miss.
    let err = ZitadelError::from_response(
        403,
        None,
        r#"{"code":7,"message":"No matching permissions found (AUTH-5mWD2)","details":[{"id":"AUTH-5mWD2"}]}"#,
    );
    assert!(err.is_permission() && !err.is_transient());
}

#[test]
fn parses_zitadel_error_body_by_id_not_text() {
    let body = r#"{"code":5,"message":"Ein oder mehrere Schlüssel existieren nicht (META-2npds)","details":[{"@type":"type.googleapis.com/zitadel.v1.ErrorDetail","id":"META-2npds","message":"x"}]}"#;
    let err = ZitadelError::from_response(404, None, body);
    assert!(err.is_key_not_existing());
    assert_eq!(err.id(), Some("META-2npds"));
}

#[test]
fn grpc_message_size_refusals_are_not_rate_limits() {
    let too_large = ZitadelError::from_response(
        429,
        None,
        r#"{"code":8,"message":"grpc: received message larger than max (9437184 vs. 4194304)","details":[]}"#,
    );
    assert!(too_large.is_message_too_large() && too_large.is_too_large());
    assert_eq!(too_large.refused_size(), Some(9_437_184));
    assert!(!too_large.is_transient());
    assert_eq!(too_large.reason(), Reason::ZitadelMessageTooLarge);
    let connect = ZitadelError::from_response(
        429,
        None,
        r#"{"code":"resource_exhausted","message":"grpc: received message larger than max (> 4194304)"}"#,
    );
    assert!(connect.is_message_too_large());
    assert_eq!(connect.refused_size(), Some(4_194_304));
    for body in [
        r#"{"code":8,"message":"quota exceeded","details":[{"id":"QUOTA-vjAy8"}]}"#,
        r#"{"code":8,"message":"Instance is blocked","details":[{"id":"LIMITS-molsj"}]}"#,
        "Your ZITADEL instance is blocked.",
    ] {
        let err = ZitadelError::from_response(429, None, body);
        assert!(!err.is_message_too_large(), "{body}");
        assert!(err.is_transient());
    }
}

#[test]
fn a_missing_key_is_a_race_not_a_missing_target() {
    for body in [
        r#"{"code":5,"message":"One or more keys do not exist (META-2npds)","details":[{"id":"META-2npds"}]}"#,
        r#"{"code":5,"message":"x","details":[{"id":"META-2nnds"}]}"#,
    ] {
        let err = ZitadelError::from_response(404, None, body);
        assert!(err.is_key_not_existing());
        assert!(!err.is_target_missing(), "{err}");
        assert!(err.is_transient(), "{err}");
        assert_eq!(err.reason(), Reason::ConcurrentMetadataChange);
    }
    // Other 404s prove nothing either.
    let other = ZitadelError::from_response(404, None, r#"{"code":5,"message":"User not found"}"#);
    assert!(!other.is_target_missing() && !other.is_transient());
}

#[test]
fn plain_text_429_is_transient_with_retry_after() {
    let err = ZitadelError::from_response(429, Some("7"), "Your ZITADEL instance is blocked.");
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(err.reason(), Reason::ZitadelRateLimited);
}

#[test]
fn classifies_statuses() {
    for (status, transient) in [
        (400, false),
        (401, false),
        (403, false),
        (404, false),
        (409, true),
        (500, true),
        (503, true),
        (504, true),
    ] {
        let err = ZitadelError::from_response(status, None, "{}");
        assert_eq!(err.is_transient(), transient, "status {status}");
    }
    assert!(ZitadelError::Timeout(Duration::from_secs(1)).is_transient());
    assert!(ZitadelError::Transport("refused".into()).is_transient());
}

#[test]
fn reasons_are_listed_and_transient_reasons_name_only_transient_errors() {
    let samples = [
        ZitadelError::from_response(400, None, "{}"),
        ZitadelError::from_response(401, None, "{}"),
        ZitadelError::from_response(403, None, "{}"),
        ZitadelError::from_response(404, None, "{}"),
        ZitadelError::from_response(404, None, r#"{"code":5,"message":"Not Found"}"#),
        ZitadelError::from_response(
            404,
            None,
            r#"{"code":5,"message":"x","details":[{"id":"AUTHZ-cdgFk"}]}"#,
        ),
        ZitadelError::from_response(
            403,
            None,
            r#"{"code":7,"message":"x","details":[{"id":"AUTH-Bs7Ds"}]}"#,
        ),
        ZitadelError::from_response(400, None, r#"{"code":9,"message":"x (COMMAND-uXHNj)"}"#),
        ZitadelError::from_response(409, None, "{}"),
        ZitadelError::from_response(429, Some("3"), "blocked"),
        ZitadelError::from_response(
            429,
            None,
            r#"{"code":8,"message":"grpc: received message larger than max (5 vs. 4)"}"#,
        ),
        ZitadelError::from_response(500, None, "{}"),
        ZitadelError::from_response(503, None, "{}"),
        ZitadelError::from_response(
            404,
            None,
            r#"{"code":5,"message":"x","details":[{"id":"META-2npds"}]}"#,
        ),
        ZitadelError::Timeout(Duration::from_secs(1)),
        ZitadelError::Transport("reset".into()),
        ZitadelError::Tls("bad".into()),
        ZitadelError::Decode("x".into()),
        ZitadelError::Credentials("x".into()),
        ZitadelError::ResponseTooLarge {
            limit: 1,
            size: None,
        },
        ZitadelError::IncompleteListing { seen: 1, total: 2 },
        ZitadelError::Unproven("x".into()),
        ZitadelError::InvalidRequest("x".into()),
        ZitadelError::UserNotInOrganization {
            user_id: "u".into(),
            org_id: "a".into(),
            actual: "b".into(),
        },
    ];
    let mut seen = std::collections::BTreeSet::new();
    for e in &samples {
        seen.insert(e.reason());
        // A reason that always clears by itself names only transient errors; one that
        // always stalls names none.
        if e.reason().is_transient() {
            assert!(e.is_transient(), "{} is not transient: {e}", e.reason());
        }
        if e.reason().is_stalled() {
            assert!(!e.is_transient(), "{} is transient: {e}", e.reason());
        }
    }
    // Every reason of the client's own (those added with the v2 client) is reachable.
    for r in [
        Reason::ZitadelApiUnavailable,
        Reason::OrganizationLookupFailed,
        Reason::ZitadelMessageTooLarge,
        Reason::ZitadelListingIncomplete,
        Reason::TargetExistenceUnknown,
        Reason::ZitadelPermissionDenied,
        Reason::UserNotFound,
        Reason::InvalidSpec,
    ] {
        assert!(seen.contains(&r), "{r} unreachable");
    }
    assert_eq!(seen.len(), 19);
    assert!(!Reason::ZitadelPermissionDenied.is_transient());
    assert!(!Reason::Connected.is_transient());
}

#[test]
fn protobuf_reader_never_panics_on_garbage() {
    for bytes in [
        &[][..],
        &[0xff][..],
        &[0x0a][..],
        &[
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ][..],
        &[0x09, 1, 2][..],
        &[0x0d, 1][..],
        &[0x0b][..],
        &[0x0a, 2, 0xff, 0xfe][..],
    ] {
        assert_eq!(protobuf_string_field(bytes, 1), None, "{bytes:?}");
    }
    assert_eq!(
        protobuf_string_field(&[0x12, 1, b'm', 0x0a, 2, b'i', b'd'], 1),
        Some("id".into())
    );
}
