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

/// A minimal HTTP/1.1 server that answers every request with `{"events":[]}` and keeps each
/// connection open unless the request asked to close it; counts the connections it accepted.
async fn counting_server() -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
                    let complete = head_end.and_then(|end| {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        (buf.len() >= end + 4 + len).then_some((end + 4 + len, head))
                    });
                    let Some((used, head)) = complete else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    buf.drain(..used);
                    let close = head.contains("connection: close");
                    let body = r#"{"events":[]}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
                        body.len(),
                        if close { "connection: close\r\n" } else { "" },
                    );
                    if socket.write_all(reply.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    let url = Url::parse(&format!("http://{addr}/")).expect("url");
    (url, accepted)
}

#[tokio::test]
async fn event_pages_use_a_connection_of_their_own_that_is_not_pooled() {
    use std::sync::atomic::Ordering;
    let (url, accepted) = counting_server().await;
    let client =
        HttpClient::new(ClientConfig::new(url, TokenSource::Static("t".into()))).expect("client");
    let query = crate::zitadel::EventQuery {
        asc: true,
        limit: 1000,
        since: None,
    };
    for _ in 0..2 {
        assert!(
            client
                .admin_list_events(&query)
                .await
                .expect("events")
                .is_empty()
        );
    }
    // Each page on a connection of its own, closed after it (its read buffer is freed).
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    for _ in 0..3 {
        let url = client
            .url(&["management", "v1", "orgs", "me"])
            .expect("url");
        client
            .rest::<()>("GetMyOrg", Method::GET, url, None, None)
            .await
            .expect("answer");
    }
    // Other calls share one pooled connection.
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
