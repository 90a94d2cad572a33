"""
Certificates made in the test, for the cases ``netlab certs`` never makes:
intermediates, other CAs, wrong names, expired and not-yet-valid certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


@dataclass
class Issued:
    """
    A certificate and its key, in memory and as PEM files.
    """

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: pathlib.Path
    key_path: pathlib.Path

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


class PKI:
    """
    Makes certificates in ``directory``.
    """

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _issue(
        self,
        name: str,
        issuer: Issued | None,
        *,
        ca: bool,
        hosts: tuple[str, ...] = (),
        client: bool = False,
        not_before: datetime.datetime = NOW - DAY,
        not_after: datetime.datetime = NOW + 30 * DAY,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
        )
        if not ca:
            usage = (
                ExtendedKeyUsageOID.CLIENT_AUTH
                if client
                else (ExtendedKeyUsageOID.SERVER_AUTH)
            )
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
        signer = issuer.key if issuer else key
        certificate = builder.sign(signer, hashes.SHA256())
        stem = name.replace(" ", "-")
        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Issued(certificate, key, cert_path, key_path)

    def ca(self, name: str, issuer: Issued | None = None) -> Issued:
        """
        A root CA, or an intermediate one when ``issuer`` is given.
        """
        return self._issue(name, issuer, ca=True)

    def server(
        self, name: str, issuer: Issued, hosts: tuple[str, ...] = ("localhost",), **kw
    ) -> Issued:
        """
        A server certificate for ``hosts``.
        """
        return self._issue(name, issuer, ca=False, hosts=hosts, **kw)

    def client(self, name: str, issuer: Issued) -> Issued:
        """
        A client certificate.
        """
        return self._issue(name, issuer, ca=False, client=True)

    def bundle(self, name: str, *parts: Issued) -> pathlib.Path:
        """
        :return: a PEM file holding ``parts``' certificates, in order.
        """
        path = self.directory / name
        path.write_bytes(
            b"".join(
                p.certificate.public_bytes(serialization.Encoding.PEM) for p in parts
            )
        )
        return path
