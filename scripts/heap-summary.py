#!/usr/bin/env python3
"""Summarises a heap profile written by the controller's dhat-heap build (`just scale`).

Usage: heap-summary.py PROFILE.json [TOP]

Prints the heap in use when the profile was written (the controller settled on its fleet, its
caches full) and at its peak, the allocation sites holding the most of it, and the same bytes
grouped by what they are: the kind of object cached, the indexes, the runtime.
"""
import json
import re
import sys
from collections import defaultdict

# Frames that say nothing about who allocated: the allocator, the standard library's containers,
# the profiler. Told by the file they are in.
NOISE = re.compile(
    r"\((alloc/src/|core/src/|std/src/|src/raw_vec/|src/vec/|src/boxed|src/sync\.rs|src/slice\.rs|"
    r"dhat-[0-9.]+/|hashbrown-)|^__rust_alloc"
)

# What a stack is about, by the first of these its frames name (most specific first).
KINDS = [
    ("ReplicaSets (cache)", r"ReplicaSet"),
    ("Rollouts (cache)", r"Rollout"),
    ("AnalysisRuns (cache)", r"AnalysisRun"),
    ("Services (cache)", r"core::v1::service|Service\b"),
    ("Deployments (cache)", r"Deployment"),
    ("Events sent", r"events::|Recorder"),
    ("indexes (owner UID, names)", r"stepwise_controller::index"),
    ("metrics", r"prometheus_client|stepwise_controller::metrics"),
    ("watch streams and HTTP", r"hyper|h2::|tokio_util|kube_client|rustls|tower"),
    ("controller queues", r"kube_runtime::controller|kube_runtime::scheduler|kube_runtime::utils"),
    ("reflector stores", r"kube_runtime::reflector"),
    ("tokio runtime", r"tokio::"),
]


def frame_name(frame: str) -> str:
    # "0x1234: func::name (file.rs:1:2)" -> "func::name (file.rs:1:2)"
    return frame.split(": ", 1)[1] if ": " in frame else frame


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    with open(path) as f:
        profile = json.load(f)
    frames = [frame_name(f) for f in profile["ftbl"]]
    pps = profile["pps"]
    total_end = sum(pp["eb"] for pp in pps)
    total_peak = sum(pp["gb"] for pp in pps)
    mib = lambda b: b / 1024 / 1024  # noqa: E731
    print(f"heap in use when written: {mib(total_end):.1f} MiB in {sum(pp['ebk'] for pp in pps):,} blocks")
    print(f"heap at its peak:         {mib(total_peak):.1f} MiB")
    print(f"allocated over the run:   {mib(sum(pp['tb'] for pp in pps)):.1f} MiB in {sum(pp['tbk'] for pp in pps):,} blocks")

    kinds = defaultdict(int)
    for pp in pps:
        stack = [frames[i] for i in pp["fs"]]
        text = "\n".join(stack)
        kind = next((name for name, pattern in KINDS if re.search(pattern, text)), "other")
        kinds[kind] += pp["eb"]
    print("\nheap in use when written, by what it is (the first match in the allocating stack):")
    for kind, size in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {mib(size):8.1f} MiB  {100 * size / max(total_end, 1):5.1f} %  {kind}")

    print(f"\nthe {top} allocation sites holding the most when written:")
    for pp in sorted(pps, key=lambda pp: -pp["eb"])[:top]:
        stack = [frames[i] for i in pp["fs"]]
        telling = [f for f in stack if not NOISE.search(f)][:4]
        print(f"  {mib(pp['eb']):8.1f} MiB in {pp['ebk']:>9,} blocks of {pp['eb'] // max(pp['ebk'], 1):,} bytes")
        for f in telling:
            print(f"      {f[:150]}")


if __name__ == "__main__":
    main()
