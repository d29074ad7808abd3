#!/usr/bin/env python3
"""A stepwise metric plugin (protocol stepwise.dev/plugins/v1, docs/plugins.md): the measurement
is the number in a file, e.g. one a batch job writes its error budget into.

Configure it in a metric:

    provider:
      plugin:
        example.com/file: {path: /var/run/error-budget}

and start the controller with --metric-plugin example.com/file=/path/to/file-metric.py.

One process per call: the request is one JSON object on standard input, the answer one JSON
object on standard output. Standard library only.
"""
import json
import sys

PROTOCOL = "stepwise.dev/plugins/v1"


def answer(**fields):
    json.dump({"protocol": PROTOCOL, **fields}, sys.stdout)
    sys.stdout.write("\n")


def main():
    request = json.load(sys.stdin)
    if request.get("protocol") != PROTOCOL:
        # Told on standard error with a non-zero exit: the measurement is an Error saying this.
        print(f"this plugin speaks {PROTOCOL}, not {request.get('protocol')!r}", file=sys.stderr)
        return 2
    operation = request["operation"]
    if operation in ("terminate", "garbageCollect"):
        answer()  # Nothing in flight, nothing to clean up.
        return 0
    config = request["metric"]["config"]
    path = config.get("path")
    if not path:
        answer(error="config.path is required: the file that holds the number")
        return 0
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as e:
        answer(error=f"cannot read {path}: {e.strerror}")
        return 0
    try:
        value = float(text)
    except ValueError:
        answer(error=f"{path} holds {text[:40]!r}, not a number")
        return 0
    answer(value=value, metadata={"path": path})
    return 0


if __name__ == "__main__":
    sys.exit(main())
