//! What the control plane spends per phase of a benchmark: kube-apiserver and etcd CPU seconds
//! (the kernel's accounting, `/proc/<pid>/stat`), and the apiserver's own counters from its
//! `/metrics` endpoint (requests by verb + resource + subresource with their mean latency, the
//! apiserver's etcd requests by operation, watch events sent to watchers and their bytes) and
//! etcd's (`/metrics` on its client URL: MVCC puts, ranges and transactions, database size).
//!
//! A [`Snapshot`] is taken at each phase boundary; [`PhaseCost::between`] turns two of them into
//! the phase's cost. Counters are summed over labels the report does not show (status code,
//! API version, scope, ...). Scraping `/metrics` itself costs the apiserver a few milliseconds of
//! CPU and shows up as `GET` requests with an empty resource.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::busy::Contention;
use super::process::proc_stats;
use crate::controlplane::ControlPlane;

/// One metric sample: name and labels (sorted `k="v"` pairs joined by `,`, escaped as in the
/// exposition format).
type SeriesKey = (String, String);

/// Parsed Prometheus text exposition: (name, labels) → value. Histogram buckets are skipped.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    series: HashMap<SeriesKey, f64>,
}

impl Metrics {
    /// Parses the Prometheus text format (`# ...` lines and `_bucket` series are skipped).
    pub fn parse(text: &str) -> Metrics {
        let mut series = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let Some(close) = closing_brace(line, open) else {
                        continue;
                    };
                    (&line[..open], &line[open + 1..close], &line[close + 1..])
                }
                None => match line.split_once(' ') {
                    Some((name, rest)) => (name, "", rest),
                    None => continue,
                },
            };
            if name.ends_with("_bucket") {
                continue;
            }
            let Some(value) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            else {
                continue;
            };
            series.insert((name.to_owned(), canonical_labels(labels)), value);
        }
        Metrics { series }
    }

    /// Sum of the series named `name`, grouped by the values of `by` (missing labels are "").
    pub fn sum_by(&self, name: &str, by: &[&str]) -> BTreeMap<Vec<String>, f64> {
        let mut out: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for ((n, labels), v) in &self.series {
            if n != name {
                continue;
            }
            let parsed = parse_labels(labels);
            let key = by
                .iter()
                .map(|l| parsed.get(*l).cloned().unwrap_or_default())
                .collect();
            *out.entry(key).or_default() += v;
        }
        out
    }

    /// Sum of every series named `name`.
    pub fn total(&self, name: &str) -> f64 {
        self.series
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// Whether any series is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.series.keys().any(|(n, _)| n == name)
    }
}

/// Index of the `}` closing the label set opened at `open` (quotes and escapes respected).
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(open + i),
            _ => {}
        }
    }
    None
}

/// `a="1",b="x"` → {a: 1, b: x}.
fn parse_labels(labels: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = labels;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = &rest[eq + 1..];
        let Some(body) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut end = body.len();
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = i;
                break;
            } else {
                value.push(c);
            }
        }
        out.insert(name, value);
        rest = body.get(end + 1..).unwrap_or("");
    }
    out
}

fn canonical_labels(labels: &str) -> String {
    parse_labels(labels)
        .into_iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The control plane's counters and CPU at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    apiserver_cpu_s: f64,
    etcd_cpu_s: f64,
    apiserver: Metrics,
    etcd: Metrics,
}

/// (kube-apiserver pid, etcd pid) of `cp`.
fn pids(cp: &ControlPlane) -> (Option<u32>, Option<u32>) {
    let mut apiserver = None;
    let mut etcd = None;
    for pid in cp.process_ids() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        match comm.trim() {
            "kube-apiserver" => apiserver = Some(pid),
            "etcd" => etcd = Some(pid),
            _ => {}
        }
    }
    (apiserver, etcd)
}

/// A scraper of one control plane (one HTTP client for etcd, the admin client for the apiserver).
#[derive(Clone)]
pub struct Scraper {
    kube: kube::Client,
    http: reqwest::Client,
    etcd_metrics: String,
    apiserver_pid: Option<u32>,
    etcd_pid: Option<u32>,
}

