"""
The wiretap: real services on loopback, recorded, and the capture read back
with ``tshark`` (Debian's package; ``.ci/run`` installs it) as Wireshark's
dissectors see it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import struct

from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP6ClientEndpoint, serverFromString
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from netlab import certs, http, tls, websocket
from netlab.services import echo, greeting, hello, wsecho
from netlab.wiretap import SEGMENT_SIZE, Wiretap
from tests.support import (
    WAIT,
    TwinServer,
    abort,
    bounded,
    connect,
    require,
    run,
    skip_or_fail,
    spawn,
)


def _need_tshark() -> str:
    path = shutil.which("tshark")
    require(path, "needs tshark (apt-get install tshark)")
    assert path is not None
    return path


async def tshark(capture: pathlib.Path, *args: str) -> str:
    """
    :return: what ``tshark -r capture args`` prints; fails if tshark does.
    """
    result = await run([_need_tshark(), "-r", str(capture), *args])
    if result.status != 0:
        raise AssertionError(f"tshark failed: {result}")
    return result.out.decode()


async def fields(capture: pathlib.Path, shown: str, *names: str) -> list[list[str]]:
    """
    :return: for each packet that ``shown`` (a display filter) selects, the
        values of the fields ``names``.
    """
    args = ["-Y", shown, "-T", "fields"]
    for name in names:
        args += ["-e", name]
    out = await tshark(capture, *args)
    return [line.split("\t") for line in out.splitlines() if line.strip()]


class WiretapTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        _need_tshark()
        self.capture = pathlib.Path(self.mktemp())
        self.tap = Wiretap(str(self.capture))
        self.addCleanup(self.tap.close)

    async def serve(self, factory, description: str = "tcp:0:interface=127.0.0.1"):
        port = await serverFromString(reactor, description).listen(
            self.tap.wrap(factory)
        )
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(factory.drained()))
        return port.getHost().port

    async def test_http_and_websocket(self) -> None:
        port = await self.serve(http.HTTPSite(hello.Root()))
        base = f"http://127.0.0.1:{port}"
        await http.fetch(base + "/", timeout=WAIT)
        await http.fetch(base + "/echo", method="POST", data=b"x" * 40_000)
        connection = await websocket.connect(f"ws://127.0.0.1:{port}/ws")
        connection.send("hello wire")
        await bounded(connection.receive())
        await bounded(connection.close())
        await bounded(self.tap.close())

        requests = await fields(
            self.capture, "http.request", "http.request.method", "http.request.uri"
        )
        self.assertEqual(requests, [["GET", "/"], ["POST", "/echo"], ["GET", "/ws"]])
        codes = await fields(self.capture, "http.response", "http.response.code")
        self.assertEqual(codes, [["200"], ["200"], ["101"]])
        texts = await fields(
            self.capture, "websocket.payload.text", "websocket.payload.text"
        )
        self.assertEqual(texts, [["hello wire"], ["Echo: hello wire"]])
        streams = await fields(
            self.capture, "tcp.flags.syn==1 && tcp.flags.ack==0", "tcp.stream"
        )
        self.assertEqual(len(streams), 3)
        sizes = await fields(self.capture, "tcp.len > 0", "tcp.len")
        self.assertLessEqual(max(int(size) for [size] in sizes), SEGMENT_SIZE)
        # Nothing Wireshark would flag: no bad checksums, no lost segments.
        problems = await fields(
            self.capture,
            "tcp.analysis.flags && !tcp.analysis.window_update",
            "frame.number",
        )
        self.assertEqual(problems, [])

    async def test_echo_streams_and_half_close(self) -> None:
        port = await self.serve(echo.EchoFactory())
        messages = [b"first " * 1000, b"second"]
        for message in messages:
            reply = await echo.echo(f"tcp:127.0.0.1:{port}", message, timeout=WAIT)
            self.assertEqual(reply, message)
        await bounded(self.tap.close())
        for stream, message in enumerate(messages):
            out = await tshark(self.capture, "-q", "-z", f"follow,tcp,raw,{stream}")
            data = "".join(
                line.strip() for line in out.splitlines() if line.strip().isalnum()
            )
            self.assertEqual(bytes.fromhex(data), message * 2)
        # The client half-closes first; the server's FIN comes after its data.
        fins = await fields(
            self.capture, "tcp.flags.fin==1", "tcp.stream", "tcp.srcport"
        )
        self.assertEqual([port_ for _, port_ in fins if _ == "0"][1], str(port))

    async def test_ipv6(self) -> None:
        require(socket.has_ipv6, "needs IPv6 (this Python has none)")
        try:
            port = await self.serve(echo.EchoFactory(), "tcp6:0:interface=\\:\\:1")
        except Exception as error:
            skip_or_fail(f"needs an IPv6 loopback: cannot listen on ::1: {error}")
        client = TCP6ClientEndpoint(reactor, "::1", port)
        reply = await echo.echo(client, b"six", timeout=WAIT)
        self.assertEqual(reply, b"six")
        await bounded(self.tap.close())
        hosts = await fields(self.capture, "tcp.len > 0", "ipv6.src", "ipv6.dst")
        self.assertEqual(hosts, [["::1", "::1"]] * 2)

    async def test_tls_plaintext(self) -> None:
        paths = certs.make_certificates(pathlib.Path(self.mktemp()))
        port = await self.serve(
            http.HTTPSite(hello.Root()),
            f"netlab-ssl:0:privateKey={paths.server_key}:certKey={paths.server}",
        )
        response = await http.fetch(
            f"https://localhost:{port}/",
            tls=tls.ClientTLS(cacert=str(paths.ca)),
            timeout=WAIT,
        )
        self.assertEqual(response.code, 200)
        await bounded(self.tap.close())
        codes = await fields(self.capture, "http.response", "http.response.code")
        self.assertEqual(codes, [["200"]])
        bodies = await fields(self.capture, "http.response", "http.file_data")
        self.assertIn("Hello, world!", bodies[0][0])

    async def test_websocket_over_tls(self) -> None:
        paths = certs.make_certificates(pathlib.Path(self.mktemp()))
        port = await self.serve(
            wsecho.EchoFactory(),
            f"netlab-ssl:0:privateKey={paths.server_key}:certKey={paths.server}",
        )
        connection = await websocket.connect(
            f"wss://localhost:{port}/", tls=tls.ClientTLS(cacert=str(paths.ca))
        )
        connection.send("secret")
        self.assertEqual(await bounded(connection.receive()), "Echo: secret")
        await bounded(connection.close())
        await bounded(self.tap.close())
        text = "websocket.payload.text"
        self.assertEqual(
            await fields(self.capture, text, text), [["secret"], ["Echo: secret"]]
        )

    async def test_reset_mid_stream(self) -> None:
        factory = echo.EchoFactory()
        port = await self.serve(factory)

        def reset() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
                sock.sendall(b"half a message")
                received = b""
                while len(received) < 14:
                    received += sock.recv(100)
                # Linger 0: close() sends a RST, not a FIN.
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )

        await deferToThread(reset)
        await bounded(factory.drained())
        await bounded(self.tap.close())
        resets = await fields(self.capture, "tcp.flags.reset==1", "tcp.srcport")
        self.assertEqual(len(resets), 1)
        data = await fields(self.capture, "tcp.len > 0", "tcp.len")
        self.assertEqual(data, [["14"], ["14"]])

    async def test_size_cap_stops_with_one_event(self) -> None:
        capture = pathlib.Path(self.mktemp())
        tap = Wiretap(str(capture), max_bytes=4096)
        factory = echo.EchoFactory()
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            tap.wrap(factory)
        )
        self.addCleanup(port.stopListening)
        with capturedLogs() as events:
            reply = await echo.echo(
                f"tcp:127.0.0.1:{port.getHost().port}", b"y" * 20_000, timeout=WAIT
            )
            await bounded(factory.drained())
            await bounded(tap.close())
        self.assertEqual(reply, b"y" * 20_000)
        stops = [e for e in events if "wiretap" in e.get("log_format", "")]
        self.assertEqual(len(stops), 1, stops)
        self.assertLessEqual(capture.stat().st_size, 4096)
        await tshark(capture)  # still a readable file

    async def test_write_error_stops_with_one_event(self) -> None:
        require(os.path.exists("/dev/full"), "needs /dev/full")
        tap = Wiretap("/dev/full")
        factory = echo.EchoFactory()
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            tap.wrap(factory)
        )
        self.addCleanup(port.stopListening)
        with capturedLogs() as events:
            for _ in range(3):
                reply = await echo.echo(
                    f"tcp:127.0.0.1:{port.getHost().port}", b"z", timeout=WAIT
                )
                self.assertEqual(reply, b"z")
            await bounded(factory.drained())
            await bounded(tap.close())
        stops = [e for e in events if "cannot write" in e.get("log_format", "")]
        self.assertEqual(len(stops), 1, events)
        self.assertTrue(tap.stopped)

    async def test_file_is_private(self) -> None:
        mode = self.capture.stat().st_mode & 0o777
        self.assertEqual(mode, 0o600)


class KeyLogTests(TestCase):
    """
    ``SSLKEYLOGFILE`` / ``--tls-keylog``: a real capture of TLS traffic on
    loopback, decrypted with the key log netlab wrote.
    """

    timeout = 60

    async def until_captured(self, sniffer, port: int) -> None:
        """
        Knock on ``port`` until tshark shows the knock: it then has all that
        came before. (It says "Capturing" a moment before it is.) At most 100
        knocks, 0.1 s apart.
        """
        before = sniffer.protocol.out.count(b"[SYN]")
        for _ in range(100):
            peer = await connect("127.0.0.1", port)
            await abort(peer)
            await task.deferLater(reactor, 0.1)
            if sniffer.protocol.out.count(b"[SYN]") > before:
                return
        raise AssertionError(f"tshark never saw a packet: {sniffer.protocol.err!r}")

    async def stop(self, sniffer) -> None:
        if not sniffer.protocol.ended.called:
            sniffer.signal("INT")
        await sniffer.ended()

    async def test_capture_decrypts(self) -> None:
        tshark_path = _need_tshark()
        keylog = pathlib.Path(self.mktemp()).resolve()
        with capturedLogs() as events:
            tls.use_keylog(str(keylog))
        self.addCleanup(tls.use_keylog, None)
        self.assertTrue(any("TLS secrets" in e["log_format"] for e in events))
        self.assertEqual(keylog.stat().st_mode & 0o777, 0o600)

        paths = certs.make_certificates(pathlib.Path(self.mktemp()))
        site = http.HTTPSite(hello.Root())
        port = await serverFromString(
            reactor,
            f"netlab-ssl:0:privateKey={paths.server_key}:certKey={paths.server}",
        ).listen(site)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(site.drained()))
        number = port.getHost().port

        capture = pathlib.Path(self.mktemp()).resolve()
        sniffer = spawn(
            [tshark_path, "-i", "lo", "-f", f"tcp port {number}", "-w", str(capture)]
            + ["-l", "-P"],  # print each packet as it comes, even when writing
            watch=rb"Capturing on|[Pp]ermission|[Ee]rror",
        )
        self.addCleanup(self.stop, sniffer)
        seen = await bounded(sniffer.protocol.seen)
        require(
            b"Capturing on" in seen.group(0),
            f"needs tshark to capture on lo (run as root, or be in group "
            f"wireshark): {seen.string!r}",
        )
        await self.until_captured(sniffer, number)
        try:
            response = await http.fetch(
                f"https://localhost:{number}/healthz",
                tls=tls.ClientTLS(cacert=str(paths.ca)),
                timeout=WAIT,
            )
            self.assertEqual(response.code, 200)
            await self.until_captured(sniffer, number)
        finally:
            await self.stop(sniffer)

        # Without the key log, tshark sees only TLS; with it, the HTTP inside.
        self.assertEqual(await fields(capture, "http.request", "http.request.uri"), [])
        self.assertIn(b"CLIENT_TRAFFIC_SECRET_0", keylog.read_bytes())
        decrypted = await tshark(
            capture,
            "-o",
            f"tls.keylog_file:{keylog}",
            # An ephemeral port: tell tshark it is TLS.
            "-d",
            f"tcp.port=={number},tls",
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
        )
        self.assertEqual(decrypted.split(), ["/healthz"])


class TwinKeyLogTests(TestCase):
    """
    The compat twins write key logs through the standard library's ``ssl``,
    which honours ``SSLKEYLOGFILE`` by itself.
    """

    timeout = 60

    async def test_twin_writes_key_log(self) -> None:
        keylog = pathlib.Path(self.mktemp()).resolve()
        paths = certs.make_certificates(pathlib.Path(self.mktemp()))
        os.environ["SSLKEYLOGFILE"] = str(keylog)
        try:
            running = await TwinServer("netlab.compat.socket_server").start(tls=paths)
        finally:
            del os.environ["SSLKEYLOGFILE"]
        self.addCleanup(running.stop)
        reply = await greeting.greet(
            f"tls:localhost:{running.port}",
            b"hi",
            tls=tls.ClientTLS(cacert=str(paths.ca)),
            timeout=WAIT,
        )
        self.assertEqual(reply, greeting.GREETING)
        self.assertIn(b"CLIENT_TRAFFIC_SECRET_0", keylog.read_bytes())
