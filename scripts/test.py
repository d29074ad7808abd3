#!/usr/bin/env python3
"""`just test`: every recipe CI runs, as a graph, side by side where they wait.

On 2 cores the builds (the Rust workspace, the Kubernetes control plane, Helm and Traefik from
their Go modules) are what takes the CPU; the cluster suites (e2e, chaos, Helm chart, lab) spend
most of their time waiting on a control plane. So a recipe starts as soon as what it needs is
built, each cluster suite gets a control plane of its own (tests/cluster's state directory,
target/clusters/SUITE) stopped when it ends, and the builds that only the last suites need
start at once at a lower CPU priority: they take the time the others leave idle (downloads,
links, suites waiting) and yield the CPU to what is needed sooner.

Each recipe's output goes to target/test-logs/RECIPE.log; a line says when each starts and ends,
and every minute which are running. A failed recipe has the end of its log printed and the
recipes that need it are skipped; the others go on. Last comes the table of wall times.

    scripts/test.py            # everything (what `scripts/just test` and CI run)
    scripts/test.py e2e lab-test   # these recipes and what they need
"""

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "target" / "test-logs"
JUST = str(ROOT / "scripts" / "just")
HEARTBEAT_SECONDS = 60
FAILED_LOG_LINES = 60
TAIL_LINES = 25


@dataclass
class Recipe:
    """A recipe of the justfile, with what it needs done first."""

    name: str
    needs: list = field(default_factory=list)
    # Recipes it starts after, whatever their outcome: suites whose tests judge timing (the
    # chaos suite) do not share the CPU with the builds.
    after: list = field(default_factory=list)
    # A control plane of its own (target/clusters/<cluster>), stopped after the last recipe on it.
    cluster: str = None
    # Builds that only the last suites need run at a lower CPU priority (a higher nice value) from
    # the start: they take the CPU the others leave idle, and yield it to them.
    nice: int = 0


BUILDS = ["build", "clippy", "cluster-build", "traefik", "helm", "image-test-build"]

# The graph. The builds come first and once: each suite's recipe still names what it needs (a
# no-op by then), so that `scripts/just e2e` alone works as before.
RECIPES = [
    Recipe("fmt-check"),
    Recipe("build", needs=["fmt-check"]),
    # The suites need the build, not the lints: clippy checks while they wait.
    Recipe("clippy", needs=["build"], nice=5),
    Recipe("cluster-build"),
    Recipe("downloads"),
    Recipe("traefik", nice=10),
    Recipe("helm", nice=19),
    Recipe("check-crds", needs=["build"]),
    Recipe("test-unit", needs=["build", "downloads"]),
    Recipe("smoke", needs=["cluster-build"], cluster="e2e"),
    Recipe("e2e", needs=["build", "downloads", "smoke"], cluster="e2e"),
    Recipe("chaos-test-restarts", needs=["build", "cluster-build"], after=BUILDS, cluster="chaos-restarts"),
    Recipe("chaos-test-faults", needs=["build", "cluster-build"], after=BUILDS, cluster="chaos-faults"),
    Recipe("helm-test", needs=["build", "downloads", "helm"], cluster="helm"),
    Recipe("lab-test", needs=["build", "downloads", "traefik", "cluster-build"]),
    # The image's build (musl, target/image of its own) is for its test only: at the lowest
    # priority. The test is short, but its control plane must not starve: a little below the rest.
    Recipe("image-test-build", nice=19),
    Recipe("image-test", needs=["image-test-build", "cluster-build", "helm"], cluster="image", nice=5),
    Recipe("krew-test", needs=["build"], nice=10),
]


