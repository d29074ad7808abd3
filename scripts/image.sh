#!/usr/bin/env bash
# Builds the stepwise image (`just image`) on this machine without pulling anything: static (musl)
# builds of stepwise-controller and kubectl-stepwise, then, with buildah, an image from scratch
# that holds only them and the CA bundle. It is the image the repository's Dockerfile describes
# (for machines with a Docker engine); the two build the same thing, keep them in step:
#   /stepwise-controller, /kubectl-stepwise, /etc/ssl/certs/ca-certificates.crt (the host's
#   Debian ca-certificates), USER 65532:65532, EXPOSE 8090, ENTRYPOINT ["/stepwise-controller"],
#   the OCI labels version, revision, created, title, description, licenses.
#
#   scripts/image.sh [--profile PROFILE] [--image REFERENCE] [--push DESTINATION]
#
#   --profile   cargo profile of the binaries (STEPWISE_IMAGE_PROFILE; default release). The image
#               test builds `dev`, which compiles much faster (docs/install.md, "The image").
#   --image     the image reference (STEPWISE_IMAGE; default
#               localhost/stepwise-controller:<the controller's version>, which is the chart's
#               appVersion).
#   --push      then push it with `buildah push` to DESTINATION, any transport buildah knows
#               (docker://<registry>/stepwise-controller:0.1.0, oci-archive:<file>, ...); the
#               release recipe does this (docs/install.md, "Release").
#
# Prints the image reference on stdout, and nothing else; progress and the image's size go to
# stderr. The static binaries stay in target/image/x86_64-unknown-linux-musl/<release|debug>/ (a
# target directory of its own: this build never waits for cargo's lock on target/). The image is
# stored in the project's own image store (scripts/containers.sh): run it with
# `scripts/containers.sh podman run --rm <reference> --version`. A run whose binaries, CA bundle,
# version and revision are those of the image the reference names keeps that image.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=containers.sh
. "$repo/scripts/containers.sh"

TARGET=x86_64-unknown-linux-musl
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
profile=${STEPWISE_IMAGE_PROFILE:-release}
image=${STEPWISE_IMAGE:-}
push=
export CARGO_TARGET_DIR=$repo/target/image

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

parse_args() {
  while [ "$#" -gt 0 ]; do
    case $1 in
      --profile) profile=${2:?--profile needs a value}; shift 2 ;;
      --profile=*) profile=${1#*=}; shift ;;
      --image) image=${2:?--image needs a value}; shift 2 ;;
      --image=*) image=${1#*=}; shift ;;
      --push) push=${2:?--push needs a value}; shift 2 ;;
      --push=*) push=${1#*=}; shift ;;
      -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
      *) die "unknown argument '$1' (--help)" ;;
    esac
  done
}

# prerequisites: the musl target's standard library, musl-gcc (ring compiles C and assembly for
# the target), the CA bundle, and podman/buildah/runc (scripts/containers.sh).
prerequisites() {
  command -v rustup >/dev/null || die "rustup not found: the musl target's standard library comes from rustup"
  if ! rustup target list --installed | grep -qx "$TARGET"; then
    log "rustup target add $TARGET"
    rustup target add "$TARGET" >&2
  fi
  command -v musl-gcc >/dev/null || containers_apt musl-tools || exit 1
  [ -s "$CA_BUNDLE" ] || containers_apt ca-certificates || exit 1
  containers_env || exit 1
}

# profile_dir: where cargo puts the profile's binaries (dev builds go to debug/).
profile_dir() {
  case $profile in
    dev) echo debug ;;
    *) echo "$profile" ;;
  esac
}

# static_elf FILE: the file is an ELF executable without a program interpreter (no dynamic loader).
static_elf() {
  python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:4] == b"\x7fELF" and data[4] == 2, "not a 64-bit ELF file"
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
PT_INTERP = 3
sys.exit(1 if any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == PT_INTERP for i in range(phnum)) else 0)
PY
}

