"""
Certificates for people who have none: a private CA, a server certificate and
a client certificate, made with ``cryptography``.

``netlab certs DIR`` writes::

    DIR/ca.pem      the CA certificate: what clients (and, for mutual TLS,
                    servers) trust
    DIR/ca.key      the CA's key, to sign more certificates later
    DIR/server.pem  a server certificate for localhost, 127.0.0.1, ::1 and
    DIR/server.key  each --host, followed by the CA's (the whole chain, as
                    netlab's TLS endpoint wants it)
    DIR/client.pem  a client certificate, for mutual TLS
    DIR/client.key

Private keys are created with mode 0600 and, given a passphrase, encrypted at
rest (PKCS#8 with the best encryption ``cryptography`` offers).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Names every server certificate carries.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
#: How long the server and client certificates are valid (the most that
#: browsers and Apple's platforms accept).
LEAF_DAYS = 397
#: How long the CA is valid.
CA_DAYS = 3650


@dataclass(frozen=True)
class Certificates:
    """
    Where :func:`make_certificates` wrote each file.
    """

    ca: Path
    ca_key: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path

    def paths(self) -> list[Path]:
        """
        :return: every file, certificates and keys.
        """
        return [
            self.ca,
            self.ca_key,
            self.server,
            self.server_key,
            self.client,
            self.client_key,
        ]


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netlab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_host(host: str) -> str:
    """
    :return: ``host``, if it can name a server in a certificate: an IP
        address, or a DNS name (its first label may be ``*``).
    :raise ValueError: if it cannot.
    """
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
    if not labels or len(host) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(f"bad host {host!r}: expected a DNS name or an IP address")
    return host


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(check_host(host))


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """
    :return: a CA's key usage (sign certificates and CRLs), or a TLS leaf's
        (sign handshakes: ECDSA keys need nothing else).
    """
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _sign(
    builder: x509.CertificateBuilder,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    now: datetime.datetime,
) -> x509.Certificate:
    return (
        builder.public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def _leaf(
    common_name: str,
    usage: x509.ObjectIdentifier,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    days: int,
    names: Iterable[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    names = list(names)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]),
            critical=False,
        )
    return _sign(builder, key, ca_key, days, now), key


def _ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("netlab private CA"))
        .issuer_name(_name("netlab private CA"))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
    )
    return _sign(builder, key, key, CA_DAYS, now), key


def _write(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key or certificate someone already relies on;
    # the mode is set at creation, so a key is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def make_certificates(
    directory: Path,
    hosts: Iterable[str] = (),
    passphrase: bytes | None = None,
    client_name: str = "netlab client",
    days: int = LEAF_DAYS,
    now: datetime.datetime | None = None,
) -> Certificates:
    """
    Make a private CA, a server and a client certificate in ``directory``.

    :param hosts: names (or IP addresses) the server certificate also covers.
    :param passphrase: if given, every private key is encrypted with it.
    :param days: how long the server and client certificates are valid.
    :raise FileExistsError: if any of the files is already there.
    """
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    paths = Certificates(
        *(
            directory / name
            for name in (
                "ca.pem",
                "ca.key",
                "server.pem",
                "server.key",
                "client.pem",
                "client.key",
            )
        )
    )
    for path in paths.paths():
        if path.exists():
            raise FileExistsError(f"{path} already exists")

    ca, ca_key = _ca(now)
    names = list(dict.fromkeys([*LOCAL_NAMES, *hosts]))
    server, server_key = _leaf(
        names[0], ExtendedKeyUsageOID.SERVER_AUTH, ca, ca_key, now, days, names
    )
    client, client_key = _leaf(
        client_name, ExtendedKeyUsageOID.CLIENT_AUTH, ca, ca_key, now, days
    )

    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )

    def pem(*certificates: x509.Certificate) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in certificates
        )

    _write(paths.ca, pem(ca), 0o644)
    # The server serves its whole chain; a private root costs clients nothing
    # and lets the endpoint check, at start-up, that nothing is missing.
    _write(paths.server, pem(server, ca), 0o644)
    _write(paths.client, pem(client), 0o644)
    for key, path in (
        (ca_key, paths.ca_key),
        (server_key, paths.server_key),
        (client_key, paths.client_key),
    ):
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        _write(path, pem, 0o600)
    return paths


def usage_lines(paths: Certificates, passphrase_file: str | None = None) -> list[str]:
    """
    :param passphrase_file: where the keys' passphrase is, if they are encrypted.
    :return: lines telling how to use the certificates, to print; each
        command is quoted for a POSIX shell, to paste as it is.
    """

    def escaped(path: Path | str) -> str:
        # Endpoint strings separate fields with colons.
        return str(Path(path).resolve()).replace("\\", "\\\\").replace(":", "\\:")

    def shell(*words: str | Path) -> str:
        return " ".join(shlex.quote(str(word)) for word in words)

    listen = (
        f"ssl:8443:privateKey={escaped(paths.server_key)}"
        f":certKey={escaped(paths.server)}"
    )
    client: list[str | Path] = ["--cert", paths.client, "--key", paths.client_key]
    if passphrase_file is not None:
        listen += f":passphraseFile={escaped(passphrase_file)}"
        client += ["--passphrase-file", passphrase_file]
    url = "https://localhost:8443/"
    return [
        f"wrote {', '.join(str(p) for p in paths.paths())}",
        "serve TLS (on 127.0.0.1) with any netlab plugin, for example:",
        "  " + shell("twistd", "-n", "netlab-http", "--listen", listen),
        "and check it, trusting only the new CA:",
        "  " + shell("netlab", "get", "--cacert", paths.ca, url),
        "  " + shell("curl", "--cacert", paths.ca, url),
        "mutual TLS: add this to the --listen string",
        f"  :clientCA={escaped(paths.ca)}",
        "and give clients the client certificate:",
        "  " + shell("netlab", "get", "--cacert", paths.ca, *client, url),
        f"keep {paths.ca_key} private: it can sign more certificates",
    ]
