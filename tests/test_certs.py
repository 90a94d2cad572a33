"""
``netlab certs``: what it writes, and that real TLS works with it.
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
import shlex
import shutil
import stat
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import certs
from netlab.services import greeting
from netlab.tls import hardened
from tests.support import Peer, bounded, python, run


def scratch(test: SynchronousTestCase) -> pathlib.Path:
    directory = pathlib.Path(tempfile.mkdtemp())
    test.addCleanup(shutil.rmtree, directory)
    return directory


def load(path: pathlib.Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


class MakeCertificatesTests(SynchronousTestCase):
    def test_files_and_modes(self) -> None:
        paths = certs.make_certificates(scratch(self) / "new")
        for path in (paths.ca_key, paths.server_key, paths.client_key):
            self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600, path)
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            self.assertIsNotNone(key)
        for path in (paths.ca, paths.server, paths.client):
            self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o644, path)

    def test_chain_names_and_usages(self) -> None:
        paths = certs.make_certificates(scratch(self), hosts=["app.test", "192.0.2.7"])
        ca, server, client = load(paths.ca), load(paths.server), load(paths.client)
        server.verify_directly_issued_by(ca)
        client.verify_directly_issued_by(ca)
        self.assertTrue(
            ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        )
        names = server.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(
            names.get_values_for_type(x509.DNSName), ["localhost", "app.test"]
        )
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.7")],
        )

        def usages(certificate: x509.Certificate) -> list:
            return list(
                certificate.extensions.get_extension_for_class(
                    x509.ExtendedKeyUsage
                ).value
            )

        self.assertEqual(usages(server), [ExtendedKeyUsageOID.SERVER_AUTH])
        self.assertEqual(usages(client), [ExtendedKeyUsageOID.CLIENT_AUTH])

    def test_validity(self) -> None:
        now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
        paths = certs.make_certificates(scratch(self), days=30, now=now)
        server = load(paths.server)
        self.assertLess(server.not_valid_before_utc, now)
        self.assertEqual(server.not_valid_after_utc, now + datetime.timedelta(days=30))

    def test_keys_encrypted_at_rest(self) -> None:
        paths = certs.make_certificates(scratch(self), passphrase=b"correct horse")
        for path in (paths.ca_key, paths.server_key, paths.client_key):
            pem = path.read_bytes()
            self.assertTrue(pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"))
            serialization.load_pem_private_key(pem, b"correct horse")
            self.assertRaises(TypeError, serialization.load_pem_private_key, pem, None)
            self.assertRaises(
                ValueError, serialization.load_pem_private_key, pem, b"no"
            )

    def test_never_overwrites(self) -> None:
        directory = scratch(self)
        paths = certs.make_certificates(directory)
        before = paths.server_key.read_bytes()
        self.assertRaises(FileExistsError, certs.make_certificates, directory)
        self.assertEqual(paths.server_key.read_bytes(), before)


class TLSTests(TestCase):
    timeout = 60

    async def serve(self, paths: certs.Certificates) -> int:
        endpoint = serverFromString(
            reactor,
            f"ssl:0:interface=127.0.0.1:privateKey={paths.server_key}"
            f":certKey={paths.server}",
        )
        factory = greeting.GreetingFactory()
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(factory.drained()))
        return port.getHost().port

    async def greet(self, port: int, ca: pathlib.Path, name: str) -> Peer:
        trust = Certificate.loadPEM(ca.read_bytes())
        client = wrapClientTLS(
            optionsForClientTLS(name, trustRoot=trust),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        )
        peer = await bounded(connectProtocol(client, Peer()))
        peer.transport.write(b"Hello over TLS")
        await bounded(peer.closed)
        return peer

    async def test_tls_with_the_new_ca(self) -> None:
        """
        A Twisted ssl: endpoint serves the new server certificate, and a client
        that trusts only the new CA verifies it for "localhost".
        """
        paths = certs.make_certificates(scratch(self))
        port = await self.serve(paths)
        peer = await self.greet(port, paths.ca, "localhost")
        self.assertEqual(bytes(peer.received), greeting.GREETING)

    async def test_other_ca_or_name_refused(self) -> None:
        paths = certs.make_certificates(scratch(self))
        other = certs.make_certificates(scratch(self))
        port = await self.serve(paths)
        for ca, name in ((other.ca, "localhost"), (paths.ca, "elsewhere.test")):
            peer = await self.greet(port, ca, name)
            self.assertEqual(bytes(peer.received), b"", (ca, name))
            # An unknown CA fails the handshake; a wrong name fails
            # service-identity's check right after it.
            self.assertTrue(
                peer.reason.check(SSL.Error, VerificationError), peer.reason
            )


class CommandTests(TestCase):
    timeout = 60

    async def test_command(self) -> None:
        directory = scratch(self) / "certs"
        passphrase = directory.parent / "passphrase"
        passphrase.write_bytes(b"s3cret\n")
        result = await run(
            python(
                "-m",
                "netlab",
                "certs",
                "--host",
                "app.test",
                "--passphrase-file",
                str(passphrase),
                str(directory),
            )
        )
        self.assertEqual(result.status, 0, result)
        self.assertIn(b"--listen ssl:8443:privateKey=", result.out)
        self.assertIn(b":passphraseFile=" + str(passphrase).encode(), result.out)
        self.assertIn(
            b"curl --cacert " + str(directory / "ca.pem").encode(), result.out
        )
        key = (directory / "server.key").read_bytes()
        serialization.load_pem_private_key(key, b"s3cret")

        again = await run(python("-m", "netlab", "certs", str(directory)))
        self.assertEqual(again.status, 1, again)
        self.assertEqual(again.err.count(b"\n"), 1, again)
        self.assertIn(b"already exists", again.err)

        missing = await run(
            python("-m", "netlab", "certs", "--passphrase-file", "/nonexistent", "x")
        )
        self.assertEqual(missing.status, 2, missing)
        self.assertIn(b"cannot read passphrase file", missing.err)


class PrintedCommandTests(TestCase):
    timeout = 60

    async def test_pasteable_with_awkward_paths(self) -> None:
        """
        The printed commands survive a shell, even for a folder whose name
        has a space and a colon.
        """
        directory = scratch(self) / "my certs:v2"
        result = await run(python("-m", "netlab", "certs", str(directory)))
        self.assertEqual(result.status, 0, result)
        [line] = [x for x in result.out.decode().splitlines() if "twistd" in x]
        words = shlex.split(line)
        listen = words[words.index("--listen") + 1]
        serverFromString(reactor, hardened(listen))  # loads and checks the files
        [get] = [x for x in result.out.decode().splitlines() if "--cert " in x]
        self.assertEqual(
            shlex.split(get)[shlex.split(get).index("--cert") + 1],
            str(directory / "client.pem"),
        )

    async def test_bad_host_is_a_usage_error(self) -> None:
        result = await run(
            python("-m", "netlab", "certs", "--host", "bad host!", str(scratch(self)))
        )
        self.assertEqual(result.status, 2, result)
        self.assertEqual(result.err.count(b"\n"), 1, result)
        self.assertIn(b"bad host", result.err)