impl Scraper {
    /// A scraper of `cp`.
    pub async fn new(cp: &ControlPlane) -> Result<Scraper> {
        let (apiserver_pid, etcd_pid) = pids(cp);
        Ok(Scraper {
            kube: cp.client().await?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            etcd_metrics: format!("{}/metrics", cp.etcd_url()),
            apiserver_pid,
            etcd_pid,
        })
    }

    /// CPU seconds of (kube-apiserver, etcd) so far.
    pub fn cpu(&self) -> (f64, f64) {
        let cpu = |pid: Option<u32>| {
            pid.and_then(|p| proc_stats(p).ok())
                .map_or(0.0, |s| s.cpu_seconds)
        };
        (cpu(self.apiserver_pid), cpu(self.etcd_pid))
    }

    /// Reads both processes' CPU, then both `/metrics` endpoints.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let at = Instant::now();
        let (apiserver_cpu_s, etcd_cpu_s) = self.cpu();
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let apiserver = self
            .kube
            .request_text(request)
            .await
            .context("scraping kube-apiserver /metrics")?;
        let etcd = self
            .http
            .get(&self.etcd_metrics)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("scraping etcd /metrics")?
            .text()
            .await?;
        Ok(Snapshot {
            at,
            apiserver_cpu_s,
            etcd_cpu_s,
            apiserver: Metrics::parse(&apiserver),
            etcd: Metrics::parse(&etcd),
        })
    }
}

/// Requests of one verb on one resource (and subresource) in a phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RequestStat {
    /// `GET`, `LIST`, `WATCH`, `CREATE`, `PATCH`, `APPLY` (server-side apply), `UPDATE`, ...
    pub verb: String,
    /// Resource (empty for non-resource URLs such as `/metrics`).
    pub resource: String,
    /// Subresource (`status`, ...), empty for the main resource.
    pub subresource: String,
    /// Requests finished in the phase.
    pub count: u64,
    /// Of which answered 4xx/5xx (409 conflicts, 422 rejections, ...).
    pub errors: u64,
    /// Mean apiserver-side latency, ms (`apiserver_request_duration_seconds`; long-running
    /// requests such as watches are not in it).
    pub mean_ms: f64,
}

impl RequestStat {
    /// `APPLY orgmetadatas/status`.
    pub fn label(&self) -> String {
        let what = match (self.resource.as_str(), self.subresource.as_str()) {
            ("", _) => "(non-resource)".to_string(),
            (r, "") => r.to_string(),
            (r, s) => format!("{r}/{s}"),
        };
        format!("{} {what}", self.verb)
    }
}

/// What the control plane spent in one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseCost {
    /// `create`, `converge`, `steady`, `edit`, or the experiment's name.
    pub phase: String,
    /// Length of the phase, seconds.
    pub wall_s: f64,
    /// Objects the per-object figures divide by.
    pub objects: usize,
    /// kube-apiserver CPU seconds.
    pub apiserver_cpu_s: f64,
    /// etcd CPU seconds.
    pub etcd_cpu_s: f64,
    /// Requests finished, by verb + resource + subresource, most frequent first.
    pub requests: Vec<RequestStat>,
    /// Requests from the apiserver to etcd, by operation (`get`, `list`, `create`, `update`,
    /// `listWithCount`, ...).
    pub etcd_requests: BTreeMap<String, u64>,
    /// etcd MVCC puts (each object write is one).
    pub etcd_puts: u64,
    /// etcd MVCC range reads.
    pub etcd_ranges: u64,
    /// etcd MVCC transactions.
    pub etcd_txns: u64,
    /// Watch events the apiserver sent to watchers (fan-out: one per event and watcher).
    pub watch_events_sent: u64,
    /// Their bytes.
    pub watch_event_bytes: u64,
    /// etcd database size at the end of the phase, MiB.
    pub etcd_db_mib: f64,
    /// kube-apiserver resident memory at the end of the phase, MiB.
    pub apiserver_rss_mib: f64,
    /// The machine while the phase ran, when it was sampled.
    pub contention: Option<Contention>,
}

fn delta_by(
    before: &Metrics,
    after: &Metrics,
    name: &str,
    by: &[&str],
) -> BTreeMap<Vec<String>, f64> {
    let b = before.sum_by(name, by);
    let mut out = after.sum_by(name, by);
    for (k, v) in out.iter_mut() {
        *v -= b.get(k).copied().unwrap_or(0.0);
    }
    out.retain(|_, v| *v > 0.0);
    out
}

fn delta_total(before: &Metrics, after: &Metrics, names: &[&str]) -> u64 {
    names
        .iter()
        .find(|n| after.has(n))
        .map_or(0.0, |n| (after.total(n) - before.total(n)).max(0.0))
        .round() as u64
}

impl PhaseCost {
    /// The cost of the phase from `before` to `after`, per-object figures over `objects`.
    pub fn between(phase: &str, objects: usize, before: &Snapshot, after: &Snapshot) -> PhaseCost {
        let (b, a) = (&before.apiserver, &after.apiserver);
        let by = ["verb", "resource", "subresource"];
        let totals = delta_by(b, a, "apiserver_request_total", &by);
        let mut errors: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for (k, v) in delta_by(
            b,
            a,
            "apiserver_request_total",
            &["verb", "resource", "subresource", "code"],
        ) {
            if k[3].starts_with('4') || k[3].starts_with('5') {
                *errors.entry(k[..3].to_vec()).or_default() += v;
            }
        }
        let sums = delta_by(b, a, "apiserver_request_duration_seconds_sum", &by);
        let counts = delta_by(b, a, "apiserver_request_duration_seconds_count", &by);
        let mut requests: Vec<RequestStat> = totals
            .iter()
            .map(|(k, v)| {
                let n = counts.get(k).copied().unwrap_or(0.0);
                RequestStat {
                    verb: k[0].clone(),
                    resource: k[1].clone(),
                    subresource: k[2].clone(),
                    count: v.round() as u64,
                    errors: errors.get(k).copied().unwrap_or(0.0).round() as u64,
                    mean_ms: if n > 0.0 {
                        1000.0 * sums.get(k).copied().unwrap_or(0.0) / n
                    } else {
                        0.0
                    },
                }
            })
            .filter(|r| r.count > 0)
            .collect();
        requests.sort_by(|x, y| {
            y.count
                .cmp(&x.count)
                .then_with(|| x.label().cmp(&y.label()))
        });
        // The apiserver's etcd client: `etcd_requests_total` where present, else the latency
        // histogram's count.
        let etcd_name = if a.has("etcd_requests_total") {
            "etcd_requests_total"
        } else {
            "etcd_request_duration_seconds_count"
        };
        let etcd_requests = delta_by(b, a, etcd_name, &["operation"])
            .into_iter()
            .map(|(k, v)| (k[0].clone(), v.round() as u64))
            .collect();
        let (eb, ea) = (&before.etcd, &after.etcd);
        PhaseCost {
            phase: phase.to_owned(),
            wall_s: after.at.duration_since(before.at).as_secs_f64(),
            objects,
            apiserver_cpu_s: after.apiserver_cpu_s - before.apiserver_cpu_s,
            etcd_cpu_s: after.etcd_cpu_s - before.etcd_cpu_s,
            requests,
            etcd_requests,
            etcd_puts: delta_total(
                eb,
                ea,
                &["etcd_mvcc_put_total", "etcd_debugging_mvcc_put_total"],
            ),
            etcd_ranges: delta_total(
                eb,
                ea,
                &["etcd_mvcc_range_total", "etcd_debugging_mvcc_range_total"],
            ),
            etcd_txns: delta_total(
                eb,
                ea,
                &["etcd_mvcc_txn_total", "etcd_debugging_mvcc_txn_total"],
            ),
            watch_events_sent: delta_total(b, a, &["apiserver_watch_events_total"]),
            watch_event_bytes: delta_total(b, a, &["apiserver_watch_events_sizes_sum"]),
            etcd_db_mib: ea.total("etcd_mvcc_db_total_size_in_bytes") / 1024.0 / 1024.0,
            apiserver_rss_mib: a.total("process_resident_memory_bytes") / 1024.0 / 1024.0,
            contention: None,
        }
    }

