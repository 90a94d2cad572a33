"""
Mutation check: break netlab on purpose, one plausible mistake at a time, and
see that the suite notices.

Each :class:`Mutant` names a file, an exact piece of its text, what to put
instead (an off-by-one, a constant changed, a branch inverted, a timer never
started, a wrong status), the trial names that should fail, and the
guarantee in words. For each mutant this copies the tree to a scratch
directory, applies the one change there, and runs the named tests with the
scratch copy first on ``PYTHONPATH`` (and as the working directory, so that
child processes such as twistd import it too)::

    python -m tests.mutants --list          # the mutants, one a line
    python -m tests.mutants                 # all of them
    python -m tests.mutants per-ip-off-by-one date-1970

It prints ``caught`` or ``SURVIVED`` for each, and exits non-zero if any
survived, or if a mutant's original text is no longer in its file exactly
once (so a refactor cannot leave the list checking nothing).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from tests.support import CHECKOUT, NOT_SOURCE

ROOT = CHECKOUT
#: Seconds one mutant's tests may run before the run counts as a hang.
TIMEOUT = 600.0


@dataclass(frozen=True)
class Mutant:
    """
    One deliberate mistake.

    :ivar name: a short unique name, for the command line.
    :ivar path: the file, relative to the repository root.
    :ivar original: text that occurs in it exactly once.
    :ivar replacement: what the mutant puts instead.
    :ivar tests: trial names (modules, classes or methods) that must fail.
    :ivar guarantee: what the mistake breaks, in words.
    """

    name: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    guarantee: str

    def apply(self, root: pathlib.Path) -> None:
        """
        Make the change in the tree at ``root``.

        :raises ValueError: if the original text is not there exactly once.
        """
        target = root / self.path
        text = target.read_text()
        count = text.count(self.original)
        if count != 1:
            raise ValueError(
                f"{self.name}: original text found {count} times in {self.path}"
            )
        target.write_text(text.replace(self.original, self.replacement))


def m(
    name: str, path: str, original: str, replacement: str, tests: str, guarantee: str
) -> Mutant:
    return Mutant(name, path, original, replacement, tuple(tests.split()), guarantee)


# The tests each area's mutants run.
_ADMISSION = "tests.test_drain tests.test_tcp_user"
_HTTP = (
    "tests.test_http tests.test_http_fastpath tests.hostile.test_http tests.test_drain"
)
_TCP = "tests.test_tcp tests.test_tcp_user tests.hostile.test_tcp"
_WS = "tests.test_ws_handler tests.hostile.test_websocket tests.test_ws_fastpath"
_TLS = "tests.test_tls tests.hostile.test_tls"

MUTANTS: tuple[Mutant, ...] = (
    # The three the issue names.
    m(
        "fastpath-off-for-root",
        "netlab/services/hello.py",
        'if path == b"/":\n            return self\n',
        'if path == b"/":\n            return None\n',
        "tests.test_http_fastpath",
        "GET / is answered from the request head, without a twisted.web Request",
    ),
    m(
        "date-1970",
        "netlab/http.py",
        "route.response(_http_date(time.time()), is_head)",
        "route.response(_http_date(0), is_head)",
        "tests.test_http_fastpath",
        "the fast path's Date header is the current time",
    ),
    m(
        "per-ip-off-by-one",
        "netlab/tracking.py",
        '_host(address) or ""] >= self.limits.max_per_ip:',
        '_host(address) or ""] >= self.limits.max_per_ip - 1:',
        "tests.test_drain.AdmissionTests",
        "the connection at the per-IP cap is served, the one over it refused",
    ),
    # Admission and drain (netlab.tracking).
    m(
        "per-ip-lenient",
        "netlab/tracking.py",
        '_host(address) or ""] >= self.limits.max_per_ip:',
        '_host(address) or ""] > self.limits.max_per_ip:',
        _ADMISSION,
        "a connection over the per-IP cap is refused",
    ),
    m(
        "max-connections-lenient",
        "netlab/tracking.py",
        "len(self.connections) >= self.limits.max_connections:",
        "len(self.connections) > self.limits.max_connections:",
        _ADMISSION,
        "a connection over --max-connections is refused",
    ),
    m(
        "max-connections-strict",
        "netlab/tracking.py",
        "len(self.connections) >= self.limits.max_connections:",
        "len(self.connections) >= self.limits.max_connections - 1:",
        _ADMISSION,
        "the connection at --max-connections is served",
    ),
    m(
        "per-ip-slot-never-freed",
        "netlab/tracking.py",
        "self._per_host[host] -= 1",
        "self._per_host[host] -= 0",
        _ADMISSION,
        "a closed connection frees its per-IP slot",
    ),
    m(
        "draining-admits",
        "netlab/tracking.py",
        'if self.draining:\n            reason = "draining"',
        'if False:\n            reason = "draining"',
        _ADMISSION,
        "a draining service refuses new connections",
    ),
    m(
        "refusal-500",
        "netlab/tracking.py",
        "refusal(\n                503,",
        "refusal(\n                500,",
        _ADMISSION,
        "HTTP and WebSocket clients over the caps get 503",
    ),
    m(
        "no-retry-after",
        "netlab/tracking.py",
        '[("Retry-After", str(RETRY_AFTER))]',
        "[]",
        _ADMISSION,
        "a 503 over the caps carries Retry-After",
    ),
    m(
        "tcp-refusal-kept-open",
        "netlab/tracking.py",
        "    def connectionMade(self) -> None:\n"
        "        self.transport.abortConnection()",
        "    def connectionMade(self) -> None:\n        pass",
        _ADMISSION,
        "a TCP connection over the caps is closed at once",
    ),
    m(
        "drain-never-aborts",
        "netlab/tracking.py",
        ".addTimeout(seconds, reactor)",
        ".addTimeout(seconds * 1000, reactor)",
        "tests.test_drain tests.test_tcp_user tests.test_twistd",
        "connections left after --drain-seconds are aborted",
    ),
    # Limits themselves (netlab.limits).
    m(
        "limits-accept-zero",
        "netlab/limits.py",
        "if not (value > 0 and math.isfinite(value)):",
        "if not (value >= 0 and math.isfinite(value)):",
        "tests.test_limits tests.test_tap",
        "a limit of 0 is refused",
    ),
    m(
        "options-accept-zero",
        "netlab/limits.py",
        "if not (number > 0 and math.isfinite(number)):",
        "if not (number >= 0 and math.isfinite(number)):",
        "tests.test_limits tests.test_tap tests.test_cli",
        "--max-body 0 (any limit option of 0) is a usage error",
    ),
    m(
        "default-max-body",
        "netlab/limits.py",
        "max_body: int = 1024 * 1024",
        "max_body: int = 1000 * 1000",
        "tests.test_limits",
        "the default --max-body is 1 MiB",
    ),
    m(
        "default-per-ip",
        "netlab/limits.py",
        "max_per_ip: int = 1000",
        "max_per_ip: int = 100",
        "tests.test_limits",
        "the default --max-per-ip is 1000",
    ),
    # HTTP (netlab.http).
    m(
        "body-length-off-by-one",
        "netlab/http.py",
        "if length is not None and length > self.channel.limits.max_body:",
        "if length is not None and length >= self.channel.limits.max_body:",
        _HTTP + " tests.test_http_conformance",
        "a body of exactly --max-body bytes is served",
    ),
    m(
        "body-chunks-unbounded",
        "netlab/http.py",
        "if self.body_size > self.channel.limits.max_body:",
        "if self.body_size > 2 * self.channel.limits.max_body:",
        _HTTP,
        "a chunked body over --max-body is refused with 413",
    ),
    m(
        "announced-chunk-ignored",
        "netlab/http.py",
        "return announced > self.limits.max_body",
        "return False",
        _HTTP,
        "a chunk announced larger than --max-body is refused before it arrives",
    ),
    m(
        "header-block-off-by-one",
        "netlab/http.py",
        "if size > self._max_header_block or",
        "if size >= self._max_header_block or",
        _HTTP,
        "a header block of exactly --max-header-block bytes is served",
    ),
    m(
        "header-count-off-by-one",
        "netlab/http.py",
        "or self._header_count > self._max_headers:",
        "or self._header_count > self._max_headers + 1:",
        _HTTP,
        "--max-headers + 1 header fields get 431",
    ),
    m(
        "request-line-limit-loose",
        "netlab/http.py",
        "self.MAX_LENGTH = self.limits.max_request_line",
        "self.MAX_LENGTH = self.limits.max_request_line * 2",
        _HTTP,
        "a request line over --max-request-line gets 414",
    ),
    m(
        "request-line-off-by-one",
        "netlab/http.py",
        "self.MAX_LENGTH = self.limits.max_request_line",
        "self.MAX_LENGTH = self.limits.max_request_line - 1",
        _HTTP,
        "a request line of exactly --max-request-line bytes is served",
    ),
    m(
        "414-as-400",
        "netlab/http.py",
        'self.refuse(414, b"URI too long\\n")',
        'self.refuse(400, b"URI too long\\n")',
        _HTTP,
        "a request line over the limit gets 414, not another status",
    ),
    m(
        "head-deadline-is-idle",
        "netlab/http.py",
        "self._set_deadline(self.limits.head_timeout)",
        "self._set_deadline(self.limits.idle_timeout)",
        _HTTP,
        "a request head must be in within --head-timeout (408)",
    ),
    m(
        "no-body-deadline",
        "netlab/http.py",
        "if self.length != 0 and not self.refused:",
        "if False:",
        _HTTP,
        "a request body must be in within --body-timeout (408)",
    ),
    m(
        "408-as-400",
        "netlab/http.py",
        'self.refuse(408, b"Request timeout\\n")',
        'self.refuse(400, b"Request timeout\\n")',
        _HTTP,
        "a head or body past its deadline gets 408",
    ),
    m(
        "sooner-body-deadline-ignored",
        "netlab/http.py",
        "elif timer.getTime() > deadline:",
        "elif timer.getTime() < deadline:",
        _HTTP,
        "a body deadline sooner than the head's still holds",
    ),
    m(
        "refusal-never-closes",
        "netlab/http.py",
        "self._linger = self.callLater("
        "_LINGER_SECONDS, self.transport.abortConnection)",
        "pass",
        _HTTP,
        "after a refusal the connection is closed within the linger",
    ),
    m(
        "fastpath-header-block",
        "netlab/http.py",
        "or len(block) + 2 > limits.max_header_block",
        "or len(block) > limits.max_header_block + 2",
        "tests.test_http_fastpath",
        "the fast path refuses (leaves to 431) heads over --max-header-block",
    ),
    m(
        "fastpath-header-count",
        "netlab/http.py",
        "if len(headers) > limits.max_headers:",
        "if len(headers) > limits.max_headers + 1:",
        "tests.test_http_fastpath",
        "the fast path leaves heads over --max-headers to the 431",
    ),
    m(
        "fastpath-any-host",
        "netlab/http.py",
        "if host is None or _HOST.fullmatch(host) is None:",
        "if host is None:",
        "tests.test_http_fastpath",
        "the fast path answers only a head with one valid Host",
    ),
    m(
        "fastpath-head-has-body",
        "netlab/http.py",
        'b"" if head else self.body,',
        "self.body,",
        "tests.test_http_fastpath",
        "a HEAD answered from the head has no body",
    ),
    m(
        "fastpath-content-length",
        "netlab/http.py",
        "            len(self.body),\n        )",
        "            len(self.body) + 1,\n        )",
        "tests.test_http_fastpath",
        "a Fixed answer's Content-Length is its body's",
    ),
    m(
        "http-drain-keeps-alive",
        "netlab/http.py",
        "            self.persistent = False\n"
        "            for request in self.requests:",
        "            self.persistent = True\n            for request in self.requests:",
        _HTTP,
        "a request under way on stop is answered and then the connection closes",
    ),
    m(
        "date-cached-forever",
        "netlab/logs.py",
        "if second != self._second:",
        "if self._second is None:",
        "tests.test_http_fastpath tests.test_logs",
        "the Date header (and log time) moves on with the clock",
    ),
    m(
        "http-control-byte-kept",
        "netlab/http.py",
        "            if _CONTROL_BYTE.search(line):",
        "            if False:",
        _HTTP,
        "a header value with a control byte (other than HTAB) is refused with 400",
    ),
    m(
        "http-del-in-target",
        "netlab/http.py",
        'if b"\\x7f" in path:',
        'if b"\\x00" in path:',
        _HTTP,
        "DEL in the request target is refused with 400",
    ),
    m(
        "http-missing-host",
        "netlab/http.py",
        "len(hosts) != 1 or not _HOST.fullmatch(hosts[0])",
        "len(hosts) > 1 or not _HOST.fullmatch((hosts or [b'x'])[0])",
        _HTTP,
        "an HTTP/1.1 request without a Host header is refused with 400",
    ),
    m(
        "http-tls-hello-waits",
        "netlab/http.py",
        "if self._awaiting_request_line and _TLS_HELLO.match(data) and not",
        "if False and self._awaiting_request_line and _TLS_HELLO.match(data) and not",
        _HTTP + " tests.test_tls",
        "a TLS ClientHello on a plain HTTP port is closed at once",
    ),
    m(
        "503-never-closes",
        "netlab/tracking.py",
        "            _LINGER_SECONDS, self.transport.abortConnection\n",
        "            _LINGER_SECONDS * 1000, self.transport.abortConnection\n",
        "tests.test_http " + _ADMISSION,
        "after a 503, a client that does not close is cut off within the linger",
    ),
    m(
        "drain-ignores-protocols-own",
        "netlab/tracking.py",
        "            if finish is not None:\n                finish()",
        "            if False:\n                finish()",
        "tests.test_drain tests.test_tcp_user " + _WS,
        "on stop, each connection finishes its own way (WebSocket 1001, echo)",
    ),
    m(
        "echo-no-backpressure",
        "netlab/tcp.py",
        "        self.paused = True\n        self.transport.pauseProducing()",
        "        self.paused = True",
        _TCP + " tests.test_backpressure",
        "the echo stops reading from a client that does not read",
    ),
    m(
        "jwt-iat-unchecked",
        "netlab/auth.py",
        "if issued is not None and now + self.leeway < issued:",
        "if False:",
        "tests.test_auth",
        "a token issued in the future (beyond the leeway) is refused",
    ),
    m(
        "tls-client-accepts-1.0",
        "netlab/tls.py",
        "                raiseMinimumTo=ssl.TLSVersion.TLSv1_2,",
        "                raiseMinimumTo=ssl.TLSVersion.TLSv1,",
        _TLS,
        "netlab's clients speak TLS 1.2 or later only",
    ),
    # TCP (netlab.tcp, the greeting).
    m(
        "tcp-no-idle-timeout",
        "netlab/tcp.py",
        "self.setTimeout(self.factory.limits.idle_timeout)",
        "self.setTimeout(None)",
        _TCP,
        "a silent TCP connection is dropped after --idle-timeout",
    ),
    m(
        "tcp-idle-not-reset",
        "netlab/tcp.py",
        "        self.resetTimeout()\n        self.bytes_in += len(data)",
        "        self.bytes_in += len(data)",
        _TCP,
        "data received resets the idle timeout",
    ),
    m(
        "tcp-idle-loses-gracefully",
        "netlab/tcp.py",
        "        # close waiting on its write buffer forever.\n"
        "        self.transport.abortConnection()",
        "        # close waiting on its write buffer forever.\n"
        "        self.transport.loseConnection()",
        _TCP,
        "an idle peer that stopped reading is aborted, not waited on",
    ),
    # WebSocket (netlab.websocket).
    m(
        "ws-message-unbounded",
        "netlab/websocket.py",
        "maxMessagePayloadSize=limits.max_message,",
        "maxMessagePayloadSize=0,",
        _WS,
        "a message over --max-message (in fragments) closes with 1009",
    ),
    m(
        "ws-fastpath-frame-limit",
        "netlab/websocket.py",
        "if size > limit:  # autobahn's 1009",
        "if size > limit + 1:  # autobahn's 1009",
        _WS,
        "a frame of --max-message + 1 bytes closes with 1009 on the fast path",
    ),
    m(
        "ws-no-open-handshake-timeout",
        "netlab/websocket.py",
        "openHandshakeTimeout=limits.handshake_timeout,",
        "openHandshakeTimeout=0,",
        _WS,
        "an opening handshake not done within --handshake-timeout is dropped",
    ),
    m(
        "ws-no-close-handshake-timeout",
        "netlab/websocket.py",
        "closeHandshakeTimeout=limits.handshake_timeout,",
        "closeHandshakeTimeout=0,",
        _WS,
        "a closing handshake not answered within --handshake-timeout is dropped",
    ),
    m(
        "ws-no-pings",
        "netlab/websocket.py",
        "autoPingInterval=limits.ping_interval,",
        "autoPingInterval=0,",
        _WS,
        "the server pings every --ping-interval",
    ),
    m(
        "ws-no-ping-timeout",
        "netlab/websocket.py",
        "autoPingTimeout=limits.ping_timeout,",
        "autoPingTimeout=0,",
        _WS,
        "a peer that does not answer a ping within --ping-timeout is dropped",
    ),
    m(
        "ws-origin-400",
        "netlab/websocket.py",
        'raise ConnectionDeny(403, "origin not allowed")',
        'raise ConnectionDeny(400, "origin not allowed")',
        _WS,
        "a foreign Origin is refused with 403",
    ),
    m(
        "ws-version-400",
        "netlab/websocket.py",
        "code, responseHeaders = 426, [",
        "code, responseHeaders = 400, [",
        _WS,
        "an unsupported WebSocket version gets 426 naming 13",
    ),
    m(
        "ws-handler-error-1000",
        "netlab/websocket.py",
        'self.close_with(1011, "internal error")',
        'self.close_with(1000, "internal error")',
        _WS,
        "a handler that raises closes the connection with 1011",
    ),
    m(
        "ws-overflow-code",
        "netlab/websocket.py",
        "    overflow_code: int = 1008",
        "    overflow_code: int = 1011",
        _WS,
        "an overflowing send queue closes with 1008 by default",
    ),
    m(
        "ws-queue-unbounded",
        "netlab/websocket.py",
        "self._queued + len(payload) + QUEUED_MESSAGE_COST <= self.factory.max_queue",
        "self._queued + len(payload) <= 2 * self.factory.max_queue",
        _WS + " tests.test_backpressure",
        "the send queue holds at most max_queue bytes",
    ),
    m(
        "ws-drain-1000",
        "netlab/websocket.py",
        "code=self.CLOSE_STATUS_CODE_GOING_AWAY,",
        "code=self.CLOSE_STATUS_CODE_NORMAL,",
        _WS,
        "on stop, WebSockets close with 1001",
    ),
    # TLS (netlab.tls).
    m(
        "tls-handshake-deadline-inverted",
        "netlab/tls.py",
        "        if not self._handshakeDone:\n",
        "        if self._handshakeDone:\n",
        _TLS,
        "a TLS handshake not done within the deadline is dropped",
    ),
    m(
        "tls-server-accepts-1.0",
        "netlab/tls.py",
        "raiseMinimumTo=_VERSIONS[min_tls],",
        "raiseMinimumTo=ssl.TLSVersion.TLSv1,",
        _TLS,
        "the server speaks TLS 1.2 or later only",
    ),
    m(
        "mtls-optional",
        "netlab/tls.py",
        'requireCertificate=_CLIENT_CERT[client_cert or "required"],',
        'requireCertificate=_CLIENT_CERT[client_cert or "optional"],',
        _TLS,
        "with clientCA=, a client without a certificate is refused",
    ),
    # Bearer tokens (netlab.auth).
    m(
        "jwt-exp-boundary",
        "netlab/auth.py",
        "if now >= expires + self.leeway:",
        "if now > expires + self.leeway:",
        "tests.test_auth",
        "a token is refused from exp + leeway on",
    ),
    m(
        "jwt-nbf-sign",
        "netlab/auth.py",
        "if not_before is not None and now + self.leeway < not_before:",
        "if not_before is not None and now - self.leeway < not_before:",
        "tests.test_auth",
        "nbf is checked with the leeway in the token's favour",
    ),
    m(
        "jwt-token-size",
        "netlab/auth.py",
        'raise _Refused("empty token")\n        if len(token) > self.max_token_size:',
        'raise _Refused("empty token")\n'
        "        if len(token) > self.max_token_size + 1:",
        "tests.test_auth",
        "a token over the size limit is refused",
    ),
    m(
        "jwt-alg-confusion",
        "netlab/auth.py",
        "if algorithm not in key.algorithms:",
        "if algorithm not in _SUPPORTED_ALGORITHMS:",
        "tests.test_auth",
        "a token's alg must be one its key allows",
    ),
    m(
        "jwt-short-secret",
        "netlab/auth.py",
        "MIN_SECRET_SIZE = 32",
        "MIN_SECRET_SIZE = 16",
        "tests.test_auth",
        "an HMAC secret shorter than 32 bytes is refused",
    ),
    m(
        "jwt-leeway",
        "netlab/auth.py",
        "DEFAULT_LEEWAY = 30.0",
        "DEFAULT_LEEWAY = 300.0",
        "tests.test_auth",
        "the clock-skew leeway is 30 s",
    ),
    # The one-deadline client exchange (netlab.deadline).
    m(
        "deadline-never-fires",
        "netlab/deadline.py",
        "return exchange.addTimeout(seconds, clock, onTimeoutCancel=timed_out)",
        "return exchange",
        "tests.test_tcp tests.test_cli tests.test_http tests.test_auth",
        "a client exchange fails with TimeoutError after its deadline",
    ),
    m(
        "deadline-wrong-error",
        "netlab/deadline.py",
        "        if isinstance(result, Failure):\n",
        "        if not isinstance(result, Failure):\n",
        "tests.test_tcp tests.test_cli tests.test_http tests.test_auth",
        "a timed-out exchange fails with TimeoutError whatever phase was cut",
    ),
    # The flushing transport (netlab.transport).
    m(
        "flush-never",
        "netlab/transport.py",
        "            if self._tempDataLen and not self._flushed_later():\n",
        "            if False:\n",
        "tests.test_transport",
        "what a read wrote is sent once the read is handled",
    ),
    m(
        "flush-bypasses-tls",
        "netlab/transport.py",
        "        if self.dataBuffer or self.TLS:\n",
        "        if self.dataBuffer:\n",
        "tests.test_transport",
        "after startTLS, writes go through the TLS layer",
    ),
    m(
        "flush-partial-resent",
        "netlab/transport.py",
        "self.offset = sent if isinstance(sent, int) and sent > 0 else 0",
        "self.offset = 0",
        "tests.test_transport",
        "a partly sent reply is not sent twice",
    ),
    m(
        "flush-due-never-scheduled",
        "netlab/transport.py",
        "            self.reactor.callLater(0, self._flush_due)\n",
        "",
        "tests.test_transport",
        "replies held for the end of the turn are sent",
    ),
    m(
        "turn-end-never",
        "netlab/transport.py",
        "        if self._asyncio:\n            return False\n",
        "        if True:\n            return False\n",
        "tests.test_transport",
        "writes made outside a read leave at the turn's end, unwatched",
    ),
    m(
        "prompt-buffers",
        "netlab/transport.py",
        "    def write(self, data: bytes) -> None:\n        if not self._at_once():\n",
        "    def write(self, data: bytes) -> None:\n        if True:\n",
        "tests.test_transport",
        "a prompt client's write is on the wire when it returns",
    ),
    m(
        "prompt-overtakes",
        "netlab/transport.py",
        "            and not self.dataBuffer\n            and not self._tempDataLen\n",
        "            and not self._tempDataLen\n",
        "tests.test_transport",
        "a prompt client's writes never overtake what Twisted still holds",
    ),
    # Publish/subscribe across processes (netlab.pubsub).
    m(
        "publish-delivers-at-once",
        "netlab/pubsub.py",
        "        if self._waiting_size > self.max_waiting:\n",
        "        if True:\n",
        "tests.test_pubsub",
        "a publish is delivered here at the end of the reactor's turn",
    ),
    m(
        "publish-waiting-unbounded",
        "netlab/pubsub.py",
        "        if self._waiting_size > self.max_waiting:\n",
        "        if False:\n",
        "tests.test_pubsub",
        "past max_waiting bytes, waiting publishes are delivered at once",
    ),
    m(
        "broker-link-buffers",
        "netlab/pubsub.py",
        "            prompt(self.reactor), address.host",
        "            self.reactor, address.host",
        "tests.test_pubsub",
        "a publish leaves for the broker at once, not on the next turn",
    ),
    m(
        "broker-reply-unbounded",
        "netlab/pubsub.py",
        "if held > self.link.broker.max_bulk + _REPLY_OVERHEAD and self.connected:",
        "if False:",
        "tests.test_pubsub",
        "a reply from Redis too large to hold drops the connection",
    ),
    # The contracts hold what the plugins serve.
    m(
        "contracts-on-stock-port",
        "tests/support.py",
        "port = await plugin_endpoint(description).listen(factory)",
        "from twisted.internet.endpoints import serverFromString\n\n"
        "        port = await serverFromString(reactor, description).listen(factory)",
        "tests.test_contract_listeners",
        "the conformance suites' servers listen as the plugins do",
    ),
    m(
        "plugins-on-stock-port",
        "netlab/tap/__init__.py",
        "reactor = flushing(_reactor)",
        "reactor = _reactor",
        "tests.test_contract_listeners",
        "the plugins serve on the flushing transport",
    ),
    m(
        "testing-serve-on-stock-port",
        "netlab/testing.py",
        "await serverFromString(flushing(reactor), description)",
        "await serverFromString(reactor, description)",
        "tests.test_contract_listeners",
        "netlab.testing.serve (the hostile suites') serves as the plugins do",
    ),
    # The twins, where the conformance suites cover them.
    m(
        "twin-http-body-off-by-one",
        "netlab/compat/http_server.py",
        "if length > MAX_BODY:",
        "if length >= MAX_BODY:",
        "tests.test_http_conformance.HttpServerHTTPContract",
        "the http.server twin serves a body of exactly 1 MiB",
    ),
    m(
        "twin-http-header-count",
        "netlab/compat/http_server.py",
        "or len(fields) > MAX_HEADERS:",
        "or len(fields) > MAX_HEADERS + 1:",
        "tests.test_http_conformance.HttpServerHTTPContract",
        "the http.server twin answers 101 header fields with 431",
    ),
)


def by_name(names: list[str]) -> list[Mutant]:
    """
    :return: the mutants named (all when ``names`` is empty).
    :raises KeyError: for a name that is not a mutant's.
    """
    known = {mutant.name: mutant for mutant in MUTANTS}
    return [known[name] for name in names] if names else list(MUTANTS)


def run(mutant: Mutant, timeout: float = TIMEOUT) -> tuple[str, float, str]:
    """
    Apply ``mutant`` to a scratch copy of the tree and run its tests there.

    :return: the verdict (``caught by TEST``, ``caught (timeout)`` or
        ``SURVIVED``), the seconds it took and the tail of trial's output.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="netlab-mutant-") as scratch:
        tree = pathlib.Path(scratch) / "tree"
        shutil.copytree(ROOT, tree, ignore=NOT_SOURCE)
        mutant.apply(tree)
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
        command = [sys.executable, "-m", "twisted.trial", "--exitfirst"]
        # A session of its own: on a timeout, trial and whatever it started
        # (twistd, twins) are ended together.
        child = subprocess.Popen(
            [*command, *mutant.tests],
            cwd=tree,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return "caught (timeout)", time.monotonic() - started, ""
    lines = out.strip().splitlines()
    if child.returncode == 0:
        return "SURVIVED", time.monotonic() - started, "\n".join(lines[-3:])
    # After its tree of results, trial names each failed test on a line of
    # its own, after its traceback.
    summary = out.partition("\n" + "=" * 79 + "\n")[2].splitlines()
    failed = [line for line in summary if re.fullmatch(r"tests\.[\w.]+", line)]
    verdict = f"caught by {failed[0]}" if failed else "caught"
    return verdict, time.monotonic() - started, "\n".join(lines[-3:])


def stale(mutants: list[Mutant]) -> list[str]:
    """
    :return: a line for each mutant whose original text is not in its file
        exactly once.
    """
    problems = []
    for mutant in mutants:
        text = (ROOT / mutant.path).read_text()
        count = text.count(mutant.original)
        if count != 1:
            problems.append(f"{mutant.name}: original text found {count} times")
    return problems


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutants", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="mutants to run")
    parser.add_argument("--list", action="store_true", help="list the mutants")
    parser.add_argument(
        "--timeout", type=float, default=TIMEOUT, help="seconds per mutant"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show trial's last lines"
    )
    options = parser.parse_args(argv)
    try:
        mutants = by_name(options.names)
    except KeyError as error:
        parser.error(f"no mutant named {error}")
    if options.list:
        for mutant in mutants:
            say(f"{mutant.name}: {mutant.path}: {mutant.guarantee}")
        return 0
    problems = stale(mutants)
    for problem in problems:
        say(f"STALE {problem}")
    survived = 0
    for mutant in mutants:
        if any(p.startswith(f"{mutant.name}:") for p in problems):
            continue
        verdict, seconds, tail = run(mutant, options.timeout)
        survived += verdict == "SURVIVED"
        say(f"{mutant.name:32} {seconds:6.1f}s  {verdict}")
        if options.verbose or verdict == "SURVIVED":
            say("    " + tail.replace("\n", "\n    "))
    say(f"{len(mutants) - survived - len(problems)} caught, {survived} survived")
    return 1 if survived or problems else 0


if __name__ == "__main__":
    sys.exit(main())
