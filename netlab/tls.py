"""
TLS for netlab's services and clients, with defaults you cannot get subtly
wrong.

Servers: the ``netlab-ssl:`` endpoint string takes the keys of Twisted's
``ssl:`` and a few more (see :doc:`/security`)::

    netlab-ssl:8443:privateKey=server.key:certKey=server.pem:clientCA=ca.pem

netlab's plugins read a plain ``ssl:`` string as ``netlab-ssl:``, so every
service gets TLS 1.2 or newer, forward-secret AEAD cipher suites only, no
client renegotiation, and a certificate chain checked before it listens.
:func:`server_options` builds the same policy for your own endpoints.

Clients: :class:`ClientTLS` verifies the server (system trust, or a private
CA), checks its hostname or IP address with ``service_identity``, and can show
a client certificate. Its failures say what failed, as :class:`TLSFailure`.
"""

from __future__ import annotations

import datetime
import os
import re
import ssl as stdlib_ssl
import warnings
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocolNegotiationFactory,
    ISSLTransport,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from zope.interface import implementer

#: The endpoint-string prefix of netlab's hardened TLS server endpoint.
PREFIX = "netlab-ssl"
#: Seconds a TLS client has to complete its handshake.
HANDSHAKE_TIMEOUT = 10.0

#: TLS 1.2 suites with forward secrecy (ECDHE) and authenticated encryption
#: (GCM, ChaCha20-Poly1305). Every TLS 1.3 suite already is both.
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

_VERSIONS = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}

# What a client certificate check can be set to, and the verify flags it means.
_CLIENT_CERT = {"required": True, "optional": False}

_log = Logger()


class TLSConfigError(ValueError):
    """
    A TLS setting cannot be used; the message says which and why, in one line.
    """


class TLSFailure(Exception):
    """
    A client refused the server's certificate; the message says why.
    """


def read_passphrase(
    passphrase_file: str | None = None, passphrase_env: str | None = None
) -> bytes | None:
    """
    Read a private key's passphrase from a file or an environment variable,
    never from a command line (where ``ps`` shows it to everyone).

    :return: the passphrase (one trailing newline removed), or ``None`` when
        neither source is given.
    """
    if passphrase_file and passphrase_env:
        raise TLSConfigError("give passphraseFile= or passphraseEnv=, not both")
    if passphrase_file:
        try:
            data = Path(passphrase_file).read_bytes()
        except OSError as error:
            raise TLSConfigError(
                f"cannot read passphrase file {passphrase_file}: {error.strerror}"
            ) from None
        data = data.removesuffix(b"\n").removesuffix(b"\r")
    elif passphrase_env:
        value = os.environ.get(passphrase_env)
        if value is None:
            raise TLSConfigError(
                f"environment variable {passphrase_env} (the passphrase) is not set"
            )
        data = value.encode()
    else:
        return None
    if not data:
        raise TLSConfigError("the passphrase is empty")
    return data


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TLSConfigError(f"cannot read {what} {path}: {error.strerror}") from None


def load_private_key(
    path: str,
    passphrase: bytes | None = None,
    how: str = "passphraseFile= or passphraseEnv=",
) -> crypto.PKey:
    """
    Load a PEM private key, decrypting it with ``passphrase`` when it is
    encrypted.

    :param how: how the user gives the passphrase, for the error message.
    """
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError:
        if passphrase is None:
            raise TLSConfigError(
                f"{path}: the private key is encrypted; give its passphrase with {how}"
            ) from None
        raise TLSConfigError(f"{path}: the private key is not encrypted") from None
    except ValueError:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise TLSConfigError(f"{path}: wrong passphrase for the key") from None
        raise TLSConfigError(f"{path}: not a PEM private key") from None
    return crypto.PKey.from_cryptography_key(key)  # type: ignore[arg-type]


def load_certificates(path: str) -> list[x509.Certificate]:
    """
    :return: every certificate in a PEM file, in order.
    """
    data = _read(path, "certificate file")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(f"{path}: no PEM certificate in it") from None
    return certificates


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except Exception:  # wrong signature, or a key type that cannot sign
        return False
    return True


