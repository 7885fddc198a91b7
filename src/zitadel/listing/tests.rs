use super::*;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// A target served the way ZITADEL may: rows in a fresh random order per request (or key
/// order), pages over `cap` bytes refused like gRPC does (with the size).
struct Fake {
    rows: Vec<(String, Vec<u8>)>,
    shuffle: bool,
    cap: usize,
    max: Option<u32>,
    seed: Mutex<u64>,
    log: Mutex<Vec<(u64, Option<u32>, bool)>>,
}

impl Fake {
    fn new(rows: Vec<(String, Vec<u8>)>, shuffle: bool, max: Option<u32>) -> Self {
        Fake {
            rows,
            shuffle,
            cap: 4 * 1024 * 1024,
            max,
            seed: Mutex::new(0x9e37_79b9_7f4a_7c15),
            log: Mutex::new(Vec::new()),
        }
    }

    fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.rows.len()).collect();
        if self.shuffle {
            let mut seed = self.seed.lock().expect("lock");
            for i in (1..idx.len()).rev() {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                idx.swap(i, (*seed % (i as u64 + 1)) as usize);
            }
        }
        idx
    }

    fn row_bytes(key: &str, value: &[u8]) -> usize {
        120 + key.len() + value.len().div_ceil(3) * 4
    }
}

impl PageSource for Fake {
    fn max_page(&self) -> Option<u32> {
        self.max
    }
    fn budget(&self) -> usize {
        3 * 1024 * 1024
    }
    async fn page(&self, q: PageQuery<'_>) -> Result<Page, ZitadelError> {
        let filtered: Vec<&(String, Vec<u8>)> = self
            .order()
            .into_iter()
            .map(|i| &self.rows[i])
            .filter(|(k, _)| q.key.is_none_or(|want| want == k))
            .collect();
        let total = filtered.len() as u64;
        let limit = q.limit.map_or(usize::MAX, |l| l as usize);
        let items: Vec<(String, Vec<u8>)> = filtered
            .into_iter()
            .skip(q.offset as usize)
            .take(limit)
            .cloned()
            .collect();
        let bytes: usize = items.iter().map(|(k, v)| Fake::row_bytes(k, v)).sum();
        self.log
            .lock()
            .expect("lock")
            .push((q.offset, q.limit, q.key.is_some()));
        if bytes > self.cap {
            return Err(ZitadelError::from_response(
                429,
                None,
                &format!(
                    r#"{{"code":8,"message":"grpc: received message larger than max ({bytes} vs. {})"}}"#,
                    self.cap
                ),
            ));
        }
        Ok(Page {
            items,
            total: (total > 0).then_some(total),
            bytes,
        })
    }
}

