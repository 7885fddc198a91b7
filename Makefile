# The two commands of the README: `make demo` (the operator's main job, on a local embedded
# control plane + ZITADEL emulator) and `make test` (everything CI runs).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo demo-once test lint unit envtest crds release-static bench conformance-tools

## Build what is missing, start kube-apiserver + etcd + the ZITADEL emulator, run the operator,
## apply examples/, print the result, keep running until Ctrl-C.
demo:
	$(CARGO) build --workspace --bins
	./target/debug/demo

## Same, but exit after printing.
demo-once:
	$(CARGO) build --workspace --bins
	./target/debug/demo --once

## The performance benchmark (README "Performance"): release builds; 100, 1,000 and 10,000
## objects with 10 keys, 20 ms per ZITADEL call, the operator vs a per-key baseline. Prints the
## tables and writes target/bench/bench.{json,csv,md}. More flags: make bench BENCH_ARGS="--help".
bench:
	$(CARGO) build --release --workspace --bins
	./target/release/bench $(BENCH_ARGS)

## Build (or reuse) the test control plane; prints its folder.
envtest:
	bash tests/envtest/build.sh

## Regenerate crds/ from the Rust types, and copy them into the Helm chart (a test checks both).
crds:
	$(CARGO) run --quiet --bin crdgen -- --out crds/
	rm -f charts/zitadel-metadata-operator/crds/*.yaml
	cp crds/*.yaml charts/zitadel-metadata-operator/crds/

## Static release binary (what the Dockerfile builds): needs `rustup target add
## x86_64-unknown-linux-musl` and a musl C compiler (Debian: musl-tools). Not part of `make test`.
release-static:
	$(CARGO) build --release --locked --target x86_64-unknown-linux-musl --bin zitadel-metadata-operator

## Tools of the wire-format conformance test (tests/conformance, test emulator_conformance):
## ZITADEL's protobuf definitions from npm and the official Python SDK models from PyPI.
conformance-tools:
	cd tests/conformance && npm ci --no-audit --no-fund
	python3 -m pip install --user -r tests/conformance/requirements.txt

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Everything: formatting, lints, unit tests, emulator and client tests, and the end-to-end
## suites against a real kube-apiserver + etcd (built from source on first use).
## Dependency policy (deny.toml: licenses, banned crates, sources; .ci/run installs cargo-deny,
## elsewhere it is skipped when missing: `cargo install --locked cargo-deny --version 0.20.2`).
test: lint
	@if $(CARGO) deny --version >/dev/null 2>&1; then \
		$(CARGO) deny check licenses bans sources; \
	else echo "cargo-deny not installed: skipping cargo deny check" >&2; fi
	export KUBEBUILDER_ASSETS="$$(bash tests/envtest/build.sh | tail -n 1)" && \
	$(CARGO) test --workspace --no-fail-fast
