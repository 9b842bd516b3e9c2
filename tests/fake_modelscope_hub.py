"""A fake ModelScope hub: the remote side of the HTTP API the ``modelscope`` client downloads from.

Serves local directories as model repositories, shaped as modelscope_hub 0.5 (``_legacy_api.LegacyClient``,
``_download.DownloadManager``) reads them:

    GET       /api/v1/models/<owner>/<name>                   model info: {"Code": 200, "Data": {...}}
    GET       /api/v1/models/<owner>/<name>/repo/files        listing: Data.Files[{Path, Type, Size, Sha256}]
    GET|HEAD  /api/v1/models/<owner>/<name>/repo?FilePath=p   file bytes; ``Range: bytes=N-`` answers 206;
                                                              LFS files (.pth .zip .bin): 302 to /cdn/...
    GET       /api/v1/repos/internalAccelerationInfo          404 (the client's Alibaba-Cloud region probe)

Point the client at it with ``MODELSCOPE_ENDPOINT`` / ``MODELSCOPE_DOMAIN`` = :attr:`FakeModelScopeHub.url`.
Faults, per repository path: :meth:`drop` closes the connection after N bytes of a file (the next K
downloads); :meth:`corrupt` serves the listed size with different bytes. :attr:`requests` records all.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

API = "/api/v1/models/"
CDN = (
    "/cdn/"  # LFS files (checkpoints, archives) are answered with a 302 to here, like the hub's OSS redirect
)
LFS_SUFFIXES = (".pth", ".zip", ".bin")
COMMIT = "0" * 39 + "1"


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # URL path, unquoted
    file_path: str | None  # FilePath of a file download
    range: str | None  # Range header of a file download


@dataclass
class _Fault:
    kind: str  # "drop" | "corrupt"
    times: int  # downloads still affected (-1: all)
    after: int = 0  # drop: bytes sent before the connection closes


class FakeModelScopeHub:
    """``with FakeModelScopeHub({"iic/x": dir}) as hub: ...`` serves on ``hub.url`` (127.0.0.1, free port)."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {model_id: Path(path) for model_id, path in repos.items()}
        self.requests: list[Request] = []
        self.faults: dict[str, _Fault] = {}
        self.dropped = threading.Event()  # set when a drop fault fired
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- faults and inspection ------------------------------------------------------------------------------
    def drop(self, file_path: str, after: int, times: int = 1) -> None:
        """The next ``times`` downloads of ``file_path`` stop after ``after`` bytes (connection closed)."""
        self.faults[file_path] = _Fault("drop", times, after)

    def corrupt(self, file_path: str, times: int = -1) -> None:
        """Serve ``file_path`` with its listed size but different bytes (its sha256 no longer matches)."""
        self.faults[file_path] = _Fault("corrupt", times)

    def file_downloads(self, file_path: str | None = None) -> list[Request]:
        """GETs that answered with file bytes (an LFS file's redirect is not one; its CDN request is)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "GET"
                and r.file_path
                and (r.path.startswith(CDN) or not r.file_path.endswith(LFS_SUFFIXES))
                and (file_path is None or r.file_path == file_path)
            ]

    def listing(self, model_id: str) -> list[dict[str, Any]]:
        """The ``Data.Files`` entries of a repo (directories as ``tree`` entries, as the hub lists them)."""
        root = self.repos[model_id]
        entries: list[dict[str, Any]] = []
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            is_dir = path.is_dir()
            data = b"" if is_dir else path.read_bytes()
            entries.append(
                {
                    "CommitId": COMMIT,
                    "CommitMessage": "upload",
                    "CommittedDate": 1700000000,
                    "CommitterName": "fake-hub",
                    "IsLFS": (not is_dir) and path.name.endswith(LFS_SUFFIXES),
                    "Mode": "40000" if is_dir else "100644",
                    "Name": path.name,
                    "Path": rel,
                    "Revision": COMMIT,
                    "Sha256": "" if is_dir else hashlib.sha256(data).hexdigest(),
                    "Size": 0 if is_dir else len(data),
                    "Type": "tree" if is_dir else "blob",
                }
            )
        return entries

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "hub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeModelScopeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _take_fault(self, file_path: str) -> _Fault | None:
        with self._lock:
            fault = self.faults.get(file_path)
            if fault is None or fault.times == 0:
                return None
            if fault.times > 0:
                fault.times -= 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeModelScopeHub

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # -- routing ---------------------------------------------------------------------------------------------
    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        file_path = query.get("FilePath") if path.endswith("/repo") else None
        if path.startswith(CDN):
            file_path = path.partition("/-/")[2] or None
        with self.hub._lock:
            self.hub.requests.append(
                Request(self.command, path, file_path, self.headers.get("Range") if file_path else None)
            )
        if path.startswith(CDN):  # where LFS downloads are redirected, as the hub sends them to its CDN
            model_id, _, cdn_path = path[len(CDN) :].partition("/-/")
            if model_id in self.hub.repos and cdn_path:
                return self._file(self.hub.repos[model_id], cdn_path, head, cdn_path)
        if not path.startswith(API):
            return self._json(404, {"Code": 10010205, "Message": "not found", "Success": False})
        rest = path[len(API) :]
        for model_id, root in self.hub.repos.items():
            if rest == model_id:
                return self._json(200, self._model_info(model_id))
            if rest == f"{model_id}/repo/files":
                files = self.hub.listing(model_id)
                return self._json(200, {"Code": 200, "Data": {"Files": files}, "Success": True})
            if rest == f"{model_id}/repo" and file_path:
                if file_path.endswith(LFS_SUFFIXES):
                    return self._redirect(f"{CDN}{quote(model_id)}/-/{quote(file_path)}")
                return self._file(root, file_path, head, file_path)
        return self._json(404, {"Code": 10010205, "Message": f"model {rest} not found", "Success": False})

    @staticmethod
    def _model_info(model_id: str) -> dict[str, Any]:
        owner, name = model_id.split("/", 1)
        data = {"Id": 1, "Name": name, "Path": owner, "ChineseName": name, "Revision": "master"}
        return {"Code": 200, "Data": data, "Message": "success", "Success": True}

    # -- responses -------------------------------------------------------------------------------------------
    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file(self, root: Path, file_path: str, head: bool, fault_key: str) -> None:
        target = (root / file_path).resolve()
        if root.resolve() not in target.parents or not target.is_file():
            return self._json(
                404, {"Code": 10010205, "Message": f"file {file_path} not found", "Success": False}
            )
        data = target.read_bytes()
        fault = None if head else self.hub._take_fault(fault_key)
        if fault is not None and fault.kind == "corrupt":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes=") and spec.endswith("-") and spec[6:-1].isdigit():
            start = int(spec[6:-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        if fault is not None and fault.kind == "drop":
            self.wfile.write(body[: fault.after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            self.hub.dropped.set()
            return
        self.wfile.write(body)