def _system_issuer(certificate: x509.Certificate) -> x509.Certificate | None:
    """
    :return: the certificate in the system's trust store that issued
        ``certificate``, if any.
    """
    paths = stdlib_ssl.get_default_verify_paths()
    candidates: list[Path] = []
    if paths.cafile:
        candidates.append(Path(paths.cafile))
    if paths.capath:
        # OpenSSL's hashed directory: files named after the subject's hash.
        issuer_hash = crypto.X509.from_cryptography(certificate).get_issuer().hash()
        candidates.extend(sorted(Path(paths.capath).glob(f"{issuer_hash:08x}.*")))
    for path in candidates:
        try:
            with warnings.catch_warnings():
                # Some old roots in system bundles have serial numbers that
                # cryptography warns about; they are not ours to fix.
                warnings.simplefilter("ignore")
                roots = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            continue
        for root in roots:
            if root.subject == certificate.issuer and _issued_by(certificate, root):
                return root
    return None


def check_chain(chain: list[x509.Certificate], source: str) -> None:
    """
    Check that ``chain`` (the server's certificate first) is complete: each
    certificate issued by the next, and the last one a root or issued by a
    root the system trusts. A missing intermediate is an error here rather
    than a surprise for some clients later.
    """
    for certificate, issuer in zip(chain, chain[1:], strict=False):
        if not _issued_by(certificate, issuer) and not any(
            c.subject == certificate.issuer for c in chain
        ):
            raise TLSConfigError(
                f"{source}: the chain is incomplete: add the certificate of "
                f"{certificate.issuer.rfc4514_string()!r}, which issued "
                f"{certificate.subject.rfc4514_string()!r}"
            )
        if not _issued_by(certificate, issuer):
            raise TLSConfigError(
                f"{source}: {issuer.subject.rfc4514_string()!r} did not issue "
                f"{certificate.subject.rfc4514_string()!r}: put the chain in order, "
                "server certificate first"
            )
    last = chain[-1]
    if last.issuer == last.subject and _issued_by(last, last):
        return
    if _system_issuer(last) is None:
        raise TLSConfigError(
            f"{source}: the chain is incomplete: add the certificate of "
            f"{last.issuer.rfc4514_string()!r} (and its issuers) after the "
            "server certificate, or in extraCertChain="
        )


def _warn_if_not_current(certificate: x509.Certificate, source: str) -> None:
    # Served all the same (a renewal may be on its way), but every client
    # will refuse it: say so where the operator looks.
    now = datetime.datetime.now(datetime.UTC)
    if now > certificate.not_valid_after_utc:
        _log.warn(
            "{source}: the certificate expired on {date}; clients will refuse it",
            source=source,
            date=certificate.not_valid_after_utc.isoformat(),
        )
    elif now < certificate.not_valid_before_utc:
        _log.warn(
            "{source}: the certificate is not valid before {date}",
            source=source,
            date=certificate.not_valid_before_utc.isoformat(),
        )


class KeyLog:
    """
    Appends each TLS session's secrets to ``path`` in the NSS key log format
    that Wireshark reads (Preferences, TLS, "(Pre)-Master-Secret log"), so a
    capture of the encrypted traffic can be read in the clear.

    Anyone with the file can decrypt those sessions: it is created 0600, and
    netlab only writes one when asked (``SSLKEYLOGFILE`` or
    ``--tls-keylog``).
    """

    _log = Logger()

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)
        self._log.warn(
            "TLS secrets are being written to {path}: whoever reads it can "
            "decrypt this process's TLS traffic",
            path=path,
        )

    def __call__(self, connection: SSL.Connection, line: bytes) -> None:
        try:
            self._file.write(line + b"\n")
        except OSError as error:
            self._log.warn(
                "cannot write TLS key log {path}: {error}",
                path=self.path,
                error=error.strerror,
            )


_keylog: KeyLog | None = None


def use_keylog(path: str | None) -> None:
    """
    Log the secrets of every TLS context netlab makes from now on to
    ``path`` (``None``: stop). Without a call, the ``SSLKEYLOGFILE``
    environment variable decides, as it does for browsers and curl.
    """
    global _keylog
    if _keylog is not None and _keylog.path == path:
        return
    _keylog = KeyLog(path) if path else None


def _add_keylog(context: SSL.Context) -> None:
    if _keylog is None and os.environ.get("SSLKEYLOGFILE"):
        use_keylog(os.environ["SSLKEYLOGFILE"])
    if _keylog is not None:
        context.set_keylog_callback(_keylog)


