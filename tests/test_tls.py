"""
TLS: netlab's hardened server endpoint (``netlab-ssl:``, and ``ssl:`` in the
plugins) and the clients that verify it, over real TLS on loopback with
certificates made in the test.
"""

from __future__ import annotations

import os
import pathlib
import socket
import struct
from typing import Any

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.ssl import CertificateOptions, PrivateCertificate
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import certs, http, tcp, tls, websocket
from netlab.limits import Limits
from netlab.services import echo, greeting, hello, wsecho
from netlab.tap import check_endpoint
from netlab.tap import echo as echo_tap
from tests.pki import DAY, NOW, PKI
from tests.support import WAIT, bounded, connect, python, run

# OpenSSL 3's SSL_OP_ALLOW_CLIENT_RENEGOTIATION (pyOpenSSL has no name for
# it): the control server that lets a client renegotiate.
_ALLOW_CLIENT_RENEGOTIATION = 1 << 8


def escaped(path: pathlib.Path) -> str:
    return str(path).replace(":", "\\:")


def listen_string(
    key: pathlib.Path, cert: pathlib.Path, prefix: str = "netlab-ssl", **more: str
) -> str:
    extra = "".join(f":{name}={value}" for name, value in more.items())
    return f"{prefix}:0:privateKey={escaped(key)}:certKey={escaped(cert)}{extra}"


class Served:
    """
    A test's certificates, and servers listening with them.
    """

    def __init__(self, case: TestCase) -> None:
        self.case = case
        self.paths = certs.make_certificates(pathlib.Path(case.mktemp()))
        self.trusting = tls.ClientTLS(cacert=str(self.paths.ca))

    def listen_string(self, **more: str) -> str:
        return listen_string(self.paths.server_key, self.paths.server, **more)

    async def listen(self, factory: Any, description: str | None = None) -> int:
        endpoint = serverFromString(reactor, description or self.listen_string())
        port = await endpoint.listen(factory)
        self.case.addCleanup(port.stopListening)
        if hasattr(factory, "drained"):
            self.case.addCleanup(lambda: bounded(factory.drained()))
        return port.getHost().port


