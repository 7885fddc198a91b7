# syntax=docker/dockerfile:1
# Container image of zitadel-metadata-operator: a static (musl) binary on distroless/static,
# running as the unprivileged user 65532 and needing no writable file system (the Helm chart sets
# readOnlyRootFilesystem: true). Build:   docker build -t zitadel-metadata-operator:0.1.0 .
# The builder stage runs `make release-static`'s command; the final stage is just a copy.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
# musl-gcc compiles the C/assembly parts of ring for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin zitadel-metadata-operator \
 && cp target/x86_64-unknown-linux-musl/release/zitadel-metadata-operator /zitadel-metadata-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /zitadel-metadata-operator /zitadel-metadata-operator
USER 65532:65532
# 8080: /healthz and /readyz; 9090: /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/zitadel-metadata-operator"]