build_binaries() {
  local started=$SECONDS
  log "cargo build --profile $profile --target $TARGET (stepwise-controller, kubectl-stepwise) into $CARGO_TARGET_DIR; a cold build takes minutes"
  (cd "$repo" && cargo build --locked --profile "$profile" --target "$TARGET" -p stepwise-controller -p kubectl-stepwise) >&2 ||
    die "cargo build failed"
  bin=$CARGO_TARGET_DIR/$TARGET/$(profile_dir)
  local b
  for b in stepwise-controller kubectl-stepwise; do
    static_elf "$bin/$b" || die "$bin/$b is not a static executable"
  done
  log "built in $((SECONDS - started)) s: $bin/stepwise-controller, $bin/kubectl-stepwise (static)"
}

# revision: the commit, with "-dirty" when the work tree has changes.
revision() {
  local rev
  rev=$(git -C "$repo" rev-parse HEAD 2>/dev/null) || { echo unknown; return; }
  if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then rev=$rev-dirty; fi
  echo "$rev"
}

# inputs: what the image is made of (the files, the version and the revision), as one hash.
inputs() {
  { sha256sum "$bin/stepwise-controller" "$bin/kubectl-stepwise" "$CA_BUNDLE"; echo "$version $(revision)"; } | sha256sum | cut -d' ' -f1
}

# up_to_date STAMP: the image the reference names was made of these inputs (its ID and their hash
# are in STAMP): a second run, e.g. the test after its build, does not commit the same image again.
up_to_date() {
  local id
  id=$(buildah images --noheading --no-trunc --format '{{.ID}}' "$image" 2>/dev/null | head -n1) || return 1
  [ -n "$id" ] && [ "$(cat "$1" 2>/dev/null)" = "$id $(inputs)" ]
}

# build_image: from scratch, the files and the configuration the Dockerfile's controller stage has.
build_image() {
  local version ctr old stamp
  version=$("$bin/stepwise-controller" --version | awk '{print $2}')
  [ -n "$version" ] || die "$bin/stepwise-controller --version printed no version"
  image=${image:-localhost/stepwise-controller:$version}
  stamp=$bin/.image-$(printf '%s' "$image" | tr -c 'A-Za-z0-9._-' '_')
  if up_to_date "$stamp"; then
    log "$image is up to date (the same binaries, CA bundle, version and revision)"
    return
  fi
  old=$(buildah images --noheading --format '{{.ID}}' "$image" 2>/dev/null || true)
  ctr=$(buildah from scratch)
  trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
  buildah copy --quiet --chown 0:0 "$ctr" "$CA_BUNDLE" /etc/ssl/certs/ca-certificates.crt >/dev/null
  buildah copy --quiet --chown 0:0 --chmod 0755 "$ctr" "$bin/stepwise-controller" "$bin/kubectl-stepwise" / >/dev/null
  buildah config \
    --user 65532:65532 --port 8090/tcp --workingdir / \
    --entrypoint '["/stepwise-controller"]' --cmd '' \
    --label org.opencontainers.image.title=stepwise-controller \
    --label "org.opencontainers.image.description=The stepwise progressive-delivery controller, and the kubectl-stepwise plugin" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$(revision)" \
    --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$ctr"
  buildah commit --quiet --rm "$ctr" "$image" >/dev/null
  trap - EXIT
  # The image this reference named before is of no use any more: its layers would pile up.
  if [ -n "$old" ] && [ "$old" != "$(buildah images --noheading --format '{{.ID}}' "$image")" ]; then
    buildah rmi "$old" >/dev/null 2>&1 || true
  fi
  echo "$(buildah images --noheading --no-trunc --format '{{.ID}}' "$image" | head -n1) $(inputs)" >"$stamp"
}

report_size() {
  local bytes
  bytes=$(podman image inspect --format '{{.Size}}' "$image")
  log "image $image: $(awk -v b="$bytes" 'BEGIN {printf "%.1f MB", b / 1e6}') ($bytes bytes; $profile build)"
}

parse_args "$@"
prerequisites
build_binaries
build_image
report_size
if [ -n "$push" ]; then
  log "buildah push $image $push"
  buildah push --quiet "$image" "$push" >&2 || die "buildah push to $push failed"
fi
echo "$image"