class _HardenedOptions(ssl.CertificateOptions):
    def _makeContext(self, skipCiphers: bool = False) -> SSL.Context:
        context = super()._makeContext(skipCiphers)
        _add_keylog(context)
        # Client-initiated renegotiation is a cheap way to make a server do
        # expensive handshakes; TLS 1.3 has none, this refuses it in 1.2.
        context.set_options(SSL.OP_NO_RENEGOTIATION)
        # Twisted's ALPN callback fails the handshake ("internal error") when
        # the client offers only protocols the service does not name, as
        # curl's h2 and http/1.1 against a raw TCP service. Say "none agreed"
        # instead, and the handshake goes on.
        context.set_alpn_select_callback(_select_protocol)
        return context


def _select_protocol(connection: SSL.Connection, offered: list[bytes]) -> Any:
    factory = connection.get_app_data().factory.wrappedFactory
    negotiation = IProtocolNegotiationFactory(factory, None)
    acceptable = negotiation.acceptableProtocols() if negotiation else []
    for protocol in acceptable:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _check_pair(
    certificate: crypto.X509, key: crypto.PKey, key_path: str, cert_path: str
) -> None:
    if certificate.get_pubkey().to_cryptography_key().public_numbers() != (
        key.to_cryptography_key().public_key().public_numbers()  # type: ignore[union-attr]
    ):
        raise TLSConfigError(
            f"{key_path} is not the key of the certificate in {cert_path}"
        )


def server_options(
    private_key: str,
    cert_key: str | None = None,
    *,
    extra_chain: str | None = None,
    passphrase: bytes | None = None,
    client_ca: str | None = None,
    client_cert: str | None = None,
    min_tls: str = "1.2",
) -> ssl.CertificateOptions:
    """
    netlab's TLS server policy, as options for any Twisted TLS endpoint.

    :param private_key: the PEM private key file.
    :param cert_key: the PEM certificate file, optionally followed by its
        chain; defaults to ``private_key``.
    :param extra_chain: a PEM file with more of the chain.
    :param passphrase: decrypts an encrypted private key.
    :param client_ca: PEM certificates of the CAs whose client certificates
        are accepted (mutual TLS).
    :param client_cert: with ``client_ca``, ``"required"`` (the default) or
        ``"optional"``.
    :param min_tls: the lowest TLS version accepted: ``"1.2"`` or ``"1.3"``.
    :raise TLSConfigError: with a one-line reason when anything is unusable.
    """
    if min_tls not in _VERSIONS:
        raise TLSConfigError(
            f"minTLS={min_tls} is not allowed: use 1.2 or 1.3 (1.0 and 1.1 are broken)"
        )
    if client_cert is not None:
        if client_ca is None:
            raise TLSConfigError("clientCert= needs clientCA=")
        if client_cert not in _CLIENT_CERT:
            raise TLSConfigError(
                f"clientCert={client_cert} is not allowed: use required or optional"
            )
    chain = load_certificates(cert_key or private_key)
    if extra_chain:
        chain += load_certificates(extra_chain)
    check_chain(chain, cert_key or private_key)
    _warn_if_not_current(chain[0], cert_key or private_key)
    key = load_private_key(private_key, passphrase)
    certificate = crypto.X509.from_cryptography(chain[0])
    _check_pair(certificate, key, private_key, cert_key or private_key)
    arguments: dict[str, Any] = {}
    if client_ca is not None:
        authorities = [
            ssl.Certificate(crypto.X509.from_cryptography(c))
            for c in load_certificates(client_ca)
        ]
        arguments.update(
            verify=True,
            caCerts=[a.original for a in authorities],
            requireCertificate=_CLIENT_CERT[client_cert or "required"],
        )
    return _HardenedOptions(
        privateKey=key,
        certificate=certificate,
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(MODERN_CIPHERS),
        raiseMinimumTo=_VERSIONS[min_tls],
        **arguments,
    )