class EndpointStringTests(SynchronousTestCase):
    """
    What ``netlab-ssl:`` accepts and refuses at start-up, each in one line.
    """

    def setUp(self) -> None:
        self.paths = certs.make_certificates(pathlib.Path(self.mktemp()))
        self.pki = PKI(pathlib.Path(self.mktemp()))

    def refused(self, description: str) -> str:
        error = self.assertRaises(
            tls.TLSConfigError, serverFromString, reactor, description
        )
        message = str(error)
        self.assertNotIn("\n", message)
        return message

    def test_plugins_read_ssl_as_netlab_ssl(self) -> None:
        """
        In netlab's plugins a Twisted ``ssl:`` string gets netlab's policy.
        """
        plain = listen_string(self.paths.server_key, self.paths.server, "ssl")
        self.assertEqual(
            check_endpoint(plain), "netlab-ssl:" + plain.removeprefix("ssl:")
        )
        self.assertEqual(check_endpoint("tcp:0"), "tcp:0")
        options = echo_tap.Options()
        options.parseOptions(["--listen", plain])
        self.assertTrue(options["listen"][0].startswith("netlab-ssl:"))

    def test_plugin_start_up_error_is_one_line(self) -> None:
        """
        A bad certificate in a plugin's ``--listen`` is a usage error.
        """
        options = echo_tap.Options()
        bad = listen_string(self.paths.server_key, self.paths.ca, "ssl")
        error = self.assertRaises(
            usage.UsageError, options.parseOptions, ["--listen", bad]
        )
        self.assertIn("not the key of the certificate", str(error))

    def test_encrypted_key(self) -> None:
        """
        An encrypted key loads with its passphrase from a file or the
        environment, and fails clearly without it or with a wrong one.
        """
        directory = pathlib.Path(self.mktemp())
        paths = certs.make_certificates(directory, passphrase=b"open sesame")
        secret = directory / "passphrase"
        secret.write_bytes(b"open sesame\n")
        base = listen_string(paths.server_key, paths.server)
        serverFromString(reactor, f"{base}:passphraseFile={escaped(secret)}")
        os.environ["NETLAB_TEST_PASSPHRASE"] = "open sesame"
        self.addCleanup(os.environ.pop, "NETLAB_TEST_PASSPHRASE")
        serverFromString(reactor, f"{base}:passphraseEnv=NETLAB_TEST_PASSPHRASE")

        self.assertIn("the private key is encrypted", self.refused(base))
        wrong = directory / "wrong"
        wrong.write_bytes(b"close sesame")
        self.assertIn(
            "wrong passphrase",
            self.refused(f"{base}:passphraseFile={escaped(wrong)}"),
        )
        self.assertIn("is not set", self.refused(f"{base}:passphraseEnv=NO_SUCH_VAR"))

    def test_missing_intermediate(self) -> None:
        """
        A certificate whose issuer is not served (and not a root the system
        trusts) is refused at start-up; with the chain it is accepted.
        """
        root = self.pki.ca("Test Root")
        intermediate = self.pki.ca("Test Intermediate", root)
        leaf = self.pki.server("leaf", intermediate)
        message = self.refused(listen_string(leaf.key_path, leaf.cert_path))
        self.assertIn("the chain is incomplete", message)
        self.assertIn("Test Intermediate", message)
        # Without the root, the intermediate's issuer is still missing.
        half = self.pki.bundle("half.pem", leaf, intermediate)
        self.assertIn("Test Root", self.refused(listen_string(leaf.key_path, half)))
        whole = self.pki.bundle("whole.pem", leaf, intermediate, root)
        serverFromString(reactor, listen_string(leaf.key_path, whole))
        chain = self.pki.bundle("chain.pem", intermediate, root)
        serverFromString(
            reactor,
            listen_string(leaf.key_path, leaf.cert_path, extraCertChain=chain),
        )

    def test_chain_out_of_order(self) -> None:
        root = self.pki.ca("Test Root")
        intermediate = self.pki.ca("Test Intermediate", root)
        leaf = self.pki.server("leaf", intermediate)
        muddled = self.pki.bundle("muddled.pem", leaf, root, intermediate)
        self.assertIn(
            "did not issue", self.refused(listen_string(leaf.key_path, muddled))
        )

    def test_bad_settings(self) -> None:
        key, cert = self.paths.server_key, self.paths.server
        for more, expected in [
            ({"minTLS": "1.1"}, "1.0 and 1.1 are broken"),
            ({"minTLS": "1.0"}, "1.0 and 1.1 are broken"),
            ({"clientCert": "required"}, "needs clientCA"),
            ({"clientCA": escaped(self.paths.ca), "clientCert": "maybe"}, "optional"),
            ({"sslmethod": "TLSv1_METHOD"}, "unknown key sslmethod"),
            ({"privateKey": "/nonexistent"}, "cannot read private key"),
        ]:
            self.assertIn(expected, self.refused(listen_string(key, cert, **more)))
        self.assertIn("no PEM certificate", self.refused(listen_string(key, key)))
        self.assertIn("not a PEM private key", self.refused(listen_string(cert, cert)))


