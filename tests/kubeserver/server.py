"""HTTP plumbing and lifecycle: a bounded, loopback-only, threaded HTTP/1.1 server.

Not pure (sockets, threads).  One thread per connection (keep-alive, as urllib3 uses it), at
most `max_connections` at once (more are answered 503 and closed); idle connections close
after `idle_timeout_s`; watches are streamed with chunked transfer encoding so the client
sees each event as it happens.  `stop()` ends watches, closes every open connection and
joins the threads, so nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import kubernetes.client

from .handlers import Api, Response
from .rbac import ADMIN_TOKEN, CONTROLLER_TOKEN, RbacPolicy, UserInfo, default_tokens
from .storage import Clock, Store, utc_now

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RBAC_PATH = PROJECT_ROOT / "manifests" / "base" / "rbac.yaml"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Keep-alive responses written in pieces would otherwise wait for the client's delayed
    # ACK (Nagle): ~40 ms per request.
    disable_nagle_algorithm = True
    server: _HttpServer

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass  # quiet: the tests assert on responses, not on an access log

    def _serve(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server.api.handle(self.command, url.path, query, headers, body)
        if response.stream is not None:
            self._send_stream(response)
        else:
            self._send(response)

    def _send(self, response: Response) -> None:
        if isinstance(response.body, str):
            payload, content_type = response.body.encode(), "text/plain"
        else:
            payload, content_type = json.dumps(response.body).encode(), "application/json"
        self.send_response(response.code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_stream(self, response: Response) -> None:
        self.send_response(response.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in response.stream or ():
                self.wfile.write(b"%X\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away mid-watch

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: Api, max_connections: int,
                 idle_timeout_s: float) -> None:
        self.api = api
        self.idle_timeout_s = idle_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._conn_threads: list[threading.Thread] = []
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:
        if not self._slots.acquire(blocking=False):
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                            b"Connection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open.add(request)
            self._conn_threads = [t for t in self._conn_threads if t.is_alive()]
            thread = threading.Thread(target=self.process_request_thread,
                                      args=(request, client_address), daemon=True)
            self._conn_threads.append(thread)
        thread.start()

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            self._slots.release()

    def close_connections(self, join_s: float) -> None:
        with self._open_lock:
            for request in self._open:
                with contextlib.suppress(OSError):
                    request.shutdown(socket.SHUT_RDWR)
            threads = list(self._conn_threads)
        for thread in threads:
            thread.join(timeout=join_s)


class KubeServer:
    """The test API server: `start()`, then point the official client at `url`."""

    def __init__(self, rbac_path: Path | str = DEFAULT_RBAC_PATH, *,
                 tokens: dict[str, UserInfo] | None = None, clock: Clock = utc_now,
                 max_watch_s: float = 30.0, max_connections: int = 64,
                 idle_timeout_s: float = 30.0, history: int = 10_000) -> None:
        rbac_path = Path(rbac_path)
        if not rbac_path.is_file():
            raise FileNotFoundError(f"RBAC manifest not found at {rbac_path}: the test API "
                                    "server authorizes the controller only by that file")
        self.rbac_path = rbac_path
        self.store = Store(clock, history)
        self.policy = RbacPolicy.from_manifest(rbac_path)
        self.tokens = default_tokens() if tokens is None else tokens
        self._stopping = threading.Event()
        self.api = Api(self.store, self.policy, self.tokens, max_watch_s, self._stopping.is_set)
        self._max_connections = max_connections
        self._idle_timeout_s = idle_timeout_s
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> KubeServer:
        self._httpd = _HttpServer(("127.0.0.1", 0), self.api, self._max_connections,
                                  self._idle_timeout_s)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name="kubeserver")
        self._thread.start()
        return self

    def stop(self, join_s: float = 5.0) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self.store.close()
        self._httpd.shutdown()
        self._httpd.close_connections(join_s)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=join_s)
        self._httpd = None

    def __enter__(self) -> KubeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_token(self, token: str, user: UserInfo) -> None:
        self.tokens[token] = user

    def client(self, token: str = CONTROLLER_TOKEN) -> kubernetes.client.ApiClient:
        """An official-client ApiClient for this server, authenticating with `token`."""
        config = kubernetes.client.Configuration(host=self.url)
        config.api_key = {"BearerToken": token}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        return kubernetes.client.ApiClient(config)

    def admin_client(self) -> kubernetes.client.ApiClient:
        return self.client(ADMIN_TOKEN)
