//! A busy-machine sampler: while the benchmark converges, it samples the kernel's CPU accounting
//! of the whole machine (`/proc/stat`) and of every process (`/proc/<pid>/stat`), so the report
//! says how much of the machine went to processes that are not part of the benchmark (another
//! build on a shared box, say). A slow convergence on a contended machine is then visible as
//! such instead of being read as the operator's cost.
//!
//! What counts as "the benchmark": the operator, kube-apiserver + etcd, and this process (the
//! emulator, the watches and the creates). Everything else is "other". The machine-wide figure
//! comes from `/proc/stat` (it includes processes that started and exited between two samples);
//! the per-name breakdown of the others comes from `/proc/<pid>/stat` and misses the last ticks
//! of processes that exit between samples, so it is a lower bound per name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;

/// How busy the machine was while a phase of the benchmark ran.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Contention {
    /// Samples taken.
    pub samples: usize,
    /// Seconds between samples.
    pub interval_s: f64,
    /// Mean share of all CPUs that was busy (not idle, not waiting for I/O), percent.
    pub machine_busy_mean_pct: f64,
    /// Busiest interval, percent of all CPUs.
    pub machine_busy_peak_pct: f64,
    /// CPU seconds the whole machine spent busy over the sampled window.
    pub machine_cpu_s: f64,
    /// CPU seconds of the benchmark's own processes (operator, control plane, bench) in it.
    pub benchmark_cpu_s: f64,
    /// Machine CPU seconds not spent by the benchmark's processes: contention.
    pub other_cpu_s: f64,
    /// Samples in which other processes used more than a quarter of one CPU.
    pub samples_with_others_busy: usize,
    /// The other processes that used the most CPU, by command name (CPU seconds, lower bound).
    pub top_others: Vec<(String, f64)>,
}

impl Contention {
    /// Share of the samples in which other processes were busy, percent.
    pub fn others_busy_pct(&self) -> f64 {
        100.0 * self.samples_with_others_busy as f64 / self.samples.max(1) as f64
    }

