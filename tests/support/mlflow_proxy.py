"""An HTTP forwarder between an MLflow client and a real ``mlflow server``, for tests that count
what crosses the wire: every request's method, path, body and the server's status are recorded
(:attr:`MlflowProxy.requests`); the answer to the next N ``runs/log-batch`` calls can be dropped
after the server has answered them (:meth:`MlflowProxy.drop_answers`: the call was committed, the
client never hears so: the classic duplicate); :meth:`MlflowProxy.stop` / :meth:`start` cut and
restore it on the same port (connections refused meanwhile). A server that cannot be reached
behind a running proxy looks like a dead one to the client: the connection closes unanswered.

Point a tracker at :attr:`MlflowProxy.uri` (``tracking.tracking_uri`` or
``MLFLOW_TRACKING_URI``). Each connection carries one request (HTTP/1.0), so a cut leaves no
pooled connection behind.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from support import free_port

LOG_BATCH = "/runs/log-batch"
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer",
        "upgrade", "content-length"}


@dataclass
class Request:
    method: str
    path: str
    body: bytes
    status: int | None = None      # the server's answer; None: it gave none (down, died)
    dropped: bool = False          # the server answered, the proxy did not pass it on

    @property
    def answered(self) -> bool:
        """True when the client got the server's answer."""
        return self.status is not None and not self.dropped


@dataclass(frozen=True)
class SentMetric:
    key: str
    step: int
    timestamp: int
    value: float
    answered: bool                 # the log-batch call carrying it was answered to the client
    status: int | None             # the server's status for that call


class MlflowProxy:
    """See the module docstring. ``target``: the server's ``http://host:port``."""

    def __init__(self, target: str):
        host, _, port = target.removeprefix("http://").rstrip("/").partition(":")
        self.target = (host, int(port))
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._drop: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._live: set[socket.socket] = set()

    # -- control

    def start(self) -> "MlflowProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = _Server(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (new connections are refused) and cut the connections in progress."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            live, self._live = list(self._live), set()
        for s in live:
            _abort(s)

    def drop_answers(self, n: int, path_suffix: str = LOG_BATCH) -> None:
        """The next ``n`` calls whose path ends with ``path_suffix`` reach the server, which
        answers; their answers are then dropped (the client's connection closes unanswered)."""
        with self._lock:
            self._drop[path_suffix] = self._drop.get(path_suffix, 0) + n

    def __enter__(self) -> "MlflowProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what crossed the wire

    def calls(self, path_suffix: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0].endswith(path_suffix)]

    def sent_metrics(self, run_id: str | None = None) -> list[SentMetric]:
        """Every metric entry of every ``log-batch`` call the server received (answered or not),
        in the order the calls arrived."""
        out = []
        for r in self.calls(LOG_BATCH):
            if r.status is None:       # never reached a live server
                continue
            doc = json.loads(r.body or b"{}")
            if run_id is not None and doc.get("run_id") != run_id:
                continue
            for m in doc.get("metrics", []):
                out.append(SentMetric(m["key"], int(m.get("step", 0)), int(m["timestamp"]),
                                      float(m["value"]), r.answered, r.status))
        return out

    def sends_per_step(self, key: str, run_id: str | None = None) -> Counter:
        """How many times the server received ``key`` at each step."""
        return Counter(m.step for m in self.sent_metrics(run_id) if m.key == key)

    # -- used by the handler

    def _take_drop(self, path: str) -> bool:
        with self._lock:
            for suffix, left in self._drop.items():
                if left > 0 and path.split("?")[0].endswith(suffix):
                    self._drop[suffix] = left - 1
                    return True
        return False


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:   # a client gone: not news
        pass


def assert_each_step_answered_once(proxy: MlflowProxy, run_id: str, keys, steps) -> dict:
    """The spool's rule at the wire: for each of ``keys``, exactly ``steps`` reached the server;
    every (key, step) reached it in exactly one answered ``log-batch`` call, the last one; any
    other send of it is an earlier one whose answer never came back, with the same timestamp
    and value (MLflow's SQL store keeps one row for identical key, timestamp, step and value).
    Returns {(key, step): number of sends}."""
    sends: dict[tuple[str, int], list[SentMetric]] = {}
    for m in proxy.sent_metrics(run_id):
        sends.setdefault((m.key, m.step), []).append(m)
    for key in keys:
        got = sorted(step for (k, step) in sends if k == key)
        assert got == list(steps), f"{key}: steps that reached the server {got}"
    for (key, step), ms in sends.items():
        answered = [m for m in ms if m.answered]
        assert len(answered) == 1, f"{key}@{step}: {len(answered)} answered sends: {ms}"
        assert ms[-1].answered, f"{key}@{step} sent again after an answered send: {ms}"
        assert len({(m.timestamp, m.value) for m in ms}) == 1, \
            f"{key}@{step} resent with another timestamp or value: {ms}"
    return {k: len(v) for k, v in sends.items()}


def _abort(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    owner: MlflowProxy
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:       # quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _forward(self) -> None:
        owner = self.owner
        with owner._lock:
            owner._live.add(self.connection)
        try:
            body = self._body()
            req = Request(self.command, self.path, body)
            with owner._lock:
                owner.requests.append(req)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            upstream = http.client.HTTPConnection(*owner.target, timeout=120)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
                data = resp.read()
            except OSError:
                self.close_connection = True          # as a dead server: no answer at all
                _abort(self.connection)
                return
            finally:
                upstream.close()
            req.status = resp.status
            if owner._take_drop(self.path):
                req.dropped = True                    # committed; the client never hears so
                self.close_connection = True
                _abort(self.connection)
                return
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP | {"server", "date"}:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            with owner._lock:
                owner._live.discard(self.connection)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward
