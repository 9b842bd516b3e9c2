"""A tiny fake Kubernetes API server on 127.0.0.1, just enough for Helm's Install to render a chart.

Helm (via helm-sdkpy) has no offline `template` entry point, so rendering runs a real `Install` against this
server: it answers discovery for the API groups the chart uses, returns empty lists for collection GETs,
404 for named GETs (so `lookup` sees nothing), and echoes every create with 201. Nothing is persisted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KUBERNETES_VERSION = "v1.32.0"

# (group, version, kind, plural, namespaced) for every kind the charts may render or Helm may touch.
RESOURCES: list[tuple[str, str, str, str, bool]] = [
    ("", "v1", "Namespace", "namespaces", False),
    ("", "v1", "Secret", "secrets", True),
    ("", "v1", "ConfigMap", "configmaps", True),
    ("", "v1", "Service", "services", True),
    ("", "v1", "ServiceAccount", "serviceaccounts", True),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    ("", "v1", "Pod", "pods", True),
    ("apps", "v1", "Deployment", "deployments", True),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", True),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
    ("ray.io", "v1", "RayService", "rayservices", True),
    ("ray.io", "v1", "RayCluster", "rayclusters", True),
    ("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", True),
    ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", True),
    ("k8gb.io", "v1beta1", "Gslb", "gslbs", True),
    ("k8gb.absa.oss", "v1beta1", "Gslb", "gslbs", True),
]


def _group_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def _resource_list(group: str, version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": _group_version(group, version),
        "resources": [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }
            for g, v, kind, plural, namespaced in RESOURCES
            if (g, v) == (group, version)
        ],
    }


def _group_list() -> dict[str, Any]:
    versions: dict[str, list[str]] = {}
    for g, v, *_ in RESOURCES:
        if g and v not in versions.setdefault(g, []):
            versions[g].append(v)
    groups = []
    for g, vs in versions.items():
        gvs = [{"groupVersion": f"{g}/{v}", "version": v} for v in vs]
        groups.append({"name": g, "versions": gvs, "preferredVersion": gvs[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _kind_for_plural(plural: str) -> str | None:
    return next((kind for *_, kind, p, _ns in RESOURCES if p == plural), None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._send(
            404,
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404},
        )

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/version":
            major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
            return self._send(200, {"major": major, "minor": minor, "gitVersion": KUBERNETES_VERSION})
        if path == "/api":
            return self._send(
                200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            )
        if path == "/apis":
            return self._send(200, _group_list())
        if path == "/api/v1":
            return self._send(200, _resource_list("", "v1"))
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "apis":
            if any((g, v) == (parts[1], parts[2]) for g, v, *_ in RESOURCES):
                return self._send(200, _resource_list(parts[1], parts[2]))
            return self._not_found()
        # Collection GET (list): .../namespaces/<ns>/<plural> or .../<plural> -> empty list.
        kind = _kind_for_plural(parts[-1])
        if kind is not None and (len(parts) < 2 or parts[-2] not in ("namespaces",)):
            return self._send(200, {"kind": f"{kind}List", "apiVersion": "v1", "items": [], "metadata": {}})
        return self._not_found()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            # client-go sends core types as protobuf: echo the bytes back as they came.
            self.send_response(201)
            self.send_header("Content-Type", self.headers.get("Content-Type", "application/octet-stream"))
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return
        meta = body.setdefault("metadata", {})
        meta.setdefault("uid", "00000000-0000-0000-0000-000000000000")
        meta.setdefault("resourceVersion", "1")
        self._send(201, body)

    do_PUT = do_POST
    do_PATCH = do_POST

    def do_DELETE(self) -> None:
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


@contextmanager
def fake_apiserver() -> Iterator[str]:
    """Run the fake API server on a free loopback port; yield a kubeconfig (YAML text) pointing at it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    kubeconfig = f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: "http://{host}:{port}"}}
contexts:
- name: fake
  context: {{cluster: fake, user: fake, namespace: default}}
current-context: fake
users:
- name: fake
  user: {{token: fake}}
"""
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()
