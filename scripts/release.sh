#!/usr/bin/env bash
# The release of stepwise (`just release VERSION`): the image (scripts/image.sh), the plugin's
# archive for krew, its sha256 and krew's manifest of it, in dist/, checked by krew's own
# validation. Publishing is printed as the commands to run, not run.
#
#   scripts/release.sh VERSION                           # everything, into dist/
#   scripts/release.sh package BINARY VERSION OUTDIR     # the plugin's archive, .sha256, stepwise.yaml
#   scripts/release.sh verify MANIFEST ARCHIVE           # krew's checks of them
#
# VERSION is the workspace's version (Cargo.toml), with or without the leading v: the plugin
# reports it, and krew's manifest has it as vX.Y.Z.
#
# `package` is the one place the archive and the manifest are made: the release packages the
# static build of the plugin, and tests/krew/test.sh the debug build, so the test checks what the
# release makes.
#
# `verify` runs krew's validate-krew-manifest (from krew's Go module, tests/krew/tools.sh): the
# manifest's structure, its platforms, then an install with krew into a KREW_ROOT of its own and
# the license among the installed files. The validator installs with `kubectl krew install
# --manifest`, which would download the manifest's uri; a `kubectl` of its own on its PATH runs
# krew with `--archive` instead, so the archive is what krew checks against the sha256 and
# unpacks. Then krew installs the plugin once more, into a KREW_ROOT kept until the end, and the
# installed `kubectl-stepwise --version` (and `kubectl stepwise --version` when kubectl is on
# PATH) must report the manifest's version.
#
# The manifest's uri is STEPWISE_RELEASE_URL/vX.Y.Z/<archive>. STEPWISE_RELEASE_URL defaults to
# the workspace's repository (Cargo.toml) + /releases/download, a placeholder until the project
# has a public host.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PLUGIN=stepwise
BINARY=kubectl-stepwise
OS=linux
ARCH=amd64

# Scratch space of this run, removed when it ends.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

log() { printf '[release] %s\n' "$*" >&2; }
die() { printf '[release] ERROR: %s\n' "$*" >&2; exit 1; }

