"""A small stand-in for the Hugging Face Hub on loopback, for tests of edgespec.hub.

It answers the endpoints huggingface_hub uses to list and download model files:

- ``GET /api/models/{repo}[/revision/{rev}]``: model info (``sha``, ``siblings``);
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: the file listing (``?recursive=``);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: the file, with ``X-Repo-Commit``, ``ETag`` (the
  sha256, as the Hub gives for LFS files), ``Content-Length`` and ``Range`` support;

and the Hub's 404s (``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``).
``cuts[file]`` injects failures: each GET of that file takes the next number from the list and
sends only that many body bytes before dropping the connection (0: drops before any answer).
``stalls[file]`` makes each GET of that file send that many body bytes and then hang until the hub
stops (a transfer whose process gets killed). ``ranges = False`` makes it ignore ``Range`` and send
whole files with 200, as some proxies and mirrors do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


def commit_of(repo: str, revision: str) -> str:
    """A stable 40-hex commit id for a repo's revision."""
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


@dataclass
class FakeHub:
    """Repos by id, each a dict of revision name -> {path: bytes}."""

    repos: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    cuts: dict[str, list[int]] = field(default_factory=dict)
    stalls: dict[str, int] = field(default_factory=dict)
    ranges: bool = True
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def add(self, repo: str, files: dict[str, bytes], revision: str = "main") -> str:
        """Publish ``files`` as ``repo`` at ``revision``; returns the commit id."""
        self.repos.setdefault(repo, {})[revision] = dict(files)
        return commit_of(repo, revision)

    @property
    def url(self) -> str:
        """The endpoint to give huggingface_hub (HF_ENDPOINT)."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        """Serve on a free loopback port in a daemon thread."""
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def gets(self, path_part: str) -> list[str | None]:
        """The Range headers of the GETs whose path contains ``path_part``."""
        return [rng for method, path, rng in self.log if method == "GET" and path_part in path]

    def lookup(self, repo: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """(commit, files) for a revision name or commit id, or None."""
        revisions = self.repos.get(repo, {})
        for name, files in revisions.items():
            if revision in (name, commit_of(repo, name)):
                return commit_of(repo, name), files
        return None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def do_GET(self) -> None:
        self._dispatch(body=True)

    # ------------------------------------------------------------------ routing

    def _dispatch(self, body: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.fake.log.append((self.command, path, self.headers.get("Range")))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path):
            self._tree(m[1], m[2], (m[3] or "").strip("/"), parse_qs(url.query), body)
        elif m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            self._info(m[1], m[2] or "main", body)
        elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            self._resolve(m[1], m[2], m[3], body)
        else:
            self._error(404, "RepoNotFound", "not found", body)

    def _error(self, status: int, code: str, message: str, body: bool, commit: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _json(self, obj: object, body: bool) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _find(self, repo: str, revision: str, body: bool) -> tuple[str, dict[str, bytes]] | None:
        if repo not in self.fake.repos:
            self._error(404, "RepoNotFound", "Repository not found", body)
            return None
        found = self.fake.lookup(repo, revision)
        if found is None:
            self._error(404, "RevisionNotFound", "Invalid rev id", body)
        return found

    # ------------------------------------------------------------------ endpoints

    def _info(self, repo: str, revision: str, body: bool) -> None:
        found = self._find(repo, revision, body)
        if found:
            commit, files = found
            siblings = [{"rfilename": p} for p in sorted(files)]
            self._json({"id": repo, "modelId": repo, "sha": commit, "siblings": siblings}, body)

    def _tree(self, repo: str, revision: str, prefix: str, query: dict[str, list[str]], body: bool) -> None:
        found = self._find(repo, revision, body)
        if not found:
            return
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        entries = []
        for p, data in sorted(found[1].items()):
            rest = p[len(prefix) + 1 :] if prefix else p
            if prefix and not p.startswith(prefix + "/"):
                continue
            if not recursive and "/" in rest:
                continue
            entries.append(
                {
                    "type": "file",
                    "oid": hashlib.sha1(data).hexdigest(),
                    "size": len(data),
                    "path": p,
                    "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134},
                }
            )
        self._json(entries, body)

    def _resolve(self, repo: str, revision: str, filename: str, body: bool) -> None:
        found = self._find(repo, revision, body)
        if not found:
            return
        commit, files = found
        if filename not in files:
            self._error(404, "EntryNotFound", "Entry not found", body, commit)
            return
        data = files[filename]
        start = 0
        if (rng := self.headers.get("Range")) and self.fake.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-(\d*)", rng)[1])  # type: ignore[index]
        cut = None
        if body and self.fake.cuts.get(filename):
            cut = self.fake.cuts[filename].pop(0)
            if cut == 0:
                self._drop()
                return
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        if cut is not None:
            self.wfile.write(data[start : start + cut])
            self.wfile.flush()
            self._drop()
            return
        if filename in self.fake.stalls:
            self.wfile.write(data[start : start + self.fake.stalls[filename]])
            self.wfile.flush()
            self.fake._stopping.wait()
            self._drop()
            return
        self.wfile.write(data[start:])

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