def server_endpoint(
    reactor: Any,
    port: str,
    privateKey: str = "server.pem",
    certKey: str | None = None,
    extraCertChain: str | None = None,
    passphraseFile: str | None = None,
    passphraseEnv: str | None = None,
    clientCA: str | None = None,
    clientCert: str | None = None,
    minTLS: str = "1.2",
    handshakeTimeout: str = str(HANDSHAKE_TIMEOUT),
    interface: str = "127.0.0.1",
    backlog: str = "50",
    **unknown: str,
) -> IStreamServerEndpoint:
    """
    Parse the keys of a ``netlab-ssl:`` endpoint string into an endpoint.
    """

    if unknown:
        raise TLSConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
            f"{PREFIX}: takes privateKey, certKey, extraCertChain, passphraseFile, "
            "passphraseEnv, clientCA, clientCert, minTLS, handshakeTimeout, "
            "interface, backlog"
        )
    for name, value in (("port", port), ("backlog", backlog)):
        if not value.isdigit():
            raise TLSConfigError(f"the {name} must be a number, not {value!r}")
    number, queue = int(port), int(backlog)
    try:
        deadline = float(handshakeTimeout)
    except ValueError:
        deadline = -1.0
    if not 0 < deadline < float("inf"):
        raise TLSConfigError(
            f"handshakeTimeout must be a positive number of seconds, not "
            f"{handshakeTimeout!r}"
        )
    options = server_options(
        privateKey,
        certKey,
        extra_chain=extraCertChain,
        passphrase=read_passphrase(passphraseFile, passphraseEnv),
        client_ca=clientCA,
        client_cert=clientCert,
        min_tls=minTLS,
    )
    from twisted.internet.endpoints import TCP4ServerEndpoint

    return _TLSEndpoint(
        TCP4ServerEndpoint(reactor, number, queue, interface), options, deadline
    )


class _DeadlineTLSProtocol(TLSMemoryBIOProtocol):
    """
    Twisted's TLS protocol, dropping a client whose handshake is not done
    within the factory's ``seconds``.
    """

    _timer: Any = None

    def makeConnection(self, transport: Any) -> None:
        self._timer = self.factory.reactor.callLater(
            self.factory.seconds, self._expired
        )
        super().makeConnection(transport)

    def _expired(self) -> None:
        self._timer = None
        # Twisted's own flag; the handshake listener is the wrapped protocol's.
        if not self._handshakeDone:
            _log.info(
                "TLS handshake from {peer} not done in {seconds}s: dropped",
                peer=self.getPeer(),
                seconds=self.factory.seconds,
            )
            self.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        super().connectionLost(reason)


class _DeadlineTLSFactory(TLSMemoryBIOFactory):
    protocol = _DeadlineTLSProtocol

    def __init__(
        self, options: Any, wrapped: Any, seconds: float, reactor: Any
    ) -> None:
        super().__init__(options, False, wrapped)
        self.seconds = seconds
        self.reactor = reactor


@implementer(IStreamServerEndpoint)
class _TLSEndpoint:
    """
    Listens on a TCP endpoint with TLS, handshake deadline included.
    """

    def __init__(self, endpoint: Any, options: Any, seconds: float) -> None:
        self._endpoint = endpoint
        self._options = options
        self._seconds = seconds

    def listen(self, factory: Any) -> Any:
        from twisted.internet import reactor

        return self._endpoint.listen(
            _DeadlineTLSFactory(self._options, factory, self._seconds, reactor)
        )


def hardened(description: str) -> str:
    """
    :return: ``description`` with Twisted's ``ssl:`` prefix read as
        ``netlab-ssl:``; any other endpoint string unchanged.
    """
    prefix, separator, rest = description.partition(":")
    if separator and prefix == "ssl":
        return f"{PREFIX}:{rest}"
    return description


def is_tls(transport: Any) -> bool:
    """
    :return: whether ``transport`` speaks TLS, even through a protocol
        wrapper (a wiretap) that does not claim ``ISSLTransport``.
    """
    if ISSLTransport.providedBy(transport):
        return True
    return callable(getattr(transport, "getPeerCertificate", None))


def shut_down_writing(transport: Any) -> None:
    """
    Stop sending and keep reading (a TCP half-close), so that the peer reads
    all that was sent before the connection closes. TLS has no half-close:
    its close alert ends both directions, so there (and on a transport that
    cannot half-close) this closes.
    """
    lose_write = getattr(transport, "loseWriteConnection", None)
    if lose_write is None or is_tls(transport):
        transport.loseConnection()
    else:
        lose_write()


def client_identity(transport: Any) -> str | None:
    """
    :return: the subject of the certificate the peer showed over TLS
        (``"CN=netlab client"``), or ``None`` when it showed none.
    """
    getter = getattr(transport, "getPeerCertificate", None)
    certificate = getter() if getter is not None else None
    if certificate is None:
        return None
    return certificate.to_cryptography().subject.rfc4514_string()