# workspace_field NAME: a field of Cargo.toml's [workspace.package].
workspace_field() {
  awk -v key="$1" '
    /^\[/ { in_package = ($0 == "[workspace.package]") }
    in_package && $1 == key { sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit }
  ' "$repo/Cargo.toml"
}

# release_version VERSION: vX.Y.Z, refused unless it is the workspace's version.
release_version() {
  local wanted=${1#v} workspace
  workspace=$(workspace_field version)
  [[ $wanted =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$ ]] || die "version '$1' is not X.Y.Z"
  [ "$wanted" = "$workspace" ] ||
    die "version $wanted is not the workspace's ($workspace, Cargo.toml): the plugin would report $workspace; change Cargo.toml first"
  echo "v$wanted"
}

archive_name() { echo "${BINARY}_$1_${OS}_${ARCH}.tar.gz"; }

# package BINARY VERSION OUTDIR
package() {
  local binary=$1 version out=$3 base url name staging sha epoch
  version=$(release_version "$2")
  [ -x "$binary" ] || die "$binary is not an executable"
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  name=$(archive_name "$version")
  base=${STEPWISE_RELEASE_URL:-$(workspace_field repository)/releases/download}
  url=${base%/}/$version/$name
  staging=$(mktemp -d -p "$scratch")
  install -m 0755 "$binary" "$staging/$BINARY"
  install -m 0644 "$repo/LICENSE" "$staging/LICENSE"
  # The same files give the same archive: no owner, time or order of this machine in it.
  epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -C "$staging" -cf - "$BINARY" LICENSE |
    gzip -n >"$out/$name"
  sha=$(sha256sum "$out/$name" | cut -d' ' -f1)
  echo "$sha  $name" >"$out/$name.sha256"
  cat >"$out/$PLUGIN.yaml" <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: $PLUGIN
spec:
  version: $version
  homepage: $(workspace_field repository)
  shortDescription: Drive stepwise progressive-delivery Rollouts
  description: |
    kubectl stepwise shows the Rollouts of stepwise, a progressive-delivery
    controller (canary, blue-green), as trees of revisions, ReplicaSets, pods
    and analyses, lists their history, and drives them: promote, abort, retry,
    pause, resume, restart, undo, set image; status for CI. It also checks
    Rollout manifests offline (lint), converts Argo Rollouts manifests
    (convert) and checks router plugins (plugin check).
  platforms:
  - selector:
      matchLabels:
        os: $OS
        arch: $ARCH
    uri: $url
    sha256: $sha
    bin: $BINARY
    files:
    - from: $BINARY
      to: .
    - from: LICENSE
      to: .
YAML
  log "packaged $binary as $out/$name (sha256 $sha) and $out/$PLUGIN.yaml (uri $url)"
}

# manifest_version MANIFEST: spec.version, as package writes it.
manifest_version() {
  sed -n 's/^  version: \(v[^ ]*\)$/\1/p' "$1"
}

# verify MANIFEST ARCHIVE
verify() {
  local manifest archive tools work reported expected
  manifest=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
  archive=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
  [ -f "$manifest" ] || die "no manifest $1"
  [ -f "$archive" ] || die "no archive $2"
  tools=$("$repo/tests/krew/tools.sh")
  work=$(mktemp -d -p "$scratch")
  mkdir "$work/kubectl"
  # The validator runs `kubectl krew install --manifest FILE -v=4` with only KREW_ROOT, KREW_OS,
  # KREW_ARCH and PATH: this kubectl runs krew on the archive instead of the manifest's uri.
  {
    echo '#!/bin/sh'
    echo '[ "$1" = krew ] || { echo "this kubectl only runs krew" >&2; exit 1; }'
    echo 'shift'
    printf 'exec %q "$@" --archive=%q\n' "$tools/krew" "$archive"
  } >"$work/kubectl/kubectl"
  chmod +x "$work/kubectl/kubectl"
  log "krew's validate-krew-manifest -manifest $manifest (installing from $archive)"
  PATH=$work/kubectl:$PATH "$tools/validate-krew-manifest" -manifest "$manifest" >&2 ||
    die "krew's validation refused $manifest"
  log "krew install --manifest=$manifest --archive=$archive into a KREW_ROOT of its own"
  KREW_ROOT=$work/krew KREW_OS=$OS KREW_ARCH=$ARCH KREW_NO_UPGRADE_CHECK=1 \
    "$tools/krew" install --manifest="$manifest" --archive="$archive" >&2 ||
    die "krew install refused $manifest"
  expected="kubectl stepwise $(manifest_version "$manifest" | sed 's/^v//')"
  reported=$("$work/krew/bin/$BINARY" --version)
  echo "$work/krew/bin/$BINARY --version: $reported"
  [ "$reported" = "$expected" ] || die "the installed plugin reports '$reported', the manifest says '$expected'"
  if command -v kubectl >/dev/null; then
    reported=$(PATH=$work/krew/bin:$PATH kubectl stepwise --version)
    echo "kubectl stepwise --version: $reported"
    [ "$reported" = "$expected" ] || die "kubectl stepwise --version reports '$reported', the manifest says '$expected'"
  else
    echo "kubectl stepwise --version: not run (no kubectl on PATH)"
  fi
  log "krew validated and installed $manifest"
}

# release VERSION: the image and the plugin from the same static build, into dist/.
release() {
  local version image dist=$repo/dist static name
  version=$(release_version "$1")
  if [ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]; then
    log "WARNING: the work tree has changes: the image's revision label says -dirty"
  fi
  log "the image and the static binaries (scripts/image.sh)"
  image=$("$repo/scripts/image.sh")
  static=$repo/target/image/x86_64-unknown-linux-musl/release/$BINARY
  rm -rf "$dist"
  package "$static" "$version" "$dist"
  name=$(archive_name "$version")
  verify "$dist/$PLUGIN.yaml" "$dist/$name"
  cat <<TEXT

Release $version is in dist/:
$(cd "$dist" && ls -l | tail -n +2)
and the image $image.

To publish it (not done by this script):
  1. Push the image to the registry the chart pulls from:
       scripts/containers.sh buildah push $image docker://<registry>/stepwise-controller:${version#v}
  2. Upload dist/$name and dist/$name.sha256 so that they are served at
       $(sed -n 's/^    uri: //p' "$dist/$PLUGIN.yaml")
     (STEPWISE_RELEASE_URL=<base> scripts/release.sh $version writes another base into the manifest).
  3. Users can then install the plugin with krew from the manifest:
       kubectl krew install --manifest=stepwise.yaml
     For \`kubectl krew install stepwise\`, open a pull request that adds dist/$PLUGIN.yaml as
     plugins/$PLUGIN.yaml to the kubernetes-sigs/krew-index repository.
TEXT
}

case ${1:-} in
  package) [ "$#" = 4 ] || die "usage: $0 package BINARY VERSION OUTDIR"; package "$2" "$3" "$4" ;;
  verify) [ "$#" = 3 ] || die "usage: $0 verify MANIFEST ARCHIVE"; verify "$2" "$3" ;;
  -h | --help | '') sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; [ -n "${1:-}" ] ;;
  *) [ "$#" = 1 ] || die "usage: $0 VERSION"; release "$1" ;;
esac
