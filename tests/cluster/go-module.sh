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
