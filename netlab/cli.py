"""
The ``netlab`` command: talk to netlab's services (or any like them) from a shell.

Exit status: 0 when the server answered, 1 when the network failed (refused,
timed out, reset, name not found), 2 for a usage mistake such as a bad
endpoint string, 130 when interrupted (Ctrl-C). Every failure is one line on
standard error.

Options go anywhere among the arguments, as curl's and GNU tools' do
(``netlab get URL -H 'X: y'``); ``--`` ends them, so that a message may
start with ``-`` (``netlab echo ENDPOINT -- -n``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from hyperlink import DecodedURL
from twisted.internet import defer, error, task
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from netlab import auth, certs, http, tcp, tls, websocket
from netlab.commandline import CommandOptions
from netlab.deadline import with_deadline
from netlab.services import echo, greeting
from netlab.tools import bench
from netlab.tools.bench.options import BenchOptions

EXIT_NETWORK = 1
EXIT_USAGE = 2
#: Ctrl-C: 128 + SIGINT, the status a shell reports for it.
EXIT_INTERRUPTED = 130

#: Where ``netlab get`` and ``netlab ws`` find a bearer token by default.
TOKEN_VARIABLE = "NETLAB_TOKEN"


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be positive, not {value}")
    return number


def _finite_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"must be a number, not {value}")
    return number


class _TLSOptions(CommandOptions):
    """
    How a client command checks a TLS server, and what it shows of itself.
    """

    optFlags = [
        [
            "insecure",
            "k",
            "Do NOT verify the server's certificate: anyone on the path can then "
            "read and change the traffic.",
        ]
    ]
    optParameters = [
        [
            "cacert",
            None,
            None,
            "Trust the CA certificates in this PEM file instead of the system's.",
        ],
        ["cert", None, None, "A client certificate (PEM), for mutual TLS."],
        ["key", None, None, "The client certificate's key (PEM) [default: --cert]."],
        [
            "passphrase-file",
            None,
            None,
            "Decrypt the client key with the passphrase in this file.",
        ],
        [
            "tls-keylog",
            None,
            None,
            "Append the TLS secrets to this file (NSS key log, for Wireshark) "
            "[default: $SSLKEYLOGFILE, if set].",
        ],
    ]

    #: The scheme (or endpoint prefix) that TLS options go with.
    secure_scheme = ""

    def scheme(self) -> str:
        """
        :return: the scheme of the URL (or prefix of the endpoint) given.
        """
        raise NotImplementedError

    def postOptions(self) -> None:
        self["tls"] = None
        files = [
            self[name]
            for name in ("cacert", "cert", "key", "passphrase-file", "tls-keylog")
        ]
        if not (self["insecure"] or any(files)):
            return
        if self.scheme() != self.secure_scheme:
            raise usage.UsageError(f"TLS options need a {self.secure_scheme}: address")
        if self["insecure"] and self["cacert"]:
            raise usage.UsageError("--insecure and --cacert contradict each other")
        try:
            self["tls"] = tls.ClientTLS(
                cacert=self["cacert"],
                cert=self["cert"],
                key=self["key"],
                passphrase=tls.read_passphrase(self["passphrase-file"]),
                insecure=self["insecure"],
            )
        except tls.TLSConfigError as error:
            raise usage.UsageError(str(error)) from None
        if self["tls-keylog"]:
            self._use_keylog(self["tls-keylog"])
        if self["insecure"]:
            sys.stderr.write(
                f"netlab {self.name}: WARNING: --insecure: the server's certificate "
                "is NOT verified\n"
            )

    def _use_keylog(self, path: str) -> None:
        try:
            tls.use_keylog(path)
        except OSError as error:
            raise usage.UsageError(f"--tls-keylog {path}: {error.strerror}") from None
        sys.stderr.write(
            f"netlab {self.name}: WARNING: --tls-keylog: the TLS secrets go to "
            f"{path}; whoever reads it can decrypt this traffic\n"
        )


class _TokenOptions(_TLSOptions):
    """
    A bearer token for commands that speak HTTP.
    """

    optParameters = [
        [
            "token",
            None,
            None,
            f"Send this bearer token [default: ${TOKEN_VARIABLE}, if set].",
        ]
    ]

    def postOptions(self) -> None:
        super().postOptions()
        token = self["token"] or os.environ.get(TOKEN_VARIABLE)
        self["authorization"] = f"Bearer {token}" if token else None


class _ExchangeOptions(_TLSOptions):
    """
    Options of a command that sends one message and prints the reply.
    """

    default_message = greeting.DEFAULT_CLIENT_MESSAGE
    optParameters = [
        [
            "timeout",
            "t",
            tcp.DEFAULT_CLIENT_TIMEOUT,
            "Seconds for the whole exchange.",
            _positive_float,
        ],
        [
            "max-reply",
            None,
            tcp.DEFAULT_MAX_REPLY,
            "The largest reply to accept, in bytes.",
            int,
        ],
    ]

    def getSynopsis(self) -> str:
        return (
            f"Usage: netlab {self.name} [options] ENDPOINT [MESSAGE]\n"
            "ENDPOINT is a Twisted client endpoint string (tcp:127.0.0.1:8007).\n"
            f"MESSAGE defaults to {self.default_message.decode()!r}; "
            "'-' reads it from standard input."
        )

    def parseArgs(self, endpoint: str, message: str | None = None) -> None:
        self["endpoint"] = endpoint
        self["message"] = message

    secure_scheme = "tls"

    def scheme(self) -> str:
        return self["endpoint"].partition(":")[0]

    def message(self) -> bytes:
        """
        :return: the message to send, from the command line or standard input.
        """
        if self["message"] is None:
            return self.default_message
        if self["message"] == "-":
            return sys.stdin.buffer.read()
        return self["message"].encode("utf-8")


class EchoOptions(_ExchangeOptions):
    """
    ``netlab echo``.
    """

    name = "echo"
    send: Callable[..., defer.Deferred[bytes]] = staticmethod(echo.echo)


class GreetOptions(_ExchangeOptions):
    """
    ``netlab greet``.
    """

    name = "greet"
    send: Callable[..., defer.Deferred[bytes]] = staticmethod(greeting.greet)


class GetOptions(_TokenOptions):
    """
    ``netlab get``.
    """

    name = "get"
    synopsis = "Usage: netlab get [options] URL"
    optFlags = [["json", None, "Pretty-print a JSON body."]]
    optParameters = [
        [
            "timeout",
            "t",
            http.DEFAULT_CLIENT_TIMEOUT,
            "Seconds for the whole exchange, body included.",
            _positive_float,
        ],
        ["data", "d", None, "Send this body in a POST ('-' reads standard input)."],
        [
            "max-body",
            None,
            http.DEFAULT_MAX_RESPONSE,
            "The largest response body to accept, in bytes.",
            int,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["headers"] = {}

    def opt_header(self, header: str) -> None:
        """
        Send a request header, "Name: value" (repeatable).
        """
        name, colon, value = header.partition(":")
        if not colon or not name.strip() or name != name.strip():
            raise usage.UsageError(f"bad header {header!r}: expected 'Name: value'")
        self["headers"].setdefault(name, []).append(value.strip())

    opt_H = opt_header

    def parseArgs(self, url: str) -> None:
        try:
            parsed = DecodedURL.from_text(url)
        except Exception as bad:
            raise usage.UsageError(f"bad URL {url!r}: {bad}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise usage.UsageError(f"bad URL {url!r}: expected http://HOST/...")
        self["url"] = url
        self["scheme"] = parsed.scheme

    secure_scheme = "https"

    def scheme(self) -> str:
        return self["scheme"]

    def body(self) -> bytes | None:
        """
        :return: the body to send, if any.
        """
        if self["data"] == "-":
            return sys.stdin.buffer.read()
        if self["data"] is not None:
            return self["data"].encode("utf-8")
        return None


class WSOptions(_TokenOptions):
    """
    ``netlab ws``.
    """

    name = "ws"
    synopsis = (
        "Usage: netlab ws [options] URL [MESSAGE ...]\n"
        "Sends each MESSAGE and prints each reply; with none, sends each line\n"
        "read from standard input until its end."
    )
    optParameters = [
        [
            "timeout",
            "t",
            websocket.DEFAULT_CLIENT_TIMEOUT,
            "Seconds to connect and open, and again for each reply.",
            _positive_float,
        ],
    ]

    def parseArgs(self, url: str, *messages: str) -> None:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as bad:
            raise usage.UsageError(f"bad URL {url!r}: {bad}") from None
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise usage.UsageError(
                f"bad URL {url!r}: expected ws://HOST[:PORT]/PATH or wss://..."
            )
        self["url"] = url
        self["scheme"] = parts.scheme
        self["messages"] = list(messages)

    secure_scheme = "wss"

    def scheme(self) -> str:
        return self["scheme"]


class CertsOptions(CommandOptions):
    """
    ``netlab certs``.
    """

    name = "certs"
    synopsis = (
        "Usage: netlab certs [options] DIR\n"
        "Makes a private CA, a server certificate (localhost, 127.0.0.1, ::1\n"
        "and each --host) and a client certificate in DIR."
    )
    optParameters = [
        [
            "passphrase-file",
            None,
            None,
            "Encrypt the private keys with the passphrase in this file.",
        ],
        [
            "days",
            None,
            certs.LEAF_DAYS,
            "Days the server and client certificates are valid.",
            int,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["hosts"] = []

    def opt_host(self, host: str) -> None:
        """
        Another name or IP address for the server certificate (repeatable).
        """
        try:
            self["hosts"].append(certs.check_host(host))
        except ValueError as error:
            raise usage.UsageError(str(error)) from None

    def parseArgs(self, directory: str) -> None:
        self["directory"] = directory

    def postOptions(self) -> None:
        if self["days"] <= 0:
            raise usage.UsageError("--days must be positive")
        try:
            self["passphrase"] = tls.read_passphrase(self["passphrase-file"])
        except tls.TLSConfigError as error:
            raise usage.UsageError(str(error)) from None


class TokenOptions(CommandOptions):
    """
    ``netlab token``.
    """

    name = "token"
    synopsis = "Usage: netlab token --key FILE --sub NAME [options]"
    optParameters = [
        [
            "key",
            None,
            None,
            "The HS256 secret file, or a private key PEM, to sign with.",
        ],
        ["sub", None, None, "The subject: who the token is for."],
        ["aud", None, None, "The audience."],
        ["iss", None, None, "The issuer."],
        ["kid", None, None, "The key id, to name the key in a JWKS."],
        [
            "ttl",
            None,
            3600.0,
            "Seconds the token is valid (negative: already expired, to test refusals).",
            _finite_float,
        ],
    ]

    def postOptions(self) -> None:
        for required in ("key", "sub"):
            if not self[required]:
                raise usage.UsageError(f"--{required} is required")


class Options(CommandOptions):
    """
    ``netlab``: the top-level command.
    """

    subCommands = [
        [
            "echo",
            None,
            EchoOptions,
            "Send to an echo server, print the reply.",
        ],
        ["greet", None, GreetOptions, "Greet a greeting server, print its answer."],
        ["get", None, GetOptions, "Fetch a URL: print the status code, then the body."],
        ["ws", None, WSOptions, "Send WebSocket messages, print the replies."],
        ["certs", None, CertsOptions, "Make a private CA and certificates for TLS."],
        ["token", None, TokenOptions, "Mint a bearer token (JWT), for testing."],
        ["bench", None, BenchOptions, "Measure implementations side by side."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is required")


def describe_failure(failure: Failure) -> str:
    """
    :return: one line that says what went wrong with a network exchange.
    """
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(defer.TimeoutError, error.TimeoutError):
        return "timed out"
    if failure.check(error.DNSLookupError):
        return f"host name not found ({failure.getErrorMessage()})"
    if failure.check(websocket.HandshakeRefused):
        return f"handshake refused: {failure.getErrorMessage()}"
    if failure.check(websocket.ConnectionClosed):
        return f"the server closed the WebSocket ({failure.getErrorMessage()})"
    if failure.check(ResponseFailed):
        return describe_failure(failure.value.reasons[0])
    if reason := tls.describe_tls_error(failure.value):
        return reason
    if failure.check(error.ConnectionLost):
        return "connection lost before the server finished"
    message = " ".join(failure.getErrorMessage().split())
    return message or failure.type.__name__


async def _run(reactor: Any, options: _ExchangeOptions) -> None:
    where = options["endpoint"]
    try:
        endpoint = tls.client_from_string(reactor, where, options["tls"])
    except Exception as bad:
        _fail(f"netlab {options.name}: bad endpoint {where!r}: {bad}", EXIT_USAGE)
    message = options.message()
    try:
        reply = await options.send(
            endpoint,
            message,
            reactor=reactor,
            timeout=options["timeout"],
            max_reply=options["max-reply"],
        )
    except Exception:
        reason = describe_failure(Failure())
        _fail(f"netlab {options.name}: {where}: {reason}", EXIT_NETWORK)
    if options["message"] != "-" and not reply.endswith(b"\n"):
        reply += b"\n"
    sys.stdout.buffer.write(reply)
    sys.stdout.flush()


async def _get(reactor: Any, options: GetOptions) -> None:
    data = options.body()
    headers = dict(options["headers"])
    if options["authorization"]:
        headers["Authorization"] = [options["authorization"]]
    try:
        response = await http.fetch(
            options["url"],
            method="GET" if data is None else "POST",
            headers=headers,
            data=data,
            timeout=options["timeout"],
            max_body=options["max-body"],
            reactor=reactor,
            tls=options["tls"],
        )
    except Exception:
        reason = describe_failure(Failure())
        _fail(f"netlab get: {options['url']}: {reason}", EXIT_NETWORK)
    body = response.body
    if options["json"]:
        try:
            body = json.dumps(json.loads(body), indent=2).encode()
        except ValueError:
            sys.stderr.write("netlab get: the body is not JSON; printed as it is\n")
    if body and not body.endswith(b"\n"):
        body += b"\n"
    sys.stdout.buffer.write(b"%d\n" % (response.code,) + body)
    sys.stdout.flush()


async def _ws(reactor: Any, options: WSOptions) -> None:
    url, timeout = options["url"], options["timeout"]

    async def lines() -> AsyncIterator[str]:
        if options["messages"]:
            for message in options["messages"]:
                yield message
            return
        while line := await deferToThread(sys.stdin.readline):
            yield line.rstrip("\n")

    try:
        authorization = options["authorization"]
        connection = await websocket.connect(
            url,
            reactor=reactor,
            timeout=timeout,
            tls=options["tls"],
            headers={"Authorization": authorization} if authorization else None,
        )
        async for message in lines():
            connection.send(message)
            reply = await with_deadline(connection.receive(), timeout, reactor)
            text = reply if isinstance(reply, str) else reply.decode("utf-8", "replace")
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        await with_deadline(connection.close(1000), timeout, reactor)
    except Exception:
        reason = describe_failure(Failure())
        _fail(f"netlab ws: {url}: {reason}", EXIT_NETWORK)


async def _certs(reactor: Any, options: CertsOptions) -> None:
    try:
        paths = certs.make_certificates(
            Path(options["directory"]),
            options["hosts"],
            passphrase=options["passphrase"],
            days=options["days"],
        )
    except (OSError, ValueError) as error:
        _fail(f"netlab certs: {error}", EXIT_NETWORK)
    for line in certs.usage_lines(paths, options["passphrase-file"]):
        sys.stdout.write(line + "\n")


async def _token(reactor: Any, options: TokenOptions) -> None:
    try:
        token = auth.mint(
            options["key"],
            options["sub"],
            audience=options["aud"],
            issuer=options["iss"],
            ttl=options["ttl"],
            kid=options["kid"],
        )
    except ValueError as error:
        _fail(f"netlab token: {error}", EXIT_USAGE)
    sys.stdout.write(token + "\n")


_COMMANDS = {
    "echo": _run,
    "greet": _run,
    "get": _get,
    "ws": _ws,
    "certs": _certs,
    "token": _token,
}


def _fail(line: str, status: int) -> NoReturn:
    sys.stderr.write(line + "\n")
    raise SystemExit(status)


def _stop_on_interrupt(name: str) -> None:
    """
    Make Ctrl-C end the command at once, with one line and
    :data:`EXIT_INTERRUPTED`: an interruption, not a network failure.
    """

    def interrupted(number: int, frame: Any) -> NoReturn:
        # At once, not through the reactor: a thread blocked reading the
        # terminal (netlab ws) cannot be woken, and an exchange cut short
        # has nothing left to save.
        try:
            sys.stdout.flush()
        except (OSError, RuntimeError, ValueError):  # a write was under way
            pass
        sys.stderr.write(f"netlab {name}: interrupted\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    # Twisted leaves a SIGINT handler of the program's own in place.
    signal.signal(signal.SIGINT, interrupted)


def main(argv: list[str] | None = None) -> NoReturn:
    """
    Run the ``netlab`` command with ``argv`` (default: ``sys.argv[1:]``).
    """
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as mistake:
        name = " ".join(
            ["netlab", *([options.subCommand] if options.subCommand else [])]
        )
        _fail(f"{name}: {mistake} (see {name} --help)", EXIT_USAGE)
    if options.subCommand == "bench":
        raise SystemExit(bench.run(options.subOptions))
    command = _COMMANDS[options.subCommand]
    _stop_on_interrupt(options.subCommand)
    task.react(
        lambda reactor: defer.Deferred.fromCoroutine(
            command(reactor, options.subOptions)
        )
    )


if __name__ == "__main__":
    main()