def blocking_handshake(
    port: int,
    cafile: pathlib.Path,
    *,
    versions: tuple[int, int] | None = None,
    ciphers: bytes | None = None,
    alpn: list[bytes] | None = None,
    renegotiate: bool = False,
) -> dict[str, Any]:
    """
    A plain pyOpenSSL client, run in a thread: handshake (and optionally
    renegotiate), then say what was agreed. Raises ``SSL.Error`` if refused.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.load_verify_locations(str(cafile))
    context.set_verify(SSL.VERIFY_PEER, lambda *args: args[-1])
    if versions is not None:
        context.set_min_proto_version(versions[0])
        context.set_max_proto_version(versions[1])
    if ciphers is not None:
        context.set_cipher_list(ciphers)
    if alpn is not None:
        context.set_alpn_protos(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        # pyOpenSSL wants a blocking socket; the kernel still bounds each wait.
        sock.setblocking(True)
        bound = struct.pack("ll", int(WAIT), 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bound)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, bound)
        connection = SSL.Connection(context, sock)
        connection.set_connect_state()
        connection.set_tlsext_host_name(b"localhost")
        connection.do_handshake()
        agreed = {
            "version": connection.get_protocol_version_name(),
            "cipher": connection.get_cipher_name(),
            "alpn": connection.get_alpn_proto_negotiated(),
        }
        if renegotiate:
            connection.renegotiate()
            connection.do_handshake()
            # The server answers the new hello (or refuses it) when it reads.
            connection.send(b"ping")
            agreed["reply"] = connection.recv(4)
            agreed["renegotiations"] = connection.total_renegotiations()
        return agreed


class PolicyTests(TestCase):
    """
    What a client can and cannot negotiate with the hardened policy.
    """

    timeout = 60

    async def test_modern_handshake(self) -> None:
        served = Served(self)
        port = await served.listen(echo.EchoFactory())
        agreed = await deferToThread(blocking_handshake, port, served.paths.ca)
        self.assertEqual(agreed["version"], "TLSv1.3")
        tls12 = await deferToThread(
            blocking_handshake,
            port,
            served.paths.ca,
            versions=(SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION),
        )
        self.assertEqual(tls12["version"], "TLSv1.2")
        self.assertIn("GCM", tls12["cipher"])
        self.assertTrue(tls12["cipher"].startswith("ECDHE"))

    async def test_old_versions_refused(self) -> None:
        """
        A TLS 1.1-only client is refused; the same client allowed 1.2 is not.
        """
        served = Served(self)
        port = await served.listen(echo.EchoFactory())
        weak = b"DEFAULT:@SECLEVEL=0"
        with self.assertRaises(SSL.Error):
            await deferToThread(
                blocking_handshake,
                port,
                served.paths.ca,
                versions=(SSL.TLS1_VERSION, SSL.TLS1_1_VERSION),
                ciphers=weak,
            )
        await deferToThread(
            blocking_handshake,
            port,
            served.paths.ca,
            versions=(SSL.TLS1_VERSION, SSL.TLS1_2_VERSION),
            ciphers=weak,
        )

    async def test_minimum_tls_13(self) -> None:
        served = Served(self)
        port = await served.listen(
            echo.EchoFactory(), served.listen_string(minTLS="1.3")
        )
        with self.assertRaises(SSL.Error):
            await deferToThread(
                blocking_handshake,
                port,
                served.paths.ca,
                versions=(SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION),
            )

    async def test_weak_suites_refused(self) -> None:
        """
        TLS 1.2 suites without forward secrecy (RSA key exchange) or without
        AEAD (CBC) are refused; Twisted's default policy accepts CBC.
        """
        served = Served(self)
        port = await served.listen(echo.EchoFactory())
        tls12 = (SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION)
        for suites in (b"ECDHE-ECDSA-AES128-SHA", b"ECDHE-ECDSA-AES256-SHA384"):
            with self.assertRaises(SSL.Error):
                await deferToThread(
                    blocking_handshake,
                    port,
                    served.paths.ca,
                    versions=tls12,
                    ciphers=suites,
                )
        # Twisted's own ssl: endpoint takes the CBC suite: the check above
        # is netlab's doing.
        plain = await served.listen(
            echo.EchoFactory(),
            listen_string(served.paths.server_key, served.paths.server, "ssl"),
        )
        agreed = await deferToThread(
            blocking_handshake,
            plain,
            served.paths.ca,
            versions=tls12,
            ciphers=b"ECDHE-ECDSA-AES128-SHA",
        )
        self.assertEqual(agreed["cipher"], "ECDHE-ECDSA-AES128-SHA")

    async def test_renegotiation_refused(self) -> None:
        """
        A TLS 1.2 client cannot renegotiate; against a server that allows it,
        the same client does.
        """
        served = Served(self)
        port = await served.listen(echo.EchoFactory())
        tls12 = (SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION)
        with self.assertRaises(SSL.Error):
            await deferToThread(
                blocking_handshake,
                port,
                served.paths.ca,
                versions=tls12,
                renegotiate=True,
            )

        pem = served.paths.server.read_bytes() + served.paths.server_key.read_bytes()
        certificate = PrivateCertificate.loadPEM(pem)
        options = CertificateOptions(
            privateKey=certificate.privateKey.original,
            certificate=certificate.original,
        )
        options.getContext().set_options(_ALLOW_CLIENT_RENEGOTIATION)
        factory = echo.EchoFactory()
        lenient = await SSL4ServerEndpoint(
            reactor, 0, options, interface="127.0.0.1"
        ).listen(factory)
        self.addCleanup(lenient.stopListening)
        self.addCleanup(lambda: bounded(factory.drained()))
        agreed = await deferToThread(
            blocking_handshake,
            lenient.getHost().port,
            served.paths.ca,
            versions=tls12,
            renegotiate=True,
        )
        self.assertEqual(agreed["reply"], b"ping")
        self.assertEqual(agreed["renegotiations"], 1)

    async def test_handshake_deadline(self) -> None:
        """
        A client that connects and never finishes its handshake is dropped
        after ``handshakeTimeout``; one that does is not.
        """
        served = Served(self)
        factory = echo.EchoFactory()
        # The real client must finish its handshake within the deadline too:
        # 2 s is many times what a loaded machine needs.
        port = await served.listen(factory, served.listen_string(handshakeTimeout="2"))
        with capturedLogs() as events:
            silent = await connect("127.0.0.1", port)
            await bounded(silent.closed)
        self.assertTrue(any("not done in" in e["log_format"] for e in events))
        reply = await echo.echo(
            f"tls:localhost:{port}", b"in time", tls=served.trusting, timeout=WAIT
        )
        self.assertEqual(reply, b"in time")

    async def test_alpn_on_every_service(self) -> None:
        """
        A client that offers ALPN, as curl and browsers do, completes its
        handshake with every service, raw TCP ones included.
        """
        served = Served(self)
        for factory in (
            echo.EchoFactory(),
            greeting.GreetingFactory(),
            http.HTTPSite(hello.Root()),
            wsecho.EchoFactory(),
        ):
            port = await served.listen(factory)
            agreed = await deferToThread(
                blocking_handshake,
                port,
                served.paths.ca,
                alpn=[b"h2", b"http/1.1"],
            )
            self.assertEqual(agreed["version"], "TLSv1.3", factory)
            expected = b"http/1.1" if isinstance(factory, http.HTTPSite) else None
            self.assertEqual(agreed["alpn"] or None, expected, factory)


class ServicesOverTLSTests(TestCase):
    """
    Each service with its netlab client over TLS, the client verifying the
    server against the CA that ``netlab certs`` made.
    """

    timeout = 60

    async def test_echo(self) -> None:
        served = Served(self)
        port = await served.listen(echo.EchoFactory())
        message = b"over TLS " * 10_000
        reply = await echo.echo(
            f"tls:localhost:{port}", message, tls=served.trusting, timeout=WAIT
        )
        self.assertEqual(reply, message)
        empty = await echo.echo(
            f"tls:localhost:{port}", b"", tls=served.trusting, timeout=WAIT
        )
        self.assertEqual(empty, b"")

    async def test_greeting_by_ip_address(self) -> None:
        served = Served(self)
        port = await served.listen(greeting.GreetingFactory())
        reply = await greeting.greet(
            f"tls:127.0.0.1:{port}", b"hi", tls=served.trusting, timeout=WAIT
        )
        self.assertEqual(reply, greeting.GREETING)

    async def test_http(self) -> None:
        served = Served(self)
        port = await served.listen(http.HTTPSite(hello.Root()))
        response = await http.fetch(
            f"https://localhost:{port}/", tls=served.trusting, timeout=WAIT
        )
        self.assertEqual((response.code, response.body), (200, hello.HELLO))

    async def test_websocket_mounted_and_standalone(self) -> None:
        served = Served(self)
        for factory, path in (
            (http.HTTPSite(hello.Root()), "/ws"),
            (wsecho.EchoFactory(), "/"),
        ):
            port = await served.listen(factory)
            connection = await websocket.connect(
                f"wss://localhost:{port}{path}", tls=served.trusting, timeout=WAIT
            )
            connection.send("hello")
            self.assertEqual(await bounded(connection.receive()), "Echo: hello")
            await bounded(connection.close())


class VerificationTests(TestCase):
    """
    What a client refuses, and the one line that says why.
    """

    timeout = 60

    def setUp(self) -> None:
        self.pki = PKI(pathlib.Path(self.mktemp()))
        self.root = self.pki.ca("Test Root")

    async def serve(self, leaf, *chain) -> int:
        """
        Serve ``leaf`` with its ``chain`` (up to and including its root).
        """
        bundle = self.pki.bundle(f"{leaf.cert_path.stem}-chain.pem", leaf, *chain)
        # netlab's endpoint serves even an expired certificate: refusing it
        # is the client's job.
        endpoint = serverFromString(reactor, listen_string(leaf.key_path, bundle))
        factory = echo.EchoFactory()
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(factory.drained()))
        return port.getHost().port

    async def refusal(self, port: int, host: str = "localhost", **client) -> str:
        trusting = tls.ClientTLS(**(client or {"cacert": str(self.root.cert_path)}))
        with self.assertRaises(Exception) as caught:
            await echo.echo(f"tls:{host}:{port}", b"x", tls=trusting, timeout=WAIT)
        reason = tls.describe_tls_error(caught.exception)
        self.assertIsNotNone(reason, caught.exception)
        return reason

    async def test_trusted(self) -> None:
        """
        The control: a good certificate, served with its intermediate, is
        accepted by a client that trusts only the root.
        """
        intermediate = self.pki.ca("Test Intermediate", self.root)
        port = await self.serve(
            self.pki.server("good", intermediate), intermediate, self.root
        )
        trusting = tls.ClientTLS(cacert=str(self.root.cert_path))
        reply = await echo.echo(f"tls:localhost:{port}", b"x", tls=trusting)
        self.assertEqual(reply, b"x")

    async def test_unknown_ca(self) -> None:
        other = self.pki.ca("Other Root")
        port = await self.serve(self.pki.server("stranger", other), other)
        reason = await self.refusal(port)
        self.assertTrue(reason.startswith("TLS: untrusted issuer"), reason)
        self.assertIn("CN=Other Root", reason)

    async def test_system_trust_by_default(self) -> None:
        """
        Without --cacert the client trusts only the system's CAs, not ours.
        """
        port = await self.serve(self.pki.server("good", self.root), self.root)
        with self.assertRaises(tls.TLSFailure) as caught:
            await echo.echo(f"tls:localhost:{port}", b"x", timeout=WAIT)
        self.assertIn("untrusted issuer", str(caught.exception))

    async def test_hostname_mismatch(self) -> None:
        port = await self.serve(
            self.pki.server("elsewhere", self.root, ("app.test",)), self.root
        )
        reason = await self.refusal(port)
        self.assertEqual(
            reason, "TLS: hostname mismatch: the certificate is not for localhost"
        )
        by_address = await self.refusal(port, host="127.0.0.1")
        self.assertIn("not for 127.0.0.1", by_address)

    async def test_expired(self) -> None:
        old = self.pki.server(
            "old", self.root, not_before=NOW - 30 * DAY, not_after=NOW - DAY
        )
        with capturedLogs() as events:
            port = await self.serve(old, self.root)
        warnings = [e for e in events if "expired" in e["log_format"]]
        self.assertEqual(len(warnings), 1, events)
        self.assertEqual(await self.refusal(port), "TLS: certificate expired: CN=old")

    async def test_not_yet_valid(self) -> None:
        early = self.pki.server(
            "early", self.root, not_before=NOW + DAY, not_after=NOW + 30 * DAY
        )
        port = await self.serve(early, self.root)
        self.assertEqual(
            await self.refusal(port), "TLS: certificate not yet valid: CN=early"
        )

    async def test_insecure_skips_verification_and_says_so(self) -> None:
        other = self.pki.ca("Other Root")
        port = await self.serve(
            self.pki.server("stranger", other, ("app.test",)), other
        )
        with capturedLogs() as events:
            insecure = tls.ClientTLS(insecure=True)
        self.assertTrue(
            any("NOT be verified" in e["log_format"] for e in events), events
        )
        reply = await echo.echo(f"tls:localhost:{port}", b"x", tls=insecure)
        self.assertEqual(reply, b"x")


class MutualTLSTests(TestCase):
    """
    A service with ``clientCA=`` checks who the client is.
    """

    timeout = 60

    async def start(self, **more: str) -> tuple[Served, int, echo.EchoFactory]:
        served = Served(self)
        factory = echo.EchoFactory()
        more.setdefault("clientCA", escaped(served.paths.ca))
        port = await served.listen(factory, served.listen_string(**more))
        return served, port, factory

    def client(self, served: Served, cert: pathlib.Path, key: pathlib.Path):
        return tls.ClientTLS(cacert=str(served.paths.ca), cert=str(cert), key=str(key))

    async def test_right_certificate_accepted_and_seen(self) -> None:
        served, port, factory = await self.start()
        client = self.client(served, served.paths.client, served.paths.client_key)
        with capturedLogs() as events:
            reply = await echo.echo(f"tls:localhost:{port}", b"me", tls=client)
        self.assertEqual(reply, b"me")
        seen = [e.get("client") for e in events if "client" in e]
        self.assertEqual(seen, ["CN=netlab client,O=netlab"])

    async def test_encrypted_client_key(self) -> None:
        """
        A client key encrypted at rest is read with its passphrase, and
        refused clearly without it.
        """
        served, port, factory = await self.start()
        key = serialization.load_pem_private_key(
            served.paths.client_key.read_bytes(), None
        )
        encrypted = pathlib.Path(self.mktemp())
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"client secret"),
            )
        )
        client = tls.ClientTLS(
            cacert=str(served.paths.ca),
            cert=str(served.paths.client),
            key=str(encrypted),
            passphrase=b"client secret",
        )
        reply = await echo.echo(f"tls:localhost:{port}", b"me", tls=client)
        self.assertEqual(reply, b"me")
        error = self.assertRaises(
            tls.TLSConfigError,
            tls.ClientTLS,
            cert=str(served.paths.client),
            key=str(encrypted),
        )
        self.assertIn("encrypted", str(error))

    async def test_no_certificate_refused(self) -> None:
        served, port, factory = await self.start()
        with self.assertRaises(Exception) as caught:
            await echo.echo(
                f"tls:localhost:{port}", b"me", tls=served.trusting, timeout=WAIT
            )
        reason = tls.describe_tls_error(caught.exception)
        self.assertIsNotNone(reason, caught.exception)
        self.assertIn("certificate required", reason)

    async def test_certificate_from_another_ca_refused(self) -> None:
        served, port, factory = await self.start()
        pki = PKI(pathlib.Path(self.mktemp()))
        stranger = pki.client("stranger", pki.ca("Other Root"))
        client = self.client(served, stranger.cert_path, stranger.key_path)
        with self.assertRaises(Exception) as caught:
            await echo.echo(f"tls:localhost:{port}", b"me", tls=client, timeout=WAIT)
        reason = tls.describe_tls_error(caught.exception)
        self.assertIsNotNone(reason, caught.exception)
        self.assertIn("unknown ca", reason)

    async def test_optional(self) -> None:
        """
        With ``clientCert=optional`` a client without a certificate gets in
        too, and the service sees that it showed none.
        """
        served, port, factory = await self.start(clientCert="optional")
        with capturedLogs() as events:
            reply = await echo.echo(
                f"tls:localhost:{port}", b"anon", tls=served.trusting
            )
        self.assertEqual(reply, b"anon")
        self.assertEqual([e["client"] for e in events if "client" in e], [None])


class CommandTests(TestCase):
    """
    The ``netlab`` clients' TLS options, and their one-line failures.
    """

    timeout = 120

    async def test_clients_over_tls(self) -> None:
        served = Served(self)
        echo_port = await served.listen(echo.EchoFactory())
        web_port = await served.listen(http.HTTPSite(hello.Root()))
        ca = ["--cacert", str(served.paths.ca)]
        result = await run(
            python("-m", "netlab", "echo", *ca, f"tls:localhost:{echo_port}", "hi")
        )
        self.assertEqual((result.status, result.out), (0, b"hi\n"), result)
        result = await run(
            python("-m", "netlab", "get", *ca, f"https://localhost:{web_port}/")
        )
        self.assertEqual(result.status, 0, result)
        self.assertEqual(result.out, b"200\nHello, world!\n")
        result = await run(
            python("-m", "netlab", "ws", *ca, f"wss://localhost:{web_port}/ws", "yo")
        )
        self.assertEqual((result.status, result.out), (0, b"Echo: yo\n"), result)

    async def test_untrusted_server(self) -> None:
        served = Served(self)
        port = await served.listen(http.HTTPSite(hello.Root()))
        for url in (f"https://localhost:{port}/", f"wss://localhost:{port}/ws"):
            command = "get" if url.startswith("https") else "ws"
            result = await run(
                python("-m", "netlab", command, url, "x")[:-1]
                + (["x"] if command == "ws" else [])
            )
            self.assertEqual(result.status, 1, result)
            self.assertEqual(result.err.count(b"\n"), 1, result)
            self.assertIn(b"TLS: untrusted issuer", result.err)

    async def test_insecure_warns(self) -> None:
        served = Served(self)
        port = await served.listen(echo.EchoFactory())
        result = await run(
            python("-m", "netlab", "echo", "--insecure", f"tls:localhost:{port}", "x")
        )
        self.assertEqual((result.status, result.out), (0, b"x\n"), result)
        self.assertIn(b"WARNING: --insecure", result.err)

    async def test_usage_mistakes(self) -> None:
        for args in (
            ["echo", "--cacert", "/nonexistent", "tls:localhost:1", "x"],
            ["echo", "--cacert", __file__, "tcp:localhost:1", "x"],
            ["echo", "tls:localhost:1:trustRoots=/etc", "x"],
            ["get", "--insecure", "http://localhost:1/"],
            ["ws", "--cert", __file__, "ws://localhost:1/"],
            ["get", "--insecure", "--cacert", __file__, "https://localhost:1/"],
        ):
            result = await run(python("-m", "netlab", *args))
            self.assertEqual(result.status, 2, (args, result))
            self.assertEqual(result.err.count(b"\n"), 1, (args, result))


class MistakeTests(TestCase):
    """
    What a user gets wrong, and the one line that says so.
    """

    timeout = 60

    def test_client_key_mistakes(self) -> None:
        served_paths = certs.make_certificates(pathlib.Path(self.mktemp()))
        other = certs.make_certificates(pathlib.Path(self.mktemp()))
        for arguments, expected in (
            (
                {"cert": served_paths.client, "key": other.client_key},
                "is not the key of the certificate",
            ),
            ({"cert": served_paths.client}, "holds no key: give it with --key"),
        ):
            error = self.assertRaises(
                tls.TLSConfigError,
                tls.ClientTLS,
                **{name: str(path) for name, path in arguments.items()},
            )
            self.assertIn(expected, str(error))
        encrypted = certs.make_certificates(
            pathlib.Path(self.mktemp()), passphrase=b"secret"
        )
        error = self.assertRaises(
            tls.TLSConfigError,
            tls.ClientTLS,
            cert=str(encrypted.client),
            key=str(encrypted.client_key),
        )
        self.assertIn("give its passphrase with --passphrase-file", str(error))

    def test_missing_intermediate_between_leaf_and_root(self) -> None:
        pki = PKI(pathlib.Path(self.mktemp()))
        root = pki.ca("Test Root")
        intermediate = pki.ca("Test Intermediate", root)
        leaf = pki.server("leaf", intermediate)
        gap = pki.bundle("gap.pem", leaf, root)
        error = self.assertRaises(
            tls.TLSConfigError,
            serverFromString,
            reactor,
            listen_string(leaf.key_path, gap),
        )
        self.assertIn(
            "incomplete: add the certificate of 'CN=Test Intermediate'", str(error)
        )

    async def test_plain_client_on_a_tls_port(self) -> None:
        served = Served(self)
        for factory, call in (
            (echo.EchoFactory(), echo.echo),
            (greeting.GreetingFactory(), greeting.greet),
        ):
            port = await served.listen(factory)
            with self.assertRaises(tcp.BadReply):
                await call(f"tcp:127.0.0.1:{port}", b"hello", timeout=WAIT)

    async def test_tls_client_on_a_plain_http_port(self) -> None:
        """
        A TLS client is turned away at once, not after the head timeout.
        """
        site = http.HTTPSite(hello.Root(), limits=Limits(head_timeout=3600))
        served = Served(self)
        port = await served.listen(site, "tcp:0:interface=127.0.0.1")
        with self.assertRaises(Exception) as caught:
            await http.fetch(
                f"https://localhost:{port}/", tls=served.trusting, timeout=WAIT
            )
        self.assertNotIsInstance(caught.exception, defer.TimeoutError)
