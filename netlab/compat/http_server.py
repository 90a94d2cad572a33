"""
The HTTP server with ``http.server``: ``GET /`` says ``Hello, world!``.

Like the lesson's server, a ``BaseHTTPRequestHandler`` answers; unlike it,
this one keeps connections alive (HTTP/1.1), serves many clients at once
(one thread each), and holds every request to netlab's limits. The handler
reads the request head and body itself, because ``http.server`` allows 64 KiB
lines, answers 501 to unknown methods, and ignores chunked bodies.

Routes: ``/`` (GET, HEAD), ``/echo`` (GET, HEAD, POST: the request reflected
as JSON) and ``/healthz`` (GET, HEAD); anything else is 404.

A request head must arrive whole within --head-timeout seconds of its first
byte, and its body within --body-timeout seconds after the head (408 after).

With ``--cert FILE --key FILE`` it serves HTTPS (stdlib ``ssl``): the
listening socket hands out connections wrapped without a handshake, and
each connection's thread does the handshake within --head-timeout seconds,
so a client that connects and says nothing cannot hold a thread for long.
A client that fails the handshake is logged in one line and dropped.
"""

import base64
import contextlib
import json
import logging
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from netlab.compat._common import close_tls, parse_args, run, tls_handshake

MAX_BODY = 1024 * 1024  # bytes of request body (413 above)
MAX_LINE = 8192  # bytes in the request line (414) or one header line (431)
MAX_HEAD = 16384  # bytes in all the header lines together (431)
MAX_HEADERS = 100  # header fields in one request (431)
LINGER = 2.0  # seconds to drain a refused client before closing

HELLO = b"Hello, world!"
# Credentials /echo never reflects: each value becomes REDACTED.
SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie"}
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
ROUTES = {
    "/": ("GET", "HEAD"),
    "/echo": ("GET", "HEAD", "POST"),
    "/healthz": ("GET", "HEAD"),
}
REFUSALS = {
    400: b"Bad request\n",
    413: b"Content too large\n",
    414: b"URI too long\n",
    408: b"Request timeout\n",
    431: b"Request header fields too large\n",
}
ABSOLUTE_FORM = re.compile(r"(?i)https?://")
# RFC 3986 host (a name, IPv4, or an IP literal in brackets) and optional port.
HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]*)?")
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")
CONTROL_BYTE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

log = logging.getLogger("http_server")


