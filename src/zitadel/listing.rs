//! Listing a target's metadata without losing a key, whatever order ZITADEL returns rows in,
//! at a cost bounded by what it returns. One implementation for v1 and v2: a [`PageSource`]
//! says how to fetch one page; this module decides which pages to fetch.
//!
//! * **Order.** v1 sets no sort column, the org v2 list has no ORDER BY, the user v2 list sorts
//!   by creation date without a tie-breaker: offset paging may skip or repeat rows. One page
//!   holding everything is always right, so the first request asks for all rows (v1 has no
//!   maximum) or for the largest page (v2: 1000). When paging was needed, rows are merged by
//!   key, and the listing is checked: distinct keys must equal `totalResult` on every page.
//!   If it does not add up, every relevant key not seen is looked up with a key filter
//!   (EQUALS, in the body, so any key works), after one more pass when that is cheaper.
//! * **Size.** A page refused as too large (our cap, or gRPC's 4 MiB limit behind the REST
//!   gateway: 429 code 8 "message larger than max (N vs. M)") is asked again with fewer rows,
//!   sized from the refused size; pages after a page that fit are sized from the bytes seen,
//!   so the page grows back. Within a window known (from a refusal) to hold N bytes, each
//!   page is sized from the bytes still unread there.

use super::{Listing, MetadataMap, Relevant, ZitadelError};

/// Requests one listing may make before giving up (a server that keeps paging forever).
const MAX_CALLS: u32 = 20_000;
/// Longest key ZITADEL accepts (runes): a longer key cannot exist, no lookup needed.
const MAX_KEY_CHARS: usize = 200;
/// Extra passes tried to complete a listing whose caller needs every key.
const EXTRA_PASSES_ALL: u32 = 2;

/// One page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageQuery<'a> {
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return; `None`: all of them (v1 only).
    pub limit: Option<u32>,
    /// Only this key (EQUALS filter).
    pub key: Option<&'a str>,
}

/// One page answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Page {
    /// Rows (key, decoded value) in the order received.
    pub items: Vec<(String, Vec<u8>)>,
    /// `totalResult` (matches ignoring offset and limit); `None` when absent.
    pub total: Option<u64>,
    /// Size of the answer body in bytes.
    pub bytes: usize,
}

/// How to fetch pages of one target's metadata.
pub(crate) trait PageSource: Sync {
    /// Largest `limit` the API accepts; `None`: no maximum (and [`PageQuery::limit`] `None`
    /// asks for everything).
    fn max_page(&self) -> Option<u32>;
    /// Bytes of answer one page should stay under.
    fn budget(&self) -> usize;
    /// Fetch one page.
    fn page(
        &self,
        query: PageQuery<'_>,
    ) -> impl std::future::Future<Output = Result<Page, ZitadelError>> + Send;
}

/// List the target behind `source`; see the module documentation.
pub(crate) async fn list<S: PageSource>(
    source: &S,
    relevant: Relevant<'_>,
) -> Result<Listing, ZitadelError> {
    let mut lister = Lister {
        source,
        calls: 0,
        seen: MetadataMap::new(),
        sizer: Sizer::new(source.max_page(), source.budget() as f64),
    };
    let first = lister.pass().await?;
    if first.complete(lister.seen.len()) {
        return Ok(lister.done(true));
    }
    let mut last = first;
    match relevant {
        Relevant::All => {
            for _ in 0..EXTRA_PASSES_ALL {
                last = lister.pass().await?;
                if last.complete(lister.seen.len()) {
                    return Ok(lister.done(true));
                }
            }
            Err(ZitadelError::IncompleteListing {
                seen: lister.seen.len(),
                total: last.total.unwrap_or_default(),
            })
        }
        Relevant::Only(keys) => {
            let missing = |seen: &MetadataMap| -> Vec<String> {
                keys.iter()
                    .filter(|k| !seen.contains_key(*k) && could_exist(k))
                    .cloned()
                    .collect()
            };
            // Another pass costs about what the first did; lookups cost one request each.
            if missing(&lister.seen).len() as u32 > first.calls {
                last = lister.pass().await?;
                if last.complete(lister.seen.len()) {
                    return Ok(lister.done(true));
                }
            }
            for key in missing(&lister.seen) {
                lister.lookup(&key).await?;
            }
            Ok(lister.done(false))
        }
    }
}

