use super::*;

#[test]
fn zero_means_unlimited() {
    assert!(RateLimit::per_second(0).is_none());
}

#[tokio::test]
async fn requests_are_spaced_by_the_budget() {
    let limit = RateLimit::per_second(50).expect("limit");
    let started = std::time::Instant::now();
    let waits = (0..6).map(|_| limit.acquire());
    futures::future::join_all(waits).await;
    // Six requests at 50/s: the first goes at once, the sixth 5 × 20 ms later.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(95), "{elapsed:?}");
}

#[test]
fn empty_values_and_empty_batches_are_never_sent() {
    assert!(check_entries(&[("a", b"x")]).is_ok());
    let err = check_entries(&[("a", b"x"), ("b", b"")]).expect_err("empty value");
    assert!(matches!(err, ZitadelError::InvalidRequest(_)));
    assert!(err.to_string().contains("\"b\""));
    assert!(check_entries(&[]).is_err());
}