fn target(keys: usize, large: &[usize]) -> Vec<(String, Vec<u8>)> {
    (0..keys)
        .map(|i| {
            let value = if large.contains(&i) {
                vec![b'x'; 450_000]
            } else {
                format!("v{i}").into_bytes()
            };
            (format!("key-{i:05}"), value)
        })
        .collect()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn one_page_when_everything_fits() {
    let fake = Fake::new(target(2_345, &[]), true, None);
    let listing = block_on(list(&fake, Relevant::All)).expect("list");
    assert_eq!(listing.metadata.len(), 2_345);
    assert!(listing.complete);
    assert_eq!(listing.calls, 1);
    // v2 (max 1000) but a target that fits one page: one call, whatever the order.
    let fake = Fake::new(target(999, &[]), true, Some(1000));
    let listing = block_on(list(&fake, Relevant::All)).expect("list");
    assert_eq!((listing.metadata.len(), listing.calls), (999, 1));
}

/// Issue #16's target: 1,500 foreign keys and 8 values of 450 kB, answers over 4 MiB
/// refused; the large values anywhere (spread, clustered at the start, at the end).
#[test]
fn large_values_cost_a_bounded_number_of_calls() {
    let placements: [(&str, Vec<usize>); 4] = [
        ("spread", (0..8).map(|i| i * 190 + 7).collect()),
        ("start", (0..8).collect()),
        ("end", (1_500..1_508).collect()),
        ("middle", (700..708).collect()),
    ];
    for (max, shuffle) in [
        (None, false),
        (None, true),
        (Some(1000), false),
        (Some(1000), true),
    ] {
        for (name, large) in &placements {
            let rows = target(1_508, large);
            let bytes: usize = rows.iter().map(|(k, v)| Fake::row_bytes(k, v)).sum();
            let fake = Fake::new(rows.clone(), shuffle, max);
            let desired: BTreeSet<String> = large
                .iter()
                .map(|i| format!("key-{i:05}"))
                .chain(["key-00003".to_string(), "absent".to_string()])
                .collect();
            let listing = block_on(list(&fake, Relevant::Only(&desired))).expect("list");
            for key in &desired {
                let want = rows.iter().find(|(k, _)| k == key).map(|(_, v)| v);
                assert_eq!(listing.metadata.get(key), want, "{name}: {key}");
            }
            let bound =
                1_508u32.div_ceil(max.unwrap_or(1000)) + (bytes as u32).div_ceil(4 * 1024 * 1024);
            println!(
                "FIGURE listing placement={name} max={max:?} shuffled={shuffle} calls={} bound_without_constant={bound} complete={}",
                listing.calls, listing.complete
            );
            assert!(
                listing.calls <= bound + 12,
                "{name} max={max:?} shuffled={shuffle}: {} calls, log {:?}",
                listing.calls,
                fake.log.lock().expect("lock")
            );
            if !shuffle {
                assert!(listing.complete, "{name}: key order never loses a row");
            }
        }
    }
}

/// Rows in a new order on every request: a paged listing can skip and repeat rows. Every
/// relevant key is still exact; with `All`, it is complete or an error, never short.
#[test]
fn shuffled_pages_never_lose_a_relevant_key() {
    let rows = target(3_000, &[]);
    let fake = Fake::new(rows.clone(), true, Some(1000));
    let relevant: BTreeSet<String> = (0..3_000)
        .step_by(37)
        .map(|i| format!("key-{i:05}"))
        .chain(["key-99999".to_string()])
        .collect();
    let listing = block_on(list(&fake, Relevant::Only(&relevant))).expect("list");
    for key in &relevant {
        let want = rows.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        assert_eq!(listing.metadata.get(key), want, "{key}");
    }
    assert!(
        listing.calls <= 3 + 3 + relevant.len() as u32,
        "{}",
        listing.calls
    );

    let fake = Fake::new(rows.clone(), true, Some(1000));
    match block_on(list(&fake, Relevant::All)) {
        Ok(listing) => {
            assert!(listing.complete);
            assert_eq!(listing.metadata.len(), 3_000);
        }
        Err(e) => assert!(matches!(e, ZitadelError::IncompleteListing { .. }), "{e}"),
    }
    // In key order, paging is exact.
    let fake = Fake::new(rows, false, Some(1000));
    let listing = block_on(list(&fake, Relevant::All)).expect("list");
    assert_eq!((listing.metadata.len(), listing.calls), (3_000, 3));
}

#[test]
fn refusal_of_a_single_row_is_an_error() {
    let mut fake = Fake::new(target(3, &[1]), false, None);
    fake.cap = 1000;
    let err = block_on(list(&fake, Relevant::All)).expect_err("too large");
    assert!(err.is_message_too_large(), "{err}");
    assert!(fake.log.lock().expect("lock").len() <= 6);
}

#[test]
fn page_sizes_grow_back_after_a_heavy_window() {
    let mut s = Sizer::new(Some(1000), 3_000_000.0);
    assert_eq!(s.next(0), Some(1000));
    s.total = Some(5_000);
    // 1000 rows refused at 6 MB: 500 rows.
    assert_eq!(s.refused(0, Some(1000), Some(6_000_000.0)), Some(Some(500)));
    // 500 light rows fit (50 kB): the rest of the window holds ~5.95 MB in 500 rows.
    s.fitted(0, 500, 50_000, Some(5_000));
    assert_eq!(s.next(500), Some(252));
    s.fitted(500, 252, 2_900_000, Some(5_000));
    s.fitted(752, 248, 2_900_000, Some(5_000));
    // Past the window: sized from the last page again.
    assert!(s.heavy.is_none());
    s.fitted(1000, 1000, 100_000, Some(5_000));
    assert_eq!(s.next(2000), Some(1000));
    // Unlimited API, refused before anything is known: one row to learn the total.
    let mut s = Sizer::new(None, 3_000_000.0);
    assert_eq!(s.next(0), None);
    assert_eq!(s.refused(0, None, Some(9_000_000.0)), Some(Some(1)));
}
