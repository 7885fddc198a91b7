//! The per-key baseline: a small syncer that does what a Terraform-style tool does for the same
//! objects — list the target's metadata, then one single-key `POST .../metadata/{key}` (Set) per
//! key that is missing or differs. A mode of the benchmark, not of the product.
//!
//! It runs on its own thread with a current-thread runtime, so its CPU time (the thread's own
//! accounting) excludes the emulator serving it in the same process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::Pacer;
use super::workload::{Object, TargetKind};

/// What the per-key run measured.
#[derive(Clone, Debug)]
pub struct PerKeyRun {
    /// Start of the run to the last object done.
    pub wall: Duration,
    /// Per object: start of the run to that object done.
    pub done_after: Vec<Duration>,
    /// CPU seconds of the syncer's thread.
    pub cpu_seconds: f64,
    /// Requests that failed (non-2xx or transport).
    pub errors: usize,
}

/// Syncs `objects` against `base_url` with `workers` objects at once (and `rps` requests per
/// second at most, 0 = unlimited). Blocks the calling thread.
pub fn run(
    base_url: &str,
    token: &str,
    objects: &[Object],
    workers: usize,
    rps: u32,
) -> Result<PerKeyRun> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("per-key runtime")?;
    let cpu_start = super::process::thread_cpu_seconds();
    let result = runtime.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let syncer = Arc::new(Syncer {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            pacer: Pacer::new(rps),
        });
        let started = Instant::now();
        let results: Vec<(usize, Duration)> =
            futures::stream::iter(objects.iter().cloned().map(|o| {
                let syncer = syncer.clone();
                async move {
                    let errors = syncer.sync(&o).await;
                    (errors, started.elapsed())
                }
            }))
            .buffered(workers.max(1))
            .collect()
            .await;
        anyhow::Ok((started.elapsed(), results))
    });
    let cpu_seconds = super::process::thread_cpu_seconds() - cpu_start;
    let (wall, results) = result?;
    Ok(PerKeyRun {
        wall,
        errors: results.iter().map(|(e, _)| e).sum(),
        done_after: results.into_iter().map(|(_, d)| d).collect(),
        cpu_seconds,
    })
}

struct Syncer {
    http: reqwest::Client,
    base: String,
    token: String,
    pacer: Pacer,
}

impl Syncer {
    fn metadata_url(&self, o: &Object, last: &str) -> String {
        match o.kind {
            TargetKind::Org => format!("{}/management/v1/metadata/{last}", self.base),
            TargetKind::User => format!(
                "{}/management/v1/users/{}/metadata/{last}",
                self.base, o.user_id
            ),
        }
    }

    async fn post(&self, o: &Object, url: String, body: &Value) -> Option<Value> {
        self.pacer.wait().await;
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header("x-zitadel-orgid", &o.org_id)
            .json(body)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// List, then one Set per missing/different key. Returns the number of failed requests.
    async fn sync(&self, o: &Object) -> usize {
        let mut errors = 0;
        let mut current: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let list = json!({"query": {"offset": "0", "limit": 1000, "asc": true}});
        match self.post(o, self.metadata_url(o, "_search"), &list).await {
            Some(page) => {
                for item in page
                    .get("result")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
                    let value = item
                        .get("value")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if let Ok(bytes) = BASE64_STANDARD.decode(value) {
                        current.insert(key.to_owned(), bytes);
                    }
                }
            }
            None => errors += 1,
        }
        for (key, value) in &o.entries {
            if current.get(key).map(Vec::as_slice) == Some(value.as_bytes()) {
                continue;
            }
            let body = json!({"value": BASE64_STANDARD.encode(value)});
            if self
                .post(o, self.metadata_url(o, key), &body)
                .await
                .is_none()
            {
                errors += 1;
            }
        }
        errors
    }
}
