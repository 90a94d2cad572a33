"""
Tests of the twistd plugins' options and services, in process.
"""

from __future__ import annotations

import select
import socket
import time

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import http, websocket
from netlab.services import hello, wsecho
from netlab.tap import (
    DEFAULT_BACKLOG,
    echo,
    greeting,
    lab,
    listening_service,
    with_backlog,
    ws,
)
from netlab.tap import http as http_tap
from netlab.transport import FlushingPort
from tests.support import WAIT


def listeners(service) -> list[StreamServerEndpointService]:
    """
    :return: every endpoint service under ``service``.
    """
    found = []
    for child in service:
        if isinstance(child, StreamServerEndpointService):
            found.append(child)
        elif isinstance(child, MultiService):
            found.extend(listeners(child))
    return found


class SingleServiceTests(SynchronousTestCase):
    def test_default_is_loopback(self) -> None:
        for module, default in (
            (echo, echo.DEFAULT_ECHO_LISTEN),
            (greeting, greeting.DEFAULT_GREETING_LISTEN),
            (http_tap, http.DEFAULT_HTTP_LISTEN),
            (ws, websocket.DEFAULT_WS_LISTEN),
        ):
            options = module.Options()
            options.parseOptions([])
            self.assertEqual(options["listen"], [default])
            self.assertIn("interface=127.0.0.1", default)
            self.assertIn(default, options.getUsage())

    def test_listen_is_repeatable(self) -> None:
        options = echo.Options()
        places = ["tcp:9001:interface=127.0.0.1", "tcp:9002:interface=127.0.0.2"]
        options.parseOptions(["--listen", places[0], "--listen", places[1]])
        self.assertEqual(options["listen"], places)
        service = echo.makeService(options)
        found = listeners(service)
        self.assertEqual(len(found), 2)
        self.assertIsInstance(found[0].factory, echo.EchoFactory)
        self.assertIs(found[0].factory, found[1].factory)

    def test_bad_endpoint_is_a_usage_error(self) -> None:
        for bad in ("tcp:notaport", "nosuchtype:1", ""):
            error = self.assertRaises(
                usage.UsageError, echo.Options().parseOptions, ["--listen", bad]
            )
            self.assertIn(repr(bad), str(error))
            self.assertNotIn("\n", str(error))

    def test_idle_timeout(self) -> None:
        options = greeting.Options()
        options.parseOptions(["--idle-timeout", "2.5"])
        [listener] = listeners(greeting.makeService(options))
        self.assertEqual(listener.factory.limits.idle_timeout, 2.5)
        self.assertIsInstance(listener.factory, greeting.GreetingFactory)
        for bad in ("0", "-1", "soon"):
            self.assertRaises(
                usage.UsageError,
                greeting.Options().parseOptions,
                ["--idle-timeout", bad],
            )

    def test_help_shows_limits_with_defaults(self) -> None:
        text = " ".join(echo.Options().getUsage().split())
        self.assertIn("--idle-timeout=", text)
        self.assertIn("[default: 60.0]", text)


class LabTests(SynchronousTestCase):
    def parse(self, *args: str) -> lab.Options:
        options = lab.Options()
        options.parseOptions(list(args))
        return options

    def test_every_service_by_default(self) -> None:
        options = self.parse()
        self.assertEqual(
            options["listen"],
            {
                "echo": [echo.DEFAULT_ECHO_LISTEN],
                "greeting": [greeting.DEFAULT_GREETING_LISTEN],
                "http": [http.DEFAULT_HTTP_LISTEN],
                "ws": [websocket.DEFAULT_WS_LISTEN],
            },
        )
        service = lab.makeService(options)
        self.assertEqual(
            sorted(s.name for s in service), ["echo", "greeting", "http", "ws"]
        )
        factories = {type(s.factory) for s in listeners(service)}
        self.assertEqual(
            factories,
            {
                echo.EchoFactory,
                greeting.GreetingFactory,
                http.HTTPSite,
                wsecho.EchoFactory,
            },
        )

    def test_move_and_turn_off(self) -> None:
        options = self.parse(
            *("--echo", "tcp:9100:interface=127.0.0.1"),
            *("--greeting", "off", "--http", "off", "--ws", "off"),
        )
        self.assertEqual(
            options["listen"],
            {
                "echo": ["tcp:9100:interface=127.0.0.1"],
                "greeting": [],
                "http": [],
                "ws": [],
            },
        )
        service = lab.makeService(options)
        self.assertEqual([s.name for s in service], ["echo"])

    def test_contradictions_are_usage_errors(self) -> None:
        self.assertRaises(
            usage.UsageError, self.parse, "--echo", "off", "--echo", "tcp:1"
        )
        self.assertRaises(
            usage.UsageError,
            self.parse,
            *("--echo", "off", "--greeting", "off", "--http", "off", "--ws", "off"),
        )
        self.assertRaises(usage.UsageError, self.parse, "--greeting", "tcp:x")

    def test_limits_reach_every_service(self) -> None:
        service = lab.makeService(self.parse("--idle-timeout", "7", "--max-body", "99"))
        self.assertEqual(
            {s.factory.limits.idle_timeout for s in listeners(service)}, {7.0}
        )
        [site] = [
            s.factory
            for s in listeners(service)
            if s.name is None and isinstance(s.factory, http.HTTPSite)
        ]
        self.assertEqual(site.limits.max_body, 99)
        self.assertEqual(site.timeOut, 7.0)

    def test_allowed_origins_reach_web_services(self) -> None:
        service = lab.makeService(
            self.parse("--allowed-origin", "https://app.test", "--max-message", "5")
        )
        factories = {type(s.factory): s.factory for s in listeners(service)}
        ws_factory = factories[wsecho.EchoFactory]
        self.assertEqual(ws_factory.allowed_origins, {"https://app.test"})
        self.assertEqual(ws_factory.limits.max_message, 5)
        site = factories[http.HTTPSite]
        mounted = site.resource.children[b"ws"].factory_for(site)
        self.assertEqual(mounted.allowed_origins, {"https://app.test"})
        for bad in ("app.test", "ftp://app.test", "https://app.test/path"):
            self.assertRaises(usage.UsageError, self.parse, "--allowed-origin", bad)

    def test_http_help_shows_every_http_limit(self) -> None:
        text = " ".join(http_tap.Options().getUsage().split())
        for option in (
            "--idle-timeout=",
            "--head-timeout=",
            "--max-body=",
            "--max-request-line=",
            "--max-header-block=",
            "--max-headers=",
        ):
            self.assertIn(option, text)
        self.assertIn("[default: 1048576]", text)