/// The answer bytes a size refusal stands for: our cap reports the answer's `Content-Length`
/// (JSON); gRPC counts the protobuf message, and the JSON answer is larger (base64 values grow
/// by 4/3, and only values make a page large).
fn answer_bytes(e: &ZitadelError) -> Option<f64> {
    let size = e.refused_size()? as f64;
    Some(match e {
        ZitadelError::ResponseTooLarge { .. } => size,
        _ => size * 4.0 / 3.0,
    })
}

/// Whether ZITADEL could hold this key (1–200 runes).
fn could_exist(key: &str) -> bool {
    !key.is_empty() && key.chars().count() <= MAX_KEY_CHARS
}

/// What one pass over the pages found.
#[derive(Clone, Copy, Debug)]
struct PassOutcome {
    /// One answer held the whole listing (no offset paging happened).
    single: bool,
    /// `totalResult` of the last page; `None` when never reported.
    total: Option<u64>,
    /// Every page reported the same total.
    consistent: bool,
    /// Rows received over the pass.
    rows: u64,
    /// Requests the pass made.
    calls: u32,
}

impl PassOutcome {
    /// Whether the keys seen so far are all the target's keys.
    fn complete(&self, distinct: usize) -> bool {
        match self.total {
            // Absent total: ZITADEL omits it when 0; a single answer without it is whole.
            None => self.single || self.rows == 0,
            Some(total) => self.consistent && distinct as u64 >= total,
        }
    }
}

struct Lister<'s, S> {
    source: &'s S,
    calls: u32,
    seen: MetadataMap,
    sizer: Sizer,
}

