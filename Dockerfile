# syntax=docker/dockerfile:1
# The stepwise controller image: a static (musl) release build on a scratch image that holds only
# the binary and the CA bundle, run as an unprivileged user (65532, no shell, no package manager).
#
#   docker build -t registry.example/stepwise-controller:0.1.0 .        # the controller image
#   docker build --target plugin --output type=local,dest=dist .        # dist/kubectl-stepwise
#
# buildah reads this file too (`buildah build`). docs/install.md tells why CI does not build it.

ARG RUST_VERSION=1.95

# ---- build: both binaries, static, in release mode -------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac >/rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
# Every workspace member's manifest must be there for cargo to load the workspace.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates crates
COPY tests/e2e tests/e2e
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && cargo build --release --locked --target "$target" \
      -p stepwise-controller -p kubectl-stepwise \
 && mkdir -p /out \
 && cp "target/$target/release/stepwise-controller" "target/$target/release/kubectl-stepwise" /out/ \
 && if ldd /out/stepwise-controller >/dev/null 2>&1; then echo "stepwise-controller is not static" >&2; exit 1; fi

# ---- plugin: the kubectl plugin alone, for `--target plugin --output …` ------------------------
FROM scratch AS plugin
COPY --from=build /out/kubectl-stepwise /kubectl-stepwise

# ---- the controller image (the default target) --------------------------------------------------
FROM scratch AS controller
# For HTTPS to Prometheus servers and web metrics; the API server's CA comes with the service
# account token.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/stepwise-controller /stepwise-controller
USER 65532:65532
EXPOSE 8090
ENTRYPOINT ["/stepwise-controller"]
