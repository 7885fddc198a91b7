#!/usr/bin/env python3
"""Groups a heaptrack peak-memory flame-graph file by what holds the memory.

    heaptrack_print -f FILE.zst -p 0 -a 0 -T 0 --flamegraph-cost-type peak -F stacks.txt
    python3 tests/testkit/scripts/heap-categories.py stacks.txt [more.txt ...]

Each line of the input is `root;...;leaf BYTES` (bytes live at the moment of peak heap). A stack
goes to the first category, walking from the leaf towards the root, whose pattern matches a frame.
Prints one Markdown table: category, bytes at peak (KiB) per input file.
"""
import collections
import re
import sys

# (category, regex on a demangled frame). Order matters only within one frame; the walk goes
# leaf -> root, so the most specific (closest to the allocation) wins.
RULES = [
    ("reflector store: CR object copies (OrgMetadata/UserMetadata clone)", r"crd::(org::OrgMetadata|user::UserMetadata) as core::clone::Clone"),
    ("reflector store: hash tables (ObjectRef -> Arc<K>)", r"reflector::store::Writer.*apply_watcher_event"),
    ("target index (controller::index)", r"controller::index"),
    ("per-object backoff / failures map", r"next_backoff|error_policy"),
    ("controller scheduler (requeue timers, DelayQueue)", r"kube_runtime::scheduler|tokio_util::time::delay_queue"),
    ("controller runner (pending reconciles)", r"kube_runtime::controller::runner|kube_runtime::controller::Runner"),
    ("predicate_filter cache (hash per object)", r"predicate::PredicateFilter|predicates?::"),
    ("metadata-only watches (Secret/ConfigMap PartialObjectMeta)", r"PartialObjectMeta"),
    ("watch event decode (serde, transient)", r"serde_json::de|serde::de|EventDecode|kube_client::client::Client::request_events"),
    ("reconcile in flight (plan, ZITADEL answers, status)", r"zitadel_metadata_operator::(controller::reconcile|zitadel|plan|status)"),
    ("TLS (rustls buffers)", r"rustls::"),
    ("HTTP client (hyper/h2 buffers, dispatch channels)", r"hyper::|hyper_util::|h2::|reqwest::"),
    ("bytes buffers (other)", r"bytes::"),
    ("tokio (tasks, channels, timers)", r"tokio::"),
    ("metrics (prometheus-client)", r"prometheus|metrics::"),
    ("tracing / logging", r"tracing"),
]


def demangle(f):
    f = re.sub(r"::h[0-9a-f]{16}$", "", f)
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("$RF$", "&"),
                 ("$u7b$", "{"), ("$u7d$", "}"), ("$BP$", "*"), ("..", "::")):
        f = f.replace(a, b)
    return f


def categorise(path):
    out = collections.Counter()
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not n.isdigit():
            continue
        frames = [demangle(f) for f in stack.split(";")]
        cat = "other"
        for f in reversed(frames):
            hit = next((c for c, rx in RULES if re.search(rx, f)), None)
            if hit:
                cat = hit
                break
        out[cat] += int(n)
    return out


def main():
    files = sys.argv[1:]
    results = [categorise(f) for f in files]
    cats = sorted({c for r in results for c in r}, key=lambda c: -max(r[c] for r in results))
    print("| category | " + " | ".join(f"{f} KiB" for f in files) + " |")
    print("|---|" + "---:|" * len(files))
    for c in cats:
        print(f"| {c} | " + " | ".join(f"{r[c] / 1024:,.0f}" for r in results) + " |")
    print("| **total at peak** | " + " | ".join(f"**{sum(r.values()) / 1024:,.0f}**" for r in results) + " |")


if __name__ == "__main__":
    main()