# X509_V_ERR_* codes, said the way a person would.
_VERIFY_ERRORS = {
    2: "untrusted issuer",
    7: "bad certificate signature",
    9: "certificate not yet valid",
    10: "certificate expired",
    18: "untrusted issuer (self-signed certificate)",
    19: "untrusted issuer (self-signed certificate in the chain)",
    20: "untrusted issuer",
    21: "untrusted issuer",
    24: "invalid CA certificate",
    26: "certificate not for this purpose",
}


def _describe_certificate(certificate: crypto.X509) -> str:
    return certificate.to_cryptography().subject.rfc4514_string() or "(no subject)"


@implementer(IOpenSSLClientConnectionCreator)
class _Verifying:
    """
    Makes client connections to ``hostname`` on ``options``' context: sends
    the name (SNI) and verifies the server with a callback that says *why* a
    certificate was refused, instead of OpenSSL's "certificate verify failed".
    """

    def __init__(
        self, options: ssl.CertificateOptions, hostname: str, insecure: bool
    ) -> None:
        self._options = options
        self._hostname = hostname
        self._insecure = insecure

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        hostname, insecure = self._hostname, self._insecure
        is_ip = isIPAddress(hostname) or isIPv6Address(hostname)
        identity = IPAddress_ID(hostname) if is_ip else DNS_ID(hostname)
        if not is_ip:
            connection.set_tlsext_host_name(hostname.encode("idna"))

        def refuse(reason: str) -> bool:
            tlsProtocol.failVerification(Failure(TLSFailure(reason)))
            return False

        def verify(
            conn: SSL.Connection, cert: crypto.X509, error: int, depth: int, ok: int
        ) -> bool:
            if insecure:
                return True
            if not ok:
                what = _VERIFY_ERRORS.get(error, f"certificate refused (error {error})")
                return refuse(f"{what}: {_describe_certificate(cert)}")
            if depth != 0:
                return True
            try:
                verify_service_identity(extract_patterns(cert), [identity], [])
            except VerificationError:
                return refuse(
                    f"hostname mismatch: the certificate is not for {hostname}"
                )
            return True

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


