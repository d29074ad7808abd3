#!/usr/bin/env bash
# What this machine has for building stepwise, running the local control plane and the lab: one
# line each, "ok" with what was found, or what is missing and how to get it. Exits 1 when something
# the test command needs is missing.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
missing=0
ok() { printf '  ok       %-22s %s\n' "$1" "$2"; }
bad() { printf '  MISSING  %-22s %s\n' "$1" "$2"; missing=1; }
warn() { printf '  note     %-22s %s\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }
# version_at_least HAVE WANT: dotted versions compared numerically.
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

echo "stepwise doctor: $(uname -sm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) memory"

want_rust=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$root/Cargo.toml")
if have cargo && have rustc; then
  v=$(rustc --version | awk '{print $2}')
  if version_at_least "$v" "$want_rust"; then ok rust "rustc $v (needs $want_rust or newer)"; else bad rust "rustc $v is older than $want_rust: rustup update stable"; fi
else
  bad rust "no cargo/rustc: install rustup (https://rustup.rs), then rustup default stable"
fi

want_go=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$root/tests/cluster/k8s/go.mod")
if have go; then
  v=$(go env GOVERSION | sed 's/^go//')
  if version_at_least "$v" "$want_go"; then ok go "go $v (the control plane's go.mod asks $want_go)"; else bad go "go $v is older than $want_go, which building Kubernetes needs: install Go $want_go or newer"; fi
else
  bad go "no go: the control plane, kube-proxy, Traefik and Helm are built from Go modules; install Go $want_go or newer"
fi

if have python3; then ok python3 "$(python3 --version 2>&1)"; else bad python3 "no python3: the cluster scripts use it (apt-get install python3)"; fi
if python3 -m pip --version >/dev/null 2>&1; then ok pip "just comes from a Python wheel"; else bad pip "no pip: apt-get install python3-pip"; fi
for tool in openssl flock setsid curl; do
  if have "$tool"; then ok "$tool" "$(command -v "$tool")"; else bad "$tool" "not found: apt-get install ${tool/flock/util-linux}"; fi
done
if have apt-get && have dpkg-deb; then ok apt-get "Prometheus is unpacked from Debian's package"; else bad apt-get "no apt-get/dpkg-deb: the Prometheus tests unpack Debian's prometheus package"; fi

# The lab: a network namespace with only lo.
if [ "$(id -u)" = 0 ]; then
  if unshare --net true 2>/dev/null; then ok namespaces "root: the lab runs in its own network namespace"; else bad namespaces "root, but unshare --net is refused (a container without CAP_SYS_ADMIN?): the lab cannot run; just demo uses the plain cluster"; fi
elif unshare --user --map-root-user --net true 2>/dev/null; then
  ok namespaces "not root; unprivileged user namespaces work: the lab runs in one"
else
  bad namespaces "not root and unprivileged user namespaces are off: run as root or sysctl kernel.unprivileged_userns_clone=1; just demo uses the plain cluster"
fi
for tool in unshare nsenter ip; do
  if have "$tool"; then ok "$tool" "$(command -v "$tool")"; else bad "$tool" "not found: apt-get install ${tool/ip/iproute2}"; fi
done
if have iptables; then
  ok iptables "$(iptables --version 2>&1)"
elif [ "$(id -u)" = 0 ] && have apt-get; then
  warn iptables "not installed: the first just lab installs Debian's package (kube-proxy needs it)"
else
  bad iptables "not found: kube-proxy in the lab needs it (sudo apt-get install iptables)"
fi

# The image (scripts/image.sh, tests/image): the musl target, musl-gcc (ring's C code), buildah to
# build it and podman with runc to run it; the first just image or image-test installs what is
# missing, as root.
if have rustup && rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  ok musl-target "x86_64-unknown-linux-musl (the image's static build)"
elif have rustup; then
  warn musl-target "not installed: the first just image runs rustup target add x86_64-unknown-linux-musl"
else
  bad musl-target "no rustup: the image's static build needs the x86_64-unknown-linux-musl target"
fi
for tool in musl-gcc buildah podman runc; do
  pkg=${tool/musl-gcc/musl-tools}
  if have "$tool"; then
    ok "$tool" "$(command -v "$tool")"
  elif [ "$(id -u)" = 0 ] && have apt-get; then
    warn "$tool" "not installed: the first just image or image-test installs Debian's $pkg"
  else
    bad "$tool" "not found: the image's build and test need it (sudo apt-get install $pkg)"
  fi
done

free_gib=$(df -Pk "$root" | awk 'NR==2 {printf "%d", $4/1048576}')
if [ "$free_gib" -ge 15 ]; then ok disk "$free_gib GiB free (a cold build uses about 12)"; else bad disk "only $free_gib GiB free; a cold build needs about 12 GiB (target/, ~/.cache/stepwise, the Go caches)"; fi

cache=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
if ls "$cache"/k8s-v*/kube-apiserver >/dev/null 2>&1; then ok "control plane" "built ($cache)"; else warn "control plane" "not built yet: the first just test or just cluster-up builds it (10 to 15 minutes on 2 cores)"; fi
if ls "$cache"/traefik-*/traefik >/dev/null 2>&1; then ok traefik "built ($cache)"; else warn traefik "not built yet: the first just lab builds it (about 10 minutes on 2 cores)"; fi

if [ "$missing" = 0 ]; then echo "everything the test command needs is here"; else echo "something is missing (above)"; fi
exit "$missing"