def fmt(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Run:
    def __init__(self, recipes):
        self.recipes = {r.name: r for r in recipes}
        self.t0 = time.monotonic()
        self.running = {}  # name -> (Popen, start offset)
        self.result = {}  # name -> ("passed" | "FAILED" | "skipped", start, wall)
        self.clusters_started = set()

    def say(self, msg):
        print(f"[test {fmt(time.monotonic() - self.t0):>6}] {msg}", flush=True)

    def env_of(self, recipe):
        env = dict(os.environ)
        if recipe.cluster:
            env["STEPWISE_CLUSTER_DIR"] = str(self.cluster_dir(recipe.cluster))
        return env

    @staticmethod
    def cluster_dir(cluster):
        return ROOT / "target" / "clusters" / cluster

    def start(self, recipe):
        log = open(LOGS / f"{recipe.name}.log", "wb")
        preexec = (lambda: lower_priority(recipe.nice)) if recipe.nice else None
        proc = subprocess.Popen(
            [JUST, recipe.name], cwd=ROOT, env=self.env_of(recipe), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec,
        )
        log.close()
        if recipe.cluster:
            self.clusters_started.add(recipe.cluster)
        self.running[recipe.name] = (proc, time.monotonic() - self.t0)
        self.say(f"{recipe.name}: started{f' at nice {recipe.nice}' if recipe.nice else ''}"
                 f"{f' on its own control plane target/clusters/{recipe.cluster}' if recipe.cluster else ''}")

    def ready(self, recipe):
        return all(self.result.get(n, (None,))[0] == "passed" for n in recipe.needs) and all(
            n in self.result for n in recipe.after if n in self.recipes)

    def blocked(self, recipe):
        return any(self.result.get(n, (None,))[0] in ("FAILED", "skipped") for n in recipe.needs)

    def finish(self, name, rc):
        proc, start = self.running.pop(name)
        wall = time.monotonic() - self.t0 - start
        status = "passed" if rc == 0 else "FAILED"
        self.result[name] = (status, start, wall)
        self.say(f"{name}: {status} in {fmt(wall)}{counts_in(LOGS / f'{name}.log')}")
        if rc != 0:
            self.print_log_tail(name)
        self.stop_idle_clusters()

    def print_log_tail(self, name):
        """The failures a log names (a panic and the lines after it, FAIL and ERROR lines), then its
        end; the whole log stays in target/test-logs/."""
        path = LOGS / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines()
        digest = []
        for i, line in enumerate(lines):
            if "panicked at" in line:
                digest += lines[i : i + 4]
            elif re.search(r"\bFAIL(ED)?\b|\bERROR\b|failed:", line):
                digest.append(line)
        print(f"----- {name} failed; what its log names ({path.relative_to(ROOT)}) -----")
        print("\n".join(digest[:FAILED_LOG_LINES]))
        print(f"----- the last {TAIL_LINES} lines -----")
        print("\n".join(lines[-TAIL_LINES:]))
        print(f"----- end of {name} -----", flush=True)

    def stop_idle_clusters(self):
        for cluster in sorted(self.clusters_started):
            users = [r for r in self.recipes.values() if r.cluster == cluster]
            if all(r.name in self.result for r in users):
                self.clusters_started.discard(cluster)
                stop_cluster(self.cluster_dir(cluster))

    def step(self):
        for recipe in self.recipes.values():
            if recipe.name in self.result or recipe.name in self.running:
                continue
            if self.blocked(recipe):
                self.result[recipe.name] = ("skipped", None, None)
                self.say(f"{recipe.name}: skipped (needs {', '.join(recipe.needs)})")
                self.stop_idle_clusters()
            elif self.ready(recipe):
                self.start(recipe)
        for name, (proc, _) in list(self.running.items()):
            rc = proc.poll()
            if rc is not None:
                self.finish(name, rc)

    def run(self):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.say(f"{len(self.recipes)} recipes; logs in {LOGS.relative_to(ROOT)}/")
        last_beat = time.monotonic()
        while len(self.result) < len(self.recipes):
            self.step()
            time.sleep(0.5)
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS and self.running:
                last_beat = time.monotonic()
                now = time.monotonic() - self.t0
                self.say("running: " + ", ".join(f"{n} ({fmt(now - s)})" for n, (_, s) in self.running.items()))
        self.table()
        return all(status == "passed" for status, _, _ in self.result.values())

    def table(self):
        total = time.monotonic() - self.t0
        width = max(len(name) for name in self.recipes)
        print(f"\n{'recipe':<{width}} {'result':<8} {'started':>8} {'wall':>8}")
        for r in self.recipes.values():
            status, start, wall = self.result[r.name]
            print(f"{r.name:<{width}} {status:<8} {fmt(start) if start is not None else '-':>8} "
                  f"{fmt(wall) if wall is not None else '-':>8}")
        print(f"{'total':<{width}} {'':<8} {'':>8} {fmt(total):>8}", flush=True)

    def abort(self):
        for proc, _ in self.running.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc, _ in self.running.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for cluster in self.clusters_started:
            stop_cluster(self.cluster_dir(cluster))


def lower_priority(nice):
    """Runs in the recipe's process, a session of its own: with the kernel's autogroups, which
    give each session an equal share of the CPU whatever its processes' nice values, the nice
    value counts against the other recipes only when it is the session's too."""
    os.nice(nice)
    try:
        Path("/proc/self/autogroup").write_text(str(nice))
    except OSError:
        pass  # no autogroups: the process's nice value is all there is


def counts_in(log):
    """What a recipe's log says it tested: the sum of cargo's `test result` lines and the
    `NAME: N passed, M failed` lines of the shell suites."""
    passed = failed = 0
    for line in log.read_text(errors="replace").splitlines():
        m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed", line) or re.search(
            r"[\w-]+: (\d+) passed, (\d+) failed$", line)
        if m:
            passed, failed = passed + int(m[1]), failed + int(m[2])
    return f" ({passed} tests passed, {failed} failed)" if passed or failed else ""


def stop_cluster(state):
    subprocess.run([str(ROOT / "tests" / "cluster" / "down.sh")], cwd=ROOT,
                   env=dict(os.environ, STEPWISE_CLUSTER_DIR=str(state)),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def selected(names):
    """The recipes named and, transitively, those they need."""
    by_name = {r.name: r for r in RECIPES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        sys.exit(f"test: no recipe {', '.join(unknown)}; the recipes: {', '.join(by_name)}")
    keep, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n not in keep:
            keep.add(n)
            todo += by_name[n].needs
    return [r for r in RECIPES if r.name in keep]


def main():
    run = Run(selected(sys.argv[1:]) if len(sys.argv) > 1 else RECIPES)

    def on_signal(signum, _frame):
        run.say(f"signal {signum}: stopping the running recipes and their control planes")
        run.abort()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sys.exit(0 if run.run() else 1)


if __name__ == "__main__":
    main()