class ListeningTests(TestCase):
    async def test_plugins_listen_with_flushing_ports(self) -> None:
        """
        Every plugin's TCP (and so TLS) listener is a
        :class:`netlab.transport.FlushingPort`.
        """
        options = echo.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
        service = echo.makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        [listener] = listeners(service)
        port = await listener._waitingForPort
        self.assertIsInstance(port, FlushingPort)

    async def test_a_burst_of_connects_fits_the_backlog(self) -> None:
        """
        300 clients connecting at once, while the service accepts none of
        them, all complete their handshake: the kernel queues them (with
        Twisted's backlog of 50, the 52nd waits a second and more for its SYN
        to be sent again). A backlog named in the string is kept.
        """
        service = listening_service(
            ["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1:backlog=7"],
            hello.site(),
        )
        service.startService()
        self.addCleanup(service.stopService)
        ports = [await listener._waitingForPort for listener in listeners(service)]
        self.assertEqual([p.backlog for p in ports], [DEFAULT_BACKLOG, 7])
        port = ports[0]
        port.stopReading()  # accept nothing: only the kernel's queue holds them
        clients = []
        self.addCleanup(lambda: [client.close() for client in clients])
        for _ in range(300):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port.getHost().port))
            clients.append(client)
        pending = set(clients)
        deadline = time.monotonic() + WAIT
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(pending), [], 0.1)
            pending.difference_update(writable)
        self.assertEqual(len(pending), 0)
        self.assertFalse(
            [c for c in clients if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)]
        )

    def test_with_backlog(self) -> None:
        for description, expected in (
            ("tcp:80", f"tcp:80:backlog={DEFAULT_BACKLOG}"),
            ("unix:/run/x.sock", f"unix:/run/x.sock:backlog={DEFAULT_BACKLOG}"),
            ("netlab-ssl:443:backlog=9", "netlab-ssl:443:backlog=9"),
            # An escaped colon is part of a value, not a new argument.
            (
                r"ssl:1:privateKey=a\:backlog=b",
                rf"ssl:1:privateKey=a\:backlog=b:backlog={DEFAULT_BACKLOG}",
            ),
            ("tls:/etc/pem:port=443", "tls:/etc/pem:port=443"),
        ):
            self.assertEqual(with_backlog(description), expected)


class ImportObjectTests(SynchronousTestCase):
    """
    ``import_object``: what ``--factory``, ``--resource``, ``--wsgi`` and
    ``--handler`` name, or one line saying why not.
    """

    def test_both_spellings(self) -> None:
        from netlab.tap import import_object

        module = "netlab.services.hello"
        self.assertIs(import_object(f"{module}:Hello", "--x"), hello.Hello)
        self.assertIs(import_object(f"{module}.Hello", "--x"), hello.Hello)
        self.assertIs(
            import_object(f"{module}:Hello.render_GET", "--x"), hello.Hello.render_GET
        )

    def test_errors_are_one_line(self) -> None:
        from netlab.tap import import_object

        for path, expected in (
            ("nosuchmodule_xyz:app", "no module named 'nosuchmodule_xyz'"),
            ("netlab.nosuch:app", "no module named 'netlab.nosuch'"),
            ("netlab.http:nosuch", "netlab.http has no 'nosuch'"),
            ("netlab.http.nosuch", "netlab.http has no 'nosuch'"),
            ("app", "expected package.module:name"),
            ("netlab.http:", "expected package.module:name"),
            ("1bad:app", "expected package.module:name"),
        ):
            error = self.assertRaises(usage.UsageError, import_object, path, "--app")
            self.assertIn(expected, str(error))
            self.assertTrue(str(error).startswith(f"--app {path}: "), str(error))
            self.assertNotIn("\n", str(error))

    def test_a_module_that_fails_to_import(self) -> None:
        import os
        import sys

        from netlab.tap import import_object

        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, "broken_app_xyz.py"), "w") as module:
            module.write("import nosuchdependency_xyz\n")
        sys.path.insert(0, folder)
        self.addCleanup(sys.path.remove, folder)
        error = self.assertRaises(
            usage.UsageError, import_object, "broken_app_xyz:app", "--app"
        )
        self.assertIn("importing broken_app_xyz failed", str(error))
        self.assertIn("nosuchdependency_xyz", str(error))
        with open(os.path.join(folder, "raising_app_xyz.py"), "w") as module:
            module.write("1 / 0\n")
        error = self.assertRaises(
            usage.UsageError, import_object, "raising_app_xyz:app", "--app"
        )
        self.assertIn("ZeroDivisionError", str(error))
        self.assertNotIn("\n", str(error))
