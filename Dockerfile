# syntax=docker/dockerfile:1
# The stepwise controller image: static (musl) release builds on a scratch image that holds only
# the controller, the kubectl-stepwise plugin and the CA bundle, run as an unprivileged user
# (65532, no shell, no package manager).
#
#   docker build -t REGISTRY/stepwise-controller:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%FT%TZ)" .
#   docker build --target plugin --output type=local,dest=dist .        # dist/kubectl-stepwise
#
# This file is for machines with a Docker engine (buildah reads it too) and pulls the Rust image.
# scripts/image.sh (`just image`, which CI tests) builds the same image without pulling anything:
# the same cargo build on the host, then buildah from scratch. Keep the two in step: the files,
# USER, EXPOSE, ENTRYPOINT and the labels. docs/install.md, "The image".

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
 && for b in /out/*; do \
      if readelf -l "$b" | grep -q INTERP; then echo "$b is not static" >&2; exit 1; fi; \
    done

# ---- plugin: the kubectl plugin alone, for `--target plugin --output …` ------------------------
FROM scratch AS plugin
COPY --from=build /out/kubectl-stepwise /kubectl-stepwise

# ---- the controller image (the default target) --------------------------------------------------
FROM scratch AS controller
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
# For HTTPS to Prometheus servers and web metrics; the API server's CA comes with the service
# account token.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/stepwise-controller /stepwise-controller
# The plugin too, for `kubectl stepwise` without installing it: --entrypoint /kubectl-stepwise.
COPY --from=build /out/kubectl-stepwise /kubectl-stepwise
LABEL org.opencontainers.image.title=stepwise-controller \
      org.opencontainers.image.description="The stepwise progressive-delivery controller, and the kubectl-stepwise plugin" \
      org.opencontainers.image.licenses=Apache-2.0 \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${REVISION} \
      org.opencontainers.image.created=${CREATED}
USER 65532:65532
EXPOSE 8090
ENTRYPOINT ["/stepwise-controller"]