class ClientTLS:
    """
    How a client checks the server, and what it shows of itself.

    :param cacert: a PEM file of the CA certificates to trust instead of the
        system's.
    :param cert: a PEM client certificate, for mutual TLS (with ``key``).
    :param key: the client certificate's private key (defaults to ``cert``).
    :param passphrase: decrypts an encrypted ``key``.
    :param insecure: do not verify the server at all. Anyone on the path can
        then read and change the traffic; for a quick look at a test server
        only.
    :raise TLSConfigError: when a file cannot be used.
    """

    def __init__(
        self,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        passphrase: bytes | None = None,
        insecure: bool = False,
    ) -> None:
        self.insecure = insecure
        self._certificate: ssl.PrivateCertificate | None = None
        # Made with the first connection, then shared by all of them.
        self._options: ssl.CertificateOptions | None = None
        if cacert is not None:
            roots = [
                ssl.Certificate(crypto.X509.from_cryptography(c))
                for c in load_certificates(cacert)
            ]
            self._trust: Any = ssl.trustRootFromCertificates(roots)
        else:
            self._trust = ssl.platformTrust()
        if key is not None and cert is None:
            raise TLSConfigError("a client key needs its certificate (--cert)")
        if cert is not None:
            certificate = crypto.X509.from_cryptography(load_certificates(cert)[0])
            if key is None and b"PRIVATE KEY" not in _read(cert, "certificate file"):
                raise TLSConfigError(f"{cert} holds no key: give it with --key")
            private = load_private_key(key or cert, passphrase, "--passphrase-file")
            _check_pair(certificate, private, key or cert, cert)
            self._certificate = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                ssl.Certificate(certificate), ssl.KeyPair(private)
            )
        if insecure:
            _log.warn("TLS: the server's certificate will NOT be verified")

    def creator(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        """
        :return: what a Twisted TLS client endpoint needs to reach ``hostname``.
        """
        if self._options is None:
            arguments: dict[str, Any] = {}
            if self._certificate is not None:
                arguments["certificate"] = self._certificate.original
                arguments["privateKey"] = self._certificate.privateKey.original
            self._options = _HardenedOptions(
                trustRoot=None if self.insecure else self._trust,
                acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(
                    MODERN_CIPHERS
                ),
                raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
                **arguments,
            )
        return _Verifying(self._options, hostname, self.insecure)

    def policy(self) -> BrowserLikePolicyForHTTPS:
        """
        :return: an ``IPolicyForHTTPS`` for :class:`twisted.web.client.Agent`.
        """
        return _Policy(self)


class _Policy(BrowserLikePolicyForHTTPS):
    def __init__(self, tls: ClientTLS) -> None:
        self._tls = tls

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return self._tls.creator(hostname.decode("ascii"))


def describe_tls_error(error: BaseException) -> str | None:
    """
    :return: a one-line reason for a TLS failure, or ``None`` when ``error``
        is not one.
    """
    if isinstance(error, TLSFailure):
        return f"TLS: {error}"
    if isinstance(error, SSL.Error):
        reasons = [entry[2] for entry in (error.args[0] if error.args else []) if entry]
        detail = reasons[-1] if reasons else "no reason given"
        return f"TLS handshake refused: {detail}"
    return None


def client_endpoint(
    reactor: Any, host: str, port: int, tls: ClientTLS | None = None
) -> IStreamClientEndpoint:
    """
    :return: an endpoint that connects to ``host`` and speaks TLS, verifying
        the server as ``tls`` says (system trust when ``None``).
    """
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    tls = tls or ClientTLS()
    return wrapClientTLS(tls.creator(host), HostnameEndpoint(reactor, host, port))


#: What a client endpoint string of each common type looks like, to say
#: when one does not (Twisted's own complaint names a constructor).
_CLIENT_FORMS = {
    "tcp": "tcp:HOST:PORT",
    "tls": "tls:HOST:PORT",
    "ssl": "ssl:HOST:PORT",
    "unix": "unix:PATH",
}


def _unbracket(prefix: str, fields: str) -> str:
    """
    :return: an endpoint string's ``fields`` (after its type) with a
        leading ``[IPv6]:`` host, as in URLs, written the way Twisted reads
        it: ``[::1]:8007`` becomes ``\\:\\:1:8007``.
    """
    if not fields.startswith("["):
        return fields
    host, bracket, after = fields[1:].partition("]")
    if not (bracket and isIPv6Address(host) and after.startswith(":")):
        raise ValueError(f"expected {prefix}:[IPV6-ADDRESS]:PORT")
    return host.replace(":", "\\:") + after


def client_from_string(
    reactor: Any, description: str, tls: ClientTLS | None = None
) -> IStreamClientEndpoint:
    """
    Twisted's ``clientFromString``, except that ``tls:HOST:PORT`` gets
    netlab's verification: ``tls`` (system trust when ``None``) checks the
    server, and its failures say why. An IPv6 host goes in brackets, as in
    a URL (``tcp:[::1]:8007``), or escaped, as Twisted writes it
    (``tcp:\\:\\:1:8007``).

    :raise ValueError: for a bad string, in one line that says what was
        expected; or for ``tls`` with a string that is not ``tls:``.
    """
    from twisted.internet.endpoints import clientFromString

    prefix, _, rest = description.partition(":")
    if prefix in ("tcp", "ssl", "tls"):
        rest = _unbracket(prefix, rest)
    if prefix != "tls":
        if tls is not None:
            raise ValueError("TLS options need a tls:HOST:PORT endpoint")
        try:
            return clientFromString(reactor, f"{prefix}:{rest}")
        except (TypeError, ValueError) as error:
            form = _CLIENT_FORMS.get(prefix)
            if form is not None:
                raise ValueError(f"expected {form}") from None
            if isinstance(error, TypeError):
                raise ValueError(f"wrong fields for a {prefix}: endpoint") from None
            raise
    # Twisted escapes colons (of IPv6 addresses) with a backslash.
    fields = [field.replace("\\:", ":") for field in re.split(r"(?<!\\):", rest)]
    if len(fields) != 2 or "=" in "".join(fields):
        raise ValueError(
            "expected tls:HOST:PORT (certificates and keys are client options: "
            "--cacert, --cert, --key)"
        )
    host, port = fields
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return client_endpoint(reactor, host, int(port), tls)
