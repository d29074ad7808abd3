# Sourced by the scripts that take files from a Go module (CRDs, kwok's stages, Helm's sources).
# go_module_dir MODULE@VERSION prints the module's directory in the Go module cache, downloading it
# first if needed and telling the elapsed time and the bytes downloaded so far every 5 s on
# stderr (a cold download of a large module takes a while on a slow link). The caller defines
# `log`.
go_module_dir() {
  local mod=$1 json pid started partial
  json=$(mktemp)
  started=$SECONDS
  log "downloading $mod from its Go module (if not cached)"
  GOFLAGS= go mod download -json "$mod" >"$json" &
  pid=$!
  partial="$(go env GOMODCACHE)/cache/download/${mod%@*}/@v"
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if kill -0 "$pid" 2>/dev/null; then
      log "  $mod: $((SECONDS - started)) s, $(du -sh "$partial" 2>/dev/null | cut -f1 || echo 0) so far"
    fi
  done
  if ! wait "$pid"; then
    log "go mod download $mod failed:"; cat "$json" >&2; rm -f "$json"; exit 1
  fi
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["Dir"]) if "Dir" in d else sys.exit(d.get("Error","no Dir"))' "$json"
  rm -f "$json"
  log "  $mod: done in $((SECONDS - started)) s"
}

# go_build_progress WHAT DIR GO-BUILD-ARGS...: runs `go build -v GO-BUILD-ARGS...` in DIR and tells,
# every 15 s on stderr, how many of the build's packages are compiled so far and the elapsed time
# (a cold build of a large Go program takes minutes on 2 cores). `go build -v` names each package
# as it compiles it; the total is `go list -deps` of the same targets. The caller defines `log`.
go_build_progress() {
  local what=$1 dir=$2 total out started=$SECONDS targets=()
  shift 2
  local a skip=0 tags=()
  for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case $a in
      -o) skip=1 ;;
      -tags=*) tags=("$a") ;;
      -*) ;;
      *) targets+=("$a") ;;
    esac
  done
  total=$(cd "$dir" && go list ${tags[@]+"${tags[@]}"} -deps "${targets[@]}" 2>/dev/null | wc -l) || total='?'
  out=$(mktemp)
  log "building $what ($total packages in its build graph; cached ones are not compiled again)"
  (cd "$dir" && go build -v "$@") >"$out" 2>&1 &
  go_progress_wait "$what" "$total" "$out" $! "$started"
}

# go_progress_wait WHAT TOTAL OUT PID STARTED: every 15 s while PID runs, the packages named in OUT
# (the output of a `go build -v` or `go install -v`) of TOTAL and the time since STARTED; then its
# outcome. Removes OUT.
go_progress_wait() {
  local what=$1 total=$2 out=$3 pid=$4 started=$5
  while kill -0 "$pid" 2>/dev/null; do
    sleep 15
    if kill -0 "$pid" 2>/dev/null; then
      log "  $what: $(grep -cv '^\(#\|go: \)' "$out") of $total packages compiled, $((SECONDS - started)) s"
    fi
  done
  if ! wait "$pid"; then
    log "building $what failed:"
    grep -v '^go: downloading' "$out" | tail -n 40 >&2
    rm -f "$out"
    return 1
  fi
  rm -f "$out"
  log "  $what: built in $((SECONDS - started)) s"
}

# go_install_progress WHAT MODULE@VERSION PACKAGE GO-INSTALL-ARGS...: `go install -v GO-INSTALL-ARGS...
# MODULE/PACKAGE@VERSION` (GOBIN as the caller sets it), telling every 15 s how many packages are
# compiled of the build graph's total, and the elapsed time. PACKAGE is relative to the module
# (./cmd/kwok). The caller defines `log`.
go_install_progress() {
  local what=$1 modver=$2 pkg=$3 dir total out started=$SECONDS
  shift 3
  dir=$(go_module_dir "$modver")
  total=$(cd "$dir" && GOFLAGS= go list -deps "$pkg" 2>/dev/null | wc -l) || total='?'
  out=$(mktemp)
  log "building $what ($total packages in its build graph; cached ones are not compiled again)"
  GOFLAGS= go install -v "$@" "${modver%@*}/${pkg#./}@${modver#*@}" >"$out" 2>&1 &
  go_progress_wait "$what" "$total" "$out" $! "$started"
}