class Refused(Exception):
    """The request breaks a rule: answer ``status`` and close."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep connections alive between requests
    # Headers and body go out in two writes: without this, Nagle's algorithm
    # holds the body until the client's delayed ACK, 40 ms per response.
    disable_nagle_algorithm = True
    server_version = "netlab-compat"  # say nothing of the Python version
    sys_version = ""

    def setup(self):
        # StreamRequestHandler.setup() makes this the socket timeout: a client
        # silent this long (between requests too) is dropped.
        self.timeout = self.server.idle_timeout
        super().setup()
        host, port = self.client_address[:2]
        self.peer = f"{host}:{port}"

    def handle(self):
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                tls_handshake(self.connection, self.server.head_timeout)
            except OSError as error:  # ssl.SSLError, TimeoutError
                log.info("connection from %s: TLS handshake: %s", self.peer, error)
                return
        super().handle()

    def handle_one_request(self):
        # handle() calls this until close_connection is true.
        self.close_connection = True
        self.command, self.path, self.request_version = "-", "-", "HTTP/1.1"
        try:
            # Between requests, wait (up to the idle timeout) for a first byte.
            if not self.rfile.peek(1):
                return
            try:
                head_timeout = self.server.head_timeout
                if self.in_time(head_timeout, self.read_head) and not self.late:
                    body = self.in_time(self.server.body_timeout, self.read_body)
                    if not self.late:
                        self.route(body)
            except Refused as refusal:
                if not self.late:
                    self.refuse(refusal.status)
        except OSError as error:  # a timeout, or the client went away
            log.info("connection from %s closed: %s", self.peer, error)
            self.close_connection = True

    def in_time(self, seconds, read):
        """read(), within seconds: the head from its first byte
        (--head-timeout), then the body (--body-timeout).

        The socket timeout bounds each read, not the whole head or body: a
        client sending a byte a second would never be cut off. So a timer
        answers 408 and shuts the socket, which ends the blocked read. Over
        TLS the timer only shuts the socket: an OpenSSL connection must not
        be written in one thread while another reads it.
        """
        self.late = self.read_done = False
        self.deadline_lock = threading.Lock()
        timer = threading.Timer(seconds, self.too_late)
        timer.start()
        try:
            return read()
        finally:
            with self.deadline_lock:
                timer.cancel()
                self.read_done = True

    def too_late(self):
        with self.deadline_lock:
            if self.read_done:
                return
            self.late = True
            self.close_connection = True
            with contextlib.suppress(OSError):
                if not isinstance(self.connection, ssl.SSLSocket):
                    self.reply(408, REFUSALS[408])
                # socket.socket's shutdown, not SSLSocket's: that one would
                # drop the TLS state under the reading thread.
                socket.socket.shutdown(self.connection, socket.SHUT_RDWR)

    def read_head(self):
        """Read the request line and headers; False if the client closed."""
        line = self.rfile.readline(MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            line = self.rfile.readline(MAX_LINE + 1)  # one stray CRLF is allowed
        if not line:
            return False
        if len(line) > MAX_LINE:
            raise Refused(414)
        words = line.decode("latin-1").split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            raise Refused(400)
        self.command, self.path, self.request_version = words
        self.fields = self.read_fields()
        if ABSOLUTE_FORM.match(self.path):
            # "GET http://host/echo?x=1": serve /echo?x=1 for that host.
            target = urlsplit(self.path)
            self.fields = [f for f in self.fields if f[0] != "host"]
            self.fields.append(("host", target.netloc))
            self.path = (target.path or "/") + (
                "?" + target.query if target.query else ""
            )
        hosts = self.header("host")
        if self.request_version == "HTTP/1.1" and (
            len(hosts) != 1 or not HOST.fullmatch(hosts[0])
        ):
            raise Refused(400)
        tokens = {
            t.strip().lower() for v in self.header("connection") for t in v.split(",")
        }
        self.close_connection = self.request_version != "HTTP/1.1" or "close" in tokens
        return True

    def read_fields(self):
        """Read header (or trailer) lines up to the blank line, within limits."""
        fields, size = [], 0
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            size += len(line)
            if len(line) > MAX_LINE or size > MAX_HEAD or len(fields) > MAX_HEADERS:
                raise Refused(431)
            if line in (b"\r\n", b"\n"):
                return fields
            name, colon, value = line.decode("latin-1").partition(":")
            # No name, space before the colon, or a folded line: not guessed at.
            if not colon or not name or name != name.strip():
                raise Refused(400)
            # Nor control bytes (RFC 9110 5.5): they would reach the log.
            if CONTROL_BYTE.search(value.rstrip("\r\n")):
                raise Refused(400)
            fields.append((name.lower(), value.strip()))

    def header(self, name):
        return [value for field, value in self.fields if field == name]

    def read_body(self):
        lengths = self.header("content-length")
        codings = self.header("transfer-encoding")
        # Two ways to find the end of the body, or two lengths, is how
        # requests are smuggled past a proxy: refuse rather than pick one.
        if lengths and codings or len(set(lengths)) > 1:
            raise Refused(400)
        if codings:
            if [c.lower() for c in codings] != ["chunked"]:
                raise Refused(400)
            self.continue_if_expected()
            return self.read_chunked()
        if not lengths:
            return b""
        if not (lengths[0].isascii() and lengths[0].isdigit()):
            raise Refused(400)
        length = int(lengths[0])
        if length > MAX_BODY:
            raise Refused(413)  # before reading a byte of it
        self.continue_if_expected()
        body = self.rfile.read(length)
        if len(body) < length:
            raise Refused(400)  # the client stopped sending
        return body

    def read_chunked(self):
        """Decode a chunked body: each chunk is a hex size line, data, CRLF."""
        body = bytearray()
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            size = line.split(b";", 1)[0].strip()  # drop chunk extensions
            if len(line) > MAX_LINE or not CHUNK_SIZE.fullmatch(size):
                raise Refused(400)
            size = int(size, 16)
            if len(body) + size > MAX_BODY:
                raise Refused(413)
            if size == 0:
                self.read_fields()  # trailers: read and dropped
                return bytes(body)
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.read(2) != b"\r\n":
                raise Refused(400)
            body += data

    def continue_if_expected(self):
        # An HTTP/1.1 client that sent "Expect: 100-continue" waits for this
        # before it sends the body.
        expect = [v.lower() for v in self.header("expect")]
        if self.request_version == "HTTP/1.1" and "100-continue" in expect:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def route(self, body):
        path, _, query = self.path.partition("?")
        methods = ROUTES.get(path)
        if methods is None:
            self.reply(404, b"Not found\n")
        elif self.command not in methods:
            allow = {"Allow": ", ".join(methods)}
            self.reply(405, b"Method not allowed\n", headers=allow)
        elif path == "/":
            self.reply(200, HELLO)
        elif path == "/healthz":
            self.reply(200, to_json({"status": "ok"}), JSON)
        else:
            self.reply(200, to_json(self.reflect(path, query, body)), JSON)

    def reflect(self, path, query, body):
        try:
            text, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode("ascii"), "base64"
        headers = {}
        for name, value in self.fields:
            if name in SECRET_HEADERS:
                value = "REDACTED"
            headers.setdefault(name, []).append(value)
        host, port = self.client_address[:2]
        return {
            "method": self.command,
            "path": path,
            "query": parse_qs(query, keep_blank_values=True),
            "headers": headers,
            "body": text,
            "body_encoding": encoding,
            "client": {"host": host, "port": port},
        }

    def reply(self, status, body, content_type=TEXT, headers=None):
        """Send a whole response: always a Content-Length, never chunked."""
        self.send_response_only(status)
        self.send_header("Server", self.server_version)
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            body = b""  # the same headers as GET, and no body
        self.wfile.write(body)
        self.log_request(status, len(body))

    def refuse(self, status):
        """Answer a request that breaks a rule, then close the connection."""
        self.close_connection = True
        self.reply(status, REFUSALS[status])
        # Closing with unread input makes the kernel reset the connection,
        # which can destroy the answer before the client reads it. So: say
        # we are done writing, then drop what the client still sends, a while.
        if isinstance(self.connection, ssl.SSLSocket):
            self.wfile.flush()
            close_tls(self.connection)  # TLS says "done writing" first
        self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(LINGER)
        deadline = time.monotonic() + LINGER
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass

    def log_request(self, code="-", size="-"):
        log.info("%s %s %s %s bytes %s", self.command, self.path, code, size, self.peer)

    def log_message(self, format, *args):
        log.info("%s %s", self.peer, format % args)


def to_json(value):
    return json.dumps(value).encode() + b"\n"


class Server(ThreadingHTTPServer):
    context = None  # an ssl.SSLContext when serving HTTPS

    def get_request(self):
        conn, addr = super().get_request()
        if self.context is not None:
            # The handshake would block the accepting thread: Handler.handle()
            # does it, in the connection's own thread.
            conn = self.context.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False
            )
        return conn, addr

    def shutdown_request(self, request):
        if isinstance(request, ssl.SSLSocket):
            close_tls(request)  # the end, said in TLS, then the TCP close
        super().shutdown_request(request)


def serve(args):
    # ThreadingHTTPServer's threads are daemon threads: a stop does not wait
    # for clients that keep their connections open.
    with Server((args.host, args.port), Handler) as server:
        server.context = args.ssl
        server.idle_timeout = args.idle_timeout
        server.head_timeout = args.head_timeout
        server.body_timeout = args.body_timeout
        host, port = server.server_address[:2]
        log.info("listening on %s port %d", host, port)
        server.serve_forever()


def main(argv=None):
    head = ("head-timeout", 10.0, "seconds to send a whole request head")
    body = ("body-timeout", 60.0, "seconds to send a whole request body")
    return run(serve, parse_args(__doc__, 8080, argv, timeouts=[head, body]))


if __name__ == "__main__":
    raise SystemExit(main())