impl<S: PageSource> Lister<'_, S> {
    async fn fetch(&mut self, query: PageQuery<'_>) -> Result<Page, ZitadelError> {
        if self.calls >= MAX_CALLS {
            return Err(ZitadelError::Decode(format!(
                "metadata listing did not end after {MAX_CALLS} requests"
            )));
        }
        self.calls += 1;
        self.source.page(query).await
    }

    /// One pass over the pages, from offset 0 until the listing says it ended.
    async fn pass(&mut self) -> Result<PassOutcome, ZitadelError> {
        let calls_before = self.calls;
        let mut offset = 0u64;
        let mut limit = self.sizer.next(0);
        let mut out = PassOutcome {
            single: true,
            total: None,
            consistent: true,
            rows: 0,
            calls: 0,
        };
        loop {
            let query = PageQuery {
                offset,
                limit,
                key: None,
            };
            let page = match self.fetch(query).await {
                Ok(page) => page,
                Err(e) if e.is_too_large() => {
                    let refused = answer_bytes(&e);
                    match self.sizer.refused(offset, limit, refused) {
                        Some(next) => {
                            limit = next;
                            continue;
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            let received = page.items.len() as u64;
            if let Some(total) = page.total {
                if out.total.is_some_and(|t| t != total) {
                    out.consistent = false;
                }
                out.total = Some(total);
            }
            let known = self.seen.len();
            self.seen.extend(page.items);
            let new_keys = self.seen.len() - known;
            self.sizer.fitted(offset, received, page.bytes, out.total);
            out.rows += received;
            offset += received;
            let ended = limit.is_none()
                || received == 0
                || received < u64::from(limit.unwrap_or(0))
                || out.total.is_some_and(|t| offset >= t);
            if ended {
                break;
            }
            out.single = false;
            // Only rows seen before: the order moved under us (or offset is ignored); stop
            // here, the completeness check decides what else is needed.
            if new_keys == 0 {
                break;
            }
            limit = self.sizer.next(offset);
        }
        out.calls = self.calls - calls_before;
        Ok(out)
    }

    /// Look `key` up alone (EQUALS filter); records it if present.
    async fn lookup(&mut self, key: &str) -> Result<(), ZitadelError> {
        let page = self
            .fetch(PageQuery {
                offset: 0,
                limit: Some(1),
                key: Some(key),
            })
            .await?;
        // Trust only the row of the key asked for.
        if let Some((k, v)) = page.items.into_iter().find(|(k, _)| k == key) {
            self.seen.insert(k, v);
        }
        Ok(())
    }

    fn done(self, complete: bool) -> Listing {
        Listing {
            metadata: self.seen,
            complete,
            calls: self.calls,
        }
    }
}

/// Chooses page sizes from the bytes seen and refused.
#[derive(Clone, Debug)]
struct Sizer {
    /// API maximum (`None`: unlimited).
    max: Option<u32>,
    /// Answer bytes a page should stay under.
    budget: f64,
    /// Bytes per row of the last page that fit.
    density: Option<f64>,
    /// A window known, from a refusal, to be heavy.
    heavy: Option<Heavy>,
    /// `totalResult`, once known.
    total: Option<u64>,
}

/// Rows `[.., end)` hold about `bytes` bytes of answer not read yet.
#[derive(Clone, Copy, Debug)]
struct Heavy {
    end: Option<u64>,
    bytes: f64,
}

impl Sizer {
    fn new(max: Option<u32>, budget: f64) -> Self {
        Sizer {
            max,
            budget: budget.max(1.0),
            density: None,
            heavy: None,
            total: None,
        }
    }

    /// Rows `rows` clamped to `[1, max]`.
    fn clamp(&self, rows: f64) -> u32 {
        let cap = f64::from(self.max.unwrap_or(u32::MAX));
        // `as` saturates; NaN becomes 0 and is lifted to 1.
        (rows.floor().min(cap) as u32).max(1)
    }

    /// The limit of the page at `offset`.
    fn next(&self, offset: u64) -> Option<u32> {
        let heavy_density = self.heavy.and_then(|h| {
            let end = h.end.or(self.total)?;
            (offset < end).then(|| h.bytes.max(0.0) / (end - offset) as f64)
        });
        let density = match (heavy_density, self.density) {
            (Some(h), Some(d)) => Some(h.max(d)),
            (h, d) => h.or(d),
        };
        match density {
            // Nothing known yet: everything (v1) or the largest page (v2).
            None if self.heavy.is_none() => self.max,
            // Refused, size of the window unknown (asked for everything): one row, to learn
            // the total.
            None => Some(1),
            Some(d) => Some(self.clamp(self.budget / d.max(1.0))),
        }
    }

    /// A page at `offset` with `rows` rows and `bytes` bytes fitted.
    fn fitted(&mut self, offset: u64, rows: u64, bytes: usize, total: Option<u64>) {
        if total.is_some() {
            self.total = total;
        }
        if rows > 0 {
            self.density = Some(bytes as f64 / rows as f64);
        }
        if let Some(h) = &mut self.heavy {
            h.bytes -= bytes as f64;
            let end = h.end.or(self.total);
            if end.is_some_and(|end| offset + rows >= end) {
                self.heavy = None;
            }
        }
    }

    /// The page at `offset` asking `limit` rows was refused as too large (`size`: the answer's
    /// bytes, when known). The next limit, or `None` when the page cannot shrink.
    fn refused(
        &mut self,
        offset: u64,
        limit: Option<u32>,
        size: Option<f64>,
    ) -> Option<Option<u32>> {
        let remaining = self.total.map(|t| t.saturating_sub(offset));
        let window = match (limit, remaining) {
            (Some(l), Some(r)) => Some(u64::from(l).min(r)),
            (Some(l), None) => Some(u64::from(l)),
            (None, r) => r,
        };
        if window.is_some_and(|w| w <= 1) {
            return None;
        }
        // Unknown size (our cap, no Content-Length): assume eight budgets' worth.
        let bytes = size.unwrap_or(8.0 * self.budget).max(self.budget);
        self.heavy = Some(Heavy {
            end: window.map(|w| offset + w),
            bytes,
        });
        Some(match window {
            Some(w) => {
                let rows = (w as f64 * self.budget / bytes).min(w as f64 - 1.0);
                Some(self.clamp(rows))
            }
            None => Some(1),
        })
    }
}

#[cfg(test)]
mod tests;
