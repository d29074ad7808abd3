#!/usr/bin/env python3
"""Runs test binaries of the one build of the workspace (`cargo test --workspace --no-run`).

`cargo test -p PACKAGE` resolves the features of the dependencies for that package alone, so each
recipe that ran it compiled tokio, kube and the rest again with another feature set. This builds
the whole workspace once, as `scripts/just build` does (a no-op when it is built), then runs the
chosen test binaries as cargo would: from the package's directory, one after the other, stopping
at the end with a failure if any failed.

    scripts/cargo-test.py [--offline] [--jobs N] SELECTION... [-- TEST-ARGS...]

A SELECTION is a package (every test binary of it: lib, bins and each tests/*.rs), or
PACKAGE:PART[,PART...] where a PART is `lib`, `bins` or the name of an integration test target.
TEST-ARGS go to every binary (`--test-threads=4`, a name filter, `--nocapture`). With --jobs N,
N binaries run at a time (most e2e binaries hold one or two tests, each waiting on the cluster),
and each binary's output is printed whole when it ends, so outputs never interleave.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv):
    offline = False
    jobs = 1
    selections = []
    test_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, test_args = argv[:i], argv[i + 1 :]
    argv = iter(argv)
    for a in argv:
        if a == "--offline":
            offline = True
        elif a == "--jobs":
            value = next(argv, "")
            if not value.isdigit() or int(value) < 1:
                sys.exit(f"cargo-test: --jobs takes a number of binaries at a time, not {value!r}")
            jobs = int(value)
        elif a.startswith("-"):
            sys.exit(f"cargo-test: unknown option {a} (see the top of {__file__})")
        else:
            package, _, parts = a.partition(":")
            selections.append((package, set(parts.split(",")) if parts else None))
    if not selections:
        sys.exit("cargo-test: name at least one package to test")
    return offline, jobs, selections, test_args


def build(offline):
    """Builds (or finds built) every test binary of the workspace; yields cargo's artifacts."""
    cmd = ["cargo", "test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"]
    if offline:
        cmd.append("--offline")
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"cargo-test: {' '.join(cmd)} failed")
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"]["test"]:
            yield msg


def package_names(offline):
    cmd = ["cargo", "metadata", "--no-deps", "--format-version=1"] + (["--offline"] if offline else [])
    meta = json.loads(subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True).stdout)
    return {p["manifest_path"]: p["name"] for p in meta["packages"]}


def part_of(artifact):
    """`lib`, `bins`, or the integration test's name."""
    kind = artifact["target"]["kind"]
    if "test" in kind:
        return artifact["target"]["name"]
    return "bins" if "bin" in kind else "lib"


def chosen(artifacts, names, selections):
    runs = []
    for package, parts in selections:
        found = [a for a in artifacts if names.get(a["manifest_path"]) == package]
        if not found:
            sys.exit(f"cargo-test: the workspace has no package {package!r} with tests")
        if parts is not None:
            unknown = parts - {part_of(a) for a in found}
            if unknown:
                sys.exit(f"cargo-test: {package} has no test target {', '.join(sorted(unknown))}")
            found = [a for a in found if part_of(a) in parts]
        runs += sorted(found, key=lambda a: (part_of(a) not in ("lib", "bins"), a["target"]["src_path"]))
    return runs


class Binary:
    """One test binary, run as cargo runs it: from its package's directory."""

    def __init__(self, artifact, names):
        self.package = names[artifact["manifest_path"]]
        self.dir = Path(artifact["manifest_path"]).parent
        self.src = os.path.relpath(artifact["target"]["src_path"], self.dir)
        self.executable = artifact["executable"]
        self.header = f"     Running {self.src} ({os.path.relpath(self.executable, ROOT)}) of {self.package}"

    def start(self, test_args, captured):
        env = dict(os.environ, CARGO_MANIFEST_DIR=str(self.dir), CARGO_PKG_NAME=self.package)
        self.started = time.monotonic()
        self.output = tempfile.TemporaryFile() if captured else None
        self.proc = subprocess.Popen([self.executable, *test_args], cwd=self.dir, env=env,
                                     stdout=self.output, stderr=subprocess.STDOUT if captured else None)

    def failure(self):
        rc = self.proc.returncode
        if rc == 0:
            return None
        return f"{self.package} {self.src} (exit {rc}, {time.monotonic() - self.started:.0f} s)"

    def print_output(self):
        print(f"{self.header}, {time.monotonic() - self.started:.0f} s", flush=True)
        self.output.seek(0)
        sys.stdout.buffer.write(self.output.read())
        sys.stdout.flush()
        self.output.close()


def run_all(binaries, jobs, test_args):
    """Runs the binaries, `jobs` at a time; returns those that failed."""
    failed, waiting, running = [], list(binaries), []
    while waiting or running:
        while waiting and len(running) < jobs:
            b = waiting.pop(0)
            if jobs == 1:
                print(b.header, flush=True)
            b.start(test_args, captured=jobs > 1)
            running.append(b)
        if jobs == 1:
            running[0].proc.wait()
        else:
            time.sleep(0.2)
        for b in [b for b in running if b.proc.poll() is not None]:
            running.remove(b)
            if jobs > 1:
                b.print_output()
            if b.failure():
                failed.append(b.failure())
    return failed


def main():
    offline, jobs, selections, test_args = parse_args(sys.argv[1:])
    artifacts = list(build(offline))
    names = package_names(offline)
    binaries = [Binary(a, names) for a in chosen(artifacts, names, selections)]
    failed = run_all(binaries, jobs, test_args)
    if failed:
        print("cargo-test: failed: " + "; ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