    /// `rustc 12.0 s, cargo 1.1 s` (at most `n`), or `-`.
    pub fn top_others_text(&self, n: usize) -> String {
        if self.top_others.is_empty() {
            return "-".into();
        }
        self.top_others
            .iter()
            .take(n)
            .map(|(name, s)| format!("{name} {s:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Machine-wide CPU ticks: (busy, total).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice — already in user/nice]
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Every process's (command name, user + system ticks).
fn process_ticks() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.insert(pid, (name, tick(11) + tick(12)));
    }
    out
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[derive(Default)]
struct State {
    samples: usize,
    busy_fractions: Vec<f64>,
    machine_busy_ticks: u64,
    benchmark_ticks: u64,
    samples_with_others_busy: usize,
    others_by_name: BTreeMap<String, u64>,
}

/// Samples in the background until [`Sampler::finish`].
pub struct Sampler {
    state: Arc<Mutex<State>>,
    handle: JoinHandle<()>,
    interval: Duration,
}

impl Sampler {
    /// Starts sampling every `interval`; `own` lists the benchmark's processes (this process is
    /// always included).
    pub fn start(own: Vec<u32>, interval: Duration) -> Sampler {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let mut own: HashSet<u32> = own.into_iter().collect();
        own.insert(std::process::id());
        let handle = tokio::task::spawn_blocking(move || {
            let hz = clock_ticks_per_second();
            let quarter_cpu = (hz * interval.as_secs_f64() / 4.0) as u64;
            let mut machine = machine_ticks();
            let mut procs = process_ticks();
            loop {
                std::thread::sleep(interval);
                // Stopped: `finish` drops the last reference but one.
                if Arc::strong_count(&shared) == 1 {
                    return;
                }
                let (Some((busy0, total0)), Some((busy1, total1))) = (machine, machine_ticks())
                else {
                    continue;
                };
                let now = process_ticks();
                let busy = busy1.saturating_sub(busy0);
                let total = total1.saturating_sub(total0).max(1);
                let mut benchmark = 0;
                let mut others_named: Vec<(String, u64)> = Vec::new();
                for (pid, (name, ticks)) in &now {
                    // A process new since the last sample: all its ticks are recent enough.
                    let before = procs.get(pid).map_or(0, |(_, t)| *t);
                    let delta = ticks.saturating_sub(before);
                    if delta == 0 {
                        continue;
                    }
                    if own.contains(pid) {
                        benchmark += delta;
                    } else {
                        others_named.push((name.clone(), delta));
                    }
                }
                let others = busy.saturating_sub(benchmark);
                let mut st = shared.lock().unwrap_or_else(PoisonError::into_inner);
                st.samples += 1;
                st.busy_fractions.push(busy as f64 / total as f64);
                st.machine_busy_ticks += busy;
                st.benchmark_ticks += benchmark.min(busy);
                if others > quarter_cpu {
                    st.samples_with_others_busy += 1;
                }
                for (name, delta) in others_named {
                    *st.others_by_name.entry(name).or_default() += delta;
                }
                drop(st);
                machine = Some((busy1, total1));
                procs = now;
            }
        });
        Sampler {
            state,
            handle,
            interval,
        }
    }

    /// Stops sampling and summarises.
    pub async fn finish(self) -> Contention {
        let Sampler {
            state,
            handle,
            interval,
        } = self;
        let summary = {
            let st = state.lock().unwrap_or_else(PoisonError::into_inner);
            summarise(&st, interval, clock_ticks_per_second())
        };
        drop(state);
        // The thread notices within one interval; don't wait for it longer than that.
        let _ = tokio::time::timeout(interval * 2, handle).await;
        summary
    }
}

fn summarise(st: &State, interval: Duration, hz: f64) -> Contention {
    let mean = if st.busy_fractions.is_empty() {
        0.0
    } else {
        st.busy_fractions.iter().sum::<f64>() / st.busy_fractions.len() as f64
    };
    let peak = st.busy_fractions.iter().copied().fold(0.0, f64::max);
    let mut top: Vec<(String, f64)> = st
        .others_by_name
        .iter()
        .map(|(name, ticks)| (name.clone(), *ticks as f64 / hz))
        .filter(|(_, s)| *s >= 0.05)
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(5);
    Contention {
        samples: st.samples,
        interval_s: interval.as_secs_f64(),
        machine_busy_mean_pct: 100.0 * mean,
        machine_busy_peak_pct: 100.0 * peak,
        machine_cpu_s: st.machine_busy_ticks as f64 / hz,
        benchmark_cpu_s: st.benchmark_ticks as f64 / hz,
        other_cpu_s: st.machine_busy_ticks.saturating_sub(st.benchmark_ticks) as f64 / hz,
        samples_with_others_busy: st.samples_with_others_busy,
        top_others: top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_machine_and_this_process() {
        let (busy, total) = machine_ticks().expect("/proc/stat");
        assert!(total >= busy && total > 0);
        let procs = process_ticks();
        let me = procs.get(&std::process::id()).expect("this process");
        assert!(!me.0.is_empty());
    }

    #[test]
    fn summary_separates_the_benchmark_from_others() {
        let st = State {
            samples: 2,
            busy_fractions: vec![0.5, 1.0],
            machine_busy_ticks: 300,
            benchmark_ticks: 100,
            samples_with_others_busy: 1,
            others_by_name: BTreeMap::from([("rustc".into(), 150), ("sh".into(), 1)]),
        };
        let c = summarise(&st, Duration::from_secs(1), 100.0);
        assert_eq!(c.machine_cpu_s, 3.0);
        assert_eq!(c.benchmark_cpu_s, 1.0);
        assert_eq!(c.other_cpu_s, 2.0);
        assert_eq!(c.machine_busy_mean_pct, 75.0);
        assert_eq!(c.machine_busy_peak_pct, 100.0);
        assert_eq!(c.others_busy_pct(), 50.0);
        assert_eq!(c.top_others, vec![("rustc".to_string(), 1.5)]);
        assert_eq!(c.top_others_text(3), "rustc 1.5 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_other_process_is_counted_as_contention() {
        let sampler = Sampler::start(vec![], Duration::from_millis(200));
        // A child that is not "the benchmark" spins for a while.
        let mut spin = std::process::Command::new("yes")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn yes");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = spin.kill();
        let _ = spin.wait();
        let c = sampler.finish().await;
        assert!(c.samples >= 5, "{c:?}");
        assert!(c.other_cpu_s > 0.5, "{c:?}");
        assert!(c.top_others.iter().any(|(n, _)| n == "yes"), "{c:?}");
    }
}
