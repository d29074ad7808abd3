#!/usr/bin/env bash
# The plugin as krew installs it (`just krew-test`): the release's packaging (scripts/release.sh
# package) of the debug build of kubectl-stepwise, then krew's own checks of it (scripts/release.sh
# verify: validate-krew-manifest, an install from the archive, the installed plugin's version),
# then the same checks of broken manifests and archives, each of which must be refused for its
# reason. Needs target/debug/kubectl-stepwise (`just build`), Go for krew (tests/krew/tools.sh)
# and no cluster.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
release=$repo/scripts/release.sh
binary=$repo/target/debug/kubectl-stepwise
[ -x "$binary" ] || { echo "[krew-test] $binary not built: run 'scripts/just build' first" >&2; exit 1; }
version=v$("$binary" --version | awk '{print $3}')
archive=kubectl-stepwise_${version}_linux_amd64.tar.gz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

pass() { printf '[krew-test] ok: %s\n' "$*"; }
fail() { printf '[krew-test] FAIL: %s\n' "$*"; failures=$((failures + 1)); }

# refused WHAT REASON MANIFEST ARCHIVE: verify must fail, saying REASON.
refused() {
  local what=$1 reason=$2 out
  if out=$("$release" verify "$3" "$4" 2>&1); then
    fail "$what: accepted"$'\n'"$out"
  elif grep -qF -- "$reason" <<<"$out"; then
    pass "$what: refused ($reason)"
  else
    fail "$what: refused, but not for '$reason':"$'\n'"$out"
  fi
}

# broken NAME: a copy of the release's manifest and archive in a directory of its own (krew takes
# the plugin's name from the manifest's file name).
broken() {
  mkdir -p "$work/$1"
  cp "$work/dist/stepwise.yaml" "$work/dist/$archive" "$work/$1/"
  echo "$work/$1"
}

STEPWISE_RELEASE_URL=https://example.invalid/stepwise/releases/download "$release" package "$binary" "$version" "$work/dist"
sha=$(sha256sum "$work/dist/$archive" | cut -d' ' -f1)

# What the release writes: the archive's sha256 in the manifest and in the .sha256 file, the uri
# of the archive under the release's URL, the plugin's name and version.
uri=https://example.invalid/stepwise/releases/download/$version/$archive
for expected in "name: stepwise" "version: $version" "uri: $uri" "sha256: $sha" "bin: kubectl-stepwise"; do
  if grep -qxF -- "$expected" <(sed 's/^ *//' "$work/dist/stepwise.yaml"); then pass "the manifest has $expected"; else fail "the manifest lacks '$expected'"; fi
done
if [ "$(cat "$work/dist/$archive.sha256")" = "$sha  $archive" ]; then pass "$archive.sha256 is sha256sum's line"; else fail "$archive.sha256: $(cat "$work/dist/$archive.sha256")"; fi
listing=$(tar -tzf "$work/dist/$archive" | sort | tr '\n' ' ')
if [ "$listing" = "LICENSE kubectl-stepwise " ]; then pass "the archive holds kubectl-stepwise and LICENSE"; else fail "the archive holds: $listing"; fi

# krew's checks of the release's manifest and archive.
if out=$("$release" verify "$work/dist/stepwise.yaml" "$work/dist/$archive" 2>&1); then
  pass "krew validated and installed the manifest"
  grep -E "all 1 spec.platforms installed fine|--version: " <<<"$out" | sed 's/^/    /'
  if grep -qE "/krew/bin/kubectl-stepwise --version: kubectl stepwise ${version#v}$" <<<"$out"; then
    pass "the installed plugin reports ${version#v}"
  else
    fail "the installed plugin's version is not reported:"$'\n'"$out"
  fi
else
  fail "krew refused the release's manifest:"$'\n'"$out"
fi

# Broken ones: each must be refused, for its reason.
dir=$(broken wrong-sha256)
sed -i "s/sha256: $sha/sha256: $(sha256sum </dev/null | cut -d' ' -f1)/" "$dir/stepwise.yaml"
refused "a sha256 of other bytes" "checksum does not match" "$dir/stepwise.yaml" "$dir/$archive"

dir=$(broken no-platform)
sed -i '/^  platforms:$/,$d' "$dir/stepwise.yaml"
refused "a manifest without a platform" "should have a platform specified" "$dir/stepwise.yaml" "$dir/$archive"

dir=$(broken other-os)
sed -i 's/^        os: linux$/        os: plan9/' "$dir/stepwise.yaml"
refused "a platform krew does not know" "doesn't match any supported platforms" "$dir/stepwise.yaml" "$dir/$archive"

dir=$(broken no-license)
tar -xzf "$dir/$archive" -C "$dir" kubectl-stepwise
tar -C "$dir" -czf "$dir/$archive" kubectl-stepwise
sed -i -e "s/sha256: $sha/sha256: $(sha256sum "$dir/$archive" | cut -d' ' -f1)/" -e '/- from: LICENSE/,/to: \./d' "$dir/stepwise.yaml"
refused "an archive without a license" "could not find license file" "$dir/stepwise.yaml" "$dir/$archive"

dir=$(broken other-version)
sed -i "s/^  version: $version$/  version: v9.9.9/" "$dir/stepwise.yaml"
refused "a manifest whose version is not the plugin's" "the installed plugin reports 'kubectl stepwise ${version#v}', the manifest says 'kubectl stepwise 9.9.9'" "$dir/stepwise.yaml" "$dir/$archive"

if [ "$failures" -gt 0 ]; then
  echo "[krew-test] $failures check(s) failed"
  exit 1
fi
echo "[krew-test] all checks passed"
