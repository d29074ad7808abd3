#!/usr/bin/env python3
"""A stepwise traffic router plugin (protocol stepwise.dev/plugins/v1 over HTTP, docs/plugins.md):
it writes the split the controller wants (weights and header routes) as JSON to a file, the way a
router for a proxy outside Kubernetes would write the proxy's configuration for it to reload.

Run it next to the controller (a sidecar) and register it:

    file-router.py 7070
    stepwise-controller --router-plugin example.com/file=http://127.0.0.1:7070

and name it in a Rollout:

    trafficRouting:
      plugins:
        example.com/file: {path: /var/run/proxy/split.json}

It makes header routes but not mirror routes: a setMirrorRoute step is refused with an error,
which the Rollout shows. Standard library only.

With `loadedPath` in the config, the proxy tells what it has loaded by writing a copy of the split
there once it has reloaded; until that copy matches, the plugin answers `verified: false`, and the
controller keeps the Rollout at its step.

    file-router.py PORT [--protocol NAME]

--protocol makes it claim another protocol version: a broken plugin, for testing
`kubectl stepwise plugin check`.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROTOCOL = "stepwise.dev/plugins/v1"
NAME = "file-router"
# Calls for one file are made one at a time: two Rollouts sharing a file must not interleave.
WRITE_LOCK = threading.Lock()


class Refused(Exception):
    """A request this plugin refuses: the status and a message for a person."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def field(obj, name, kind, where):
    """obj[name], which must be of `kind`; the error names the field as the request spells it."""
    value = obj.get(name) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        wanted = {int: "an integer", str: "a string", dict: "an object", list: "a list"}[kind]
        raise Refused(400, f"{where}{name} must be {wanted}, not {json.dumps(value)}")
    return value


def split_of(request):
    """The file's content for a set-traffic request, or Refused."""
    if not isinstance(request, dict):
        raise Refused(400, "the body must be a JSON object")
    protocol = request.get("protocol")
    if protocol != PROTOCOL:
        raise Refused(400, f"{NAME} speaks {PROTOCOL}, not {json.dumps(protocol)}")
    rollout = field(request, "rollout", dict, "")
    config = field(request, "config", dict, "")
    path = config.get("path")
    if not isinstance(path, str) or not path:
        raise Refused(400, "config.path is required: the file the split is written to")
    desired = field(request, "desired", dict, "")
    canary = field(desired, "canaryService", str, "desired.")
    stable = field(desired, "stableService", str, "desired.")
    weight = field(desired, "canaryWeight", int, "desired.")
    total = field(desired, "maxWeight", int, "desired.")
    if total <= 0 or not 0 <= weight <= total:
        raise Refused(400, f"desired.canaryWeight {weight} is not between 0 and desired.maxWeight {total}")
    routes = []
    for i, route in enumerate(field(desired, "routes", list, "desired.")):
        if isinstance(route, dict) and "mirror" in route:
            name = (route.get("mirror") or {}).get("name", f"#{i}")
            raise Refused(
                422,
                f"{NAME} makes no mirror routes: the setMirrorRoute step asks for route {name}; "
                "use setHeaderRoute or another router",
            )
        header = field(route, "header", dict, f"desired.routes[{i}].")
        routes.append({
            "name": field(header, "name", str, f"desired.routes[{i}].header."),
            "match": header.get("match") or [],
            "service": canary,
        })
    loaded = config.get("loadedPath")
    if loaded is not None and (not isinstance(loaded, str) or not loaded):
        raise Refused(400, "config.loadedPath must be the path of a file, when given")
    return path, loaded, {
        "rollout": f"{rollout.get('namespace')}/{rollout.get('name')}",
        "uid": rollout.get("uid"),
        "canaryWeight": weight,
        "maxWeight": total,
        "split": [
            {"service": stable, "weight": total - weight, "hash": desired.get("stableHash")},
            {"service": canary, "weight": weight, "hash": desired.get("canaryHash")},
        ],
        "routes": routes,
    }


def text_of(content):
    return json.dumps(content, indent=2, sort_keys=True) + "\n"


def loaded(path, content):
    """Whether the proxy reports having loaded `content`: its copy at `path` is the same."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read() == text_of(content)
    except OSError:
        return False


def write(path, content):
    """Writes content to path whole (a temporary file renamed over it), so that a proxy reading
    it never sees half a file; an unchanged file is left alone, so that it is not reloaded."""
    text = text_of(content)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except OSError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".split-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise Refused(500, f"cannot write {path}: {e.strerror}") from e


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the controller's connection open between calls; every answer has a length.
    protocol_version = "HTTP/1.1"
    server_version = NAME

    def answer(self, status, body):
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def refuse(self, status, message):
        self.answer(status, {"protocol": self.server.protocol, "error": message})

    def do_GET(self):
        if self.path != "/v1/info":
            return self.refuse(404, f"no {self.path} here: GET /v1/info, POST /v1/router/set-traffic")
        self.answer(200, {
            "protocol": self.server.protocol,
            "name": NAME,
            "capabilities": {"router": {"headerRoutes": True, "mirrorRoutes": False}, "metric": False, "step": False},
        })

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/v1/router/set-traffic":
            return self.refuse(404, f"no {self.path} here: GET /v1/info, POST /v1/router/set-traffic")
        try:
            try:
                request = json.loads(body)
            except ValueError as e:
                raise Refused(400, f"the body is not JSON: {e}") from e
            path, loaded_path, content = split_of(request)
            with WRITE_LOCK:
                write(path, content)
        except Refused as e:
            return self.refuse(e.status, e.message)
        # Without a loadedPath, the file is what the proxy reads: written, the split is in place.
        verified = loaded(loaded_path, content) if loaded_path else True
        self.answer(200, {"protocol": self.server.protocol, "verified": verified})

    def log_message(self, format, *args):
        sys.stderr.write(f"{NAME}: {format % args}\n")


def main():
    parser = argparse.ArgumentParser(description="A stepwise router plugin that writes the split to a file.")
    parser.add_argument("port", type=int, help="port to listen on, on 127.0.0.1")
    parser.add_argument("--protocol", default=PROTOCOL, help="the protocol to claim (for testing a checker)")
    args = parser.parse_args()
    # 127.0.0.1 only: the controller is the one caller, in the same pod.
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.protocol = args.protocol
    print(f"{NAME}: serving {args.protocol} on http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