    /// kube-apiserver + etcd CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.apiserver_cpu_s + self.etcd_cpu_s
    }

    /// kube-apiserver + etcd CPU milliseconds per object.
    pub fn cpu_ms_per_object(&self) -> f64 {
        1000.0 * self.cpu_s() / self.objects.max(1) as f64
    }

    /// Requests in the phase.
    pub fn request_count(&self) -> u64 {
        self.requests.iter().map(|r| r.count).sum()
    }

    /// The `n` most frequent requests: `APPLY orgmetadatas/status 1000, ...`.
    pub fn top_requests(&self, n: usize) -> String {
        let shown: Vec<String> = self
            .requests
            .iter()
            .filter(|r| !(r.resource.is_empty() && r.verb == "GET"))
            .take(n)
            .map(|r| format!("{} {}", r.label(), r.count))
            .collect();
        if shown.is_empty() {
            "-".into()
        } else {
            shown.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total Counter
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",resource="orgmetadatas",subresource="",verb="POST"} 3
apiserver_request_total{code="200",component="apiserver",resource="orgmetadatas",subresource="status",verb="APPLY"} 5
apiserver_request_total{code="409",component="apiserver",resource="orgmetadatas",subresource="status",verb="APPLY"} 1
apiserver_request_duration_seconds_bucket{resource="orgmetadatas",subresource="status",verb="APPLY",le="0.1"} 6
apiserver_request_duration_seconds_sum{resource="orgmetadatas",subresource="status",verb="APPLY"} 0.06
apiserver_request_duration_seconds_count{resource="orgmetadatas",subresource="status",verb="APPLY"} 6
weird{a="x\"}y",b="2"} 7 1700000000
process_resident_memory_bytes 1.048576e+08
"#;

    #[test]
    fn parses_the_text_format() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.total("apiserver_request_total"), 9.0);
        assert_eq!(m.total("weird"), 7.0);
        assert!(!m.has("apiserver_request_duration_seconds_bucket"));
        let by = m.sum_by("apiserver_request_total", &["verb", "subresource"]);
        assert_eq!(by[&vec!["APPLY".to_string(), "status".to_string()]], 6.0);
        let w = m.sum_by("weird", &["a"]);
        assert_eq!(w[&vec!["x\"}y".to_string()]], 7.0);
    }

    #[test]
    fn a_phase_is_the_difference_of_two_snapshots() {
        let at = Instant::now();
        let before = Snapshot {
            at,
            apiserver_cpu_s: 1.0,
            etcd_cpu_s: 0.5,
            apiserver: Metrics::default(),
            etcd: Metrics::default(),
        };
        let after = Snapshot {
            at: at + Duration::from_secs(2),
            apiserver_cpu_s: 3.0,
            etcd_cpu_s: 1.0,
            apiserver: Metrics::parse(TEXT),
            etcd: Metrics::parse(
                "etcd_mvcc_put_total 4\netcd_mvcc_db_total_size_in_bytes 2097152\n",
            ),
        };
        let p = PhaseCost::between("converge", 5, &before, &after);
        assert_eq!(p.wall_s, 2.0);
        assert_eq!(p.cpu_s(), 2.5);
        assert_eq!(p.cpu_ms_per_object(), 500.0);
        assert_eq!(p.etcd_puts, 4);
        assert_eq!(p.etcd_db_mib, 2.0);
        assert_eq!(p.apiserver_rss_mib, 100.0);
        let apply = &p.requests[0];
        assert_eq!(apply.label(), "APPLY orgmetadatas/status");
        assert_eq!((apply.count, apply.errors), (6, 1));
        assert!((apply.mean_ms - 10.0).abs() < 1e-9);
        assert_eq!(p.requests[1].label(), "POST orgmetadatas");
        assert_eq!(p.top_requests(1), "APPLY orgmetadatas/status 6");
    }
}
