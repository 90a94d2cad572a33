"""
Bearer tokens (JWT) for Twisted web resources: an OAuth 2 resource server
(RFC 6750) built on :mod:`twisted.cred`.

Protect a resource with a secret shared with whoever issues the tokens::

    from netlab.auth import JWTChecker, protect, secret_from_file

    checker = JWTChecker(secret_from_file("jwt.secret"), audience="netlab")
    root.putChild(b"private", protect(Private(), checker))

or with the keys an OAuth 2 / OpenID Connect provider publishes::

    keys = JWKS("https://id.example.com/.well-known/jwks.json")
    checker = JWTChecker(keys, issuer="https://id.example.com/", audience="netlab")

:func:`protect` builds an ordinary
:class:`~twisted.web.guard.HTTPAuthSessionWrapper`; to offer other schemes
beside this one, build it yourself::

    portal = Portal(BearerRealm(Private()), [checker])
    HTTPAuthSessionWrapper(portal, [BearerCredentialFactory("netlab")])

A request without a valid ``Authorization: Bearer <token>`` is answered
``401`` with a ``WWW-Authenticate: Bearer realm="netlab"`` challenge. A
WebSocket server finds the token with :func:`token_from_websocket` and checks
it with :meth:`JWTChecker.verify`. :func:`mint` makes tokens for tests.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from treq.client import HTTPClient
from treq.content import collect
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.guard import HTTPAuthSessionWrapper
from twisted.web.iweb import ICredentialFactory, IRequest
from twisted.web.resource import IResource
from zope.interface import Attribute, Interface, implementer

from netlab.deadline import with_deadline

#: The longest token accepted, in bytes.
DEFAULT_MAX_TOKEN_SIZE = 8192
#: Seconds of clock skew allowed when checking ``exp``, ``nbf`` and ``iat``.
DEFAULT_LEEWAY = 30.0
#: The shortest HMAC secret accepted, in bytes (RFC 7518 §3.2, for HS256).
MIN_SECRET_SIZE = 32
#: The smallest RSA key accepted, in bits.
MIN_RSA_BITS = 2048
#: Seconds a JWKS fetch may take, connect to last byte.
DEFAULT_JWKS_TIMEOUT = 10.0
#: The largest JWKS document read, in bytes.
DEFAULT_JWKS_MAX_SIZE = 256 * 1024
#: Seconds the keys of a JWKS are used before they are fetched again.
DEFAULT_JWKS_MAX_AGE = 3600.0

# RFC 7235 token68: the only form a bearer token may take in a header.
_TOKEN68 = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# Each HMAC algorithm needs a secret at least as long as its hash.
_HMAC_ALGORITHMS = (("HS256", 32), ("HS384", 48), ("HS512", 64))
_SUPPORTED_ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "ES256", "ES384", "ES512", "EdDSA"} | _RSA_ALGORITHMS
)
# What mint signs with, by preference, among what a private key allows.
_SIGNING_PREFERENCE = ("RS256", "ES256", "ES384", "ES512", "EdDSA")
# What a client is told, whatever the reason: details help only an attacker.
_REFUSED = "invalid token"

_log = Logger()


class IBearerToken(ICredentials):
    """
    A bearer token (RFC 6750): whoever holds it is whom it names.
    """

    token = Attribute("The token as the client sent it, a :class:`str`.")


@implementer(IBearerToken)
class BearerToken:
    """
    The credentials a client presents as ``Authorization: Bearer <token>``.

    Its ``repr`` gives the token's length only, so that it never ends up in
    a log or a traceback.
    """

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"<BearerToken of {len(self.token)} characters>"


class _Scheme(bytes):
    # HTTPAuthSessionWrapper compares the lower-cased scheme a client sent
    # with the factory's, and writes the factory's verbatim into challenges:
    # this one equals any spelling, and reads "Bearer" as RFC 6750 writes it
    # (some clients compare it case-sensitively).
    def __eq__(self, other: object) -> bool:
        if isinstance(other, bytes):
            return self.lower() == other.lower()
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, bytes):
            return self.lower() != other.lower()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.lower())


def _sent_bearer(request: IRequest) -> bool:
    header = request.getHeader(b"authorization")
    return bool(header) and header.split(b" ", 1)[0].lower() == b"bearer"


@implementer(ICredentialFactory)
class BearerCredentialFactory:
    """
    Reads ``Authorization: Bearer <token>`` for
    :class:`~twisted.web.guard.HTTPAuthSessionWrapper`, as
    :class:`~twisted.web.guard.BasicCredentialFactory` reads ``Basic``.

    :param realm: named in each challenge.
    :param max_token_size: the longest token accepted, in bytes.
    """

    #: Equal to ``b"bearer"`` in any case; sent as ``Bearer``.
    scheme = _Scheme(b"Bearer")
    _log = Logger()

    def __init__(
        self, realm: str = "netlab", max_token_size: int = DEFAULT_MAX_TOKEN_SIZE
    ) -> None:
        if not (realm.isascii() and realm.isprintable()):
            raise ValueError(f"the realm must be printable ASCII, not {realm!r}")
        self.realm = realm
        self.max_token_size = max_token_size

    def getChallenge(self, request: IRequest) -> dict[str, str]:
        """
        :return: the realm, and ``error="invalid_token"`` when the request
            carried a bearer token (RFC 6750 §3: a request that sent none, or
            used another scheme, gets no error code).
        """
        challenge = {"realm": self.realm}
        if _sent_bearer(request):
            challenge["error"] = "invalid_token"
        return challenge

    def decode(self, response: bytes, request: IRequest) -> BearerToken:
        """
        :param response: what follows ``Bearer`` in the header.
        :raise ~twisted.cred.error.LoginFailed: if it is empty, too large, or
            not token68.
        """
        # RFC 7235 allows one or more spaces after the scheme.
        token = response.lstrip(b" ")
        if not token:
            self._refuse("empty bearer token")
        if len(token) > self.max_token_size:
            self._refuse("bearer token too large")
        if not _TOKEN68.fullmatch(token):
            self._refuse("bearer token is not token68")
        return BearerToken(token.decode("ascii"))

    def _refuse(self, reason: str) -> None:
        self._log.info("refused bearer credentials: {reason}", reason=reason)
        raise LoginFailed(_REFUSED)


class KeyNotFound(Exception):
    """
    A key source holds no key for a token.
    """


class IKeySource(Interface):
    """
    Where a :class:`JWTChecker` finds the key for each token.
    """

    def key_for(header: dict[str, Any]) -> defer.Deferred[VerificationKey]:
        """
        :param header: the token's JOSE header, not yet verified.
        :return: a Deferred of the :class:`VerificationKey` for the token, or
            failing with :class:`KeyNotFound`.
        """


@implementer(IKeySource)
@dataclass(frozen=True)
class VerificationKey:
    """
    A key that verifies tokens, with the algorithms it may verify: an HMAC
    secret only ``HS*``, an RSA key only ``RS*`` and ``PS*``, an EC key only
    the ``ES*`` of its curve, an Ed25519 or Ed448 key only ``EdDSA``. So a
    token's ``alg`` header can neither be ``none`` nor make one kind of key
    verify as another.

    A single key is also a key source (:class:`IKeySource`) that gives
    itself for every token.

    :ivar key: a secret (:class:`bytes`) or a ``cryptography`` public key.
    :ivar algorithms: the JWS ``alg`` values this key may verify.
    :ivar kid: the key's id, if it has one.
    """

    key: Any = field(repr=False)
    algorithms: frozenset[str]
    kid: str | None = None

    def key_for(self, header: dict[str, Any]) -> defer.Deferred[VerificationKey]:
        """
        :return: this key, whatever ``header`` says.
        """
        return defer.succeed(self)


def _algorithms_for(key: Any) -> frozenset[str]:
    """
    :return: the algorithms that may verify with ``key``.
    :raise ValueError: if no algorithm fits it.
    """
    if isinstance(key, bytes):
        return frozenset(name for name, size in _HMAC_ALGORITHMS if len(key) >= size)
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"the RSA key has {key.key_size} bits, fewer than {MIN_RSA_BITS}"
            )
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"EC curve {key.curve.name} is not supported")
        return frozenset({algorithm})
    if isinstance(
        key,
        ed25519.Ed25519PublicKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PublicKey
        | ed448.Ed448PrivateKey,
    ):
        return frozenset({"EdDSA"})
    raise ValueError(f"{type(key).__name__} keys are not supported")


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None


def _secret(data: bytes, path: str | Path) -> bytes:
    # One trailing newline is what editors and `echo` add, not the secret.
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if data.lstrip().startswith(b"-----BEGIN"):
        raise ValueError(
            f"{path} holds a PEM key, not a secret: use public_key_from_pem()"
        )
    if len(data) < MIN_SECRET_SIZE:
        raise ValueError(
            f"the secret in {path} is {len(data)} bytes: HS256 needs at least "
            f"{MIN_SECRET_SIZE} (make one with: openssl rand -base64 48 > {path})"
        )
    return data


def secret_from_file(path: str | Path) -> VerificationKey:
    """
    Read an HMAC secret shared with the token issuer.

    The file's bytes are the secret, less one trailing newline.

    :return: a key for ``HS256`` (and ``HS384``, ``HS512`` if it is long
        enough for them: 48 and 64 bytes).
    :raise ValueError: if the file cannot be read, holds a PEM key, or the
        secret is shorter than :data:`MIN_SECRET_SIZE` bytes.
    """
    secret = _secret(_read(path), path)
    return VerificationKey(secret, _algorithms_for(secret))


def public_key_from_pem(path: str | Path) -> VerificationKey:
    """
    Read the issuer's public key from a PEM file: a public key, or a
    certificate whose key is taken.

    :return: a key for ``RS*``/``PS*`` (RSA of at least 2048 bits),
        ``ES256``/``ES384``/``ES512`` (EC P-256, P-384, P-521) or ``EdDSA``
        (Ed25519, Ed448).
    :raise ValueError: if the file cannot be read or holds no such key.
    """
    data = _read(path)
    key: Any = None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            pass
    if key is None:
        if b"PRIVATE KEY-----" in data:
            raise ValueError(
                f"{path} holds a private key: give its public key "
                f"(openssl pkey -in {path} -pubout) or a certificate"
            )
        raise ValueError(f"{path} holds no PEM public key or certificate")
    try:
        return VerificationKey(key, _algorithms_for(key))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _signing_key(data: bytes, path: str | Path) -> tuple[Any, str]:
    if b"-----BEGIN" not in data:
        return _secret(data, path), "HS256"
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{path} holds no unencrypted PEM private key") from None
    try:
        allowed = _algorithms_for(key)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return key, next(name for name in _SIGNING_PREFERENCE if name in allowed)


def mint(
    key_path: str | Path,
    subject: str,
    audience: str | list[str] | None = None,
    issuer: str | None = None,
    ttl: float = 3600,
    now: float | None = None,
    kid: str | None = None,
) -> str:
    """
    Make a signed token, for tests and tools.

    :param key_path: an HMAC secret (signs ``HS256``) or a PEM private key:
        RSA signs ``RS256``, EC ``ES256``/``ES384``/``ES512`` by curve,
        Ed25519 and Ed448 ``EdDSA``.
    :param ttl: seconds from ``now`` to ``exp``.
    :param now: the time it is issued, in seconds since the epoch (by
        default, now); it is also ``nbf``.
    :param kid: put in the header, to pick a key from a :class:`JWKS`.
    :return: the token, with ``sub``, ``iat``, ``nbf``, ``exp``, and ``aud``
        and ``iss`` when given.
    :raise ValueError: if the key file holds nothing that can sign.
    """
    key, algorithm = _signing_key(_read(key_path), key_path)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": int(issued + ttl),
    }
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_PYJWT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidAlgorithmError, "algorithm refused by PyJWT"),
    (jwt.InvalidKeyError, "key unusable for the token"),
    (jwt.DecodeError, "malformed token"),
)


def _reason(error: jwt.PyJWTError) -> str:
    # PyJWT's own messages are safe but uneven: say it in netlab's words.
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"missing {error.claim} claim"
    for kind, reason in _PYJWT_REASONS:
        if isinstance(error, kind):
            return reason
    return f"invalid token ({type(error).__name__})"


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"malformed {name} claim")
    try:
        number = float(value)
    except OverflowError:
        raise _Refused(f"malformed {name} claim") from None
    if not math.isfinite(number):
        raise _Refused(f"malformed {name} claim")
    return number


@implementer(ICredentialsChecker)
class JWTChecker:
    """
    Checks :class:`IBearerToken` credentials that are JWTs; the avatar id is
    the token's ``sub``.

    A token is accepted only if it is at most ``max_token_size`` bytes, its
    ``alg`` is one its key allows (see :class:`VerificationKey`), its
    signature verifies, it has a string ``sub``, it has an ``exp`` not yet
    past and any ``nbf`` already reached (both within ``leeway``), and its
    ``aud`` and ``iss`` match when they are configured.

    Each refusal is logged at info level with a ``reason`` field; the token
    is never logged, and the client learns nothing but that it was refused.

    :param keys: where the keys come from: a :class:`VerificationKey` from
        :func:`secret_from_file` or :func:`public_key_from_pem`, or a
        :class:`JWKS`.
    :param audience: the ``aud`` (or any of them) a token must name.
    :param issuer: the ``iss`` a token must have.
    :param clock: the time source (by default, the reactor).
    """

    credentialInterfaces = (IBearerToken,)
    _log = Logger()

    def __init__(
        self,
        keys: IKeySource,
        *,
        audience: str | Iterable[str] | None = None,
        issuer: str | None = None,
        leeway: float = DEFAULT_LEEWAY,
        max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.keys = keys
        if isinstance(audience, str):
            audience = [audience]
        self.audience = None if audience is None else list(audience)
        self.issuer = issuer
        self.leeway = leeway
        self.max_token_size = max_token_size
        self.clock = clock
        # exp and nbf are checked here against the clock: PyJWT reads the
        # wall clock, which tests cannot drive.
        self._options: dict[str, Any] = {
            "verify_signature": True,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": self.audience is not None,
            "verify_iss": issuer is not None,
            "verify_sub": True,
            "verify_jti": True,
            "require": ["exp", "sub"],
        }

    def requestAvatarId(self, credentials: IBearerToken) -> defer.Deferred[str]:
        """
        :return: a Deferred of the token's ``sub``, or failing with
            :class:`~twisted.cred.error.UnauthorizedLogin`.
        """
        return self.verify(credentials.token).addCallback(lambda claims: claims["sub"])

    def verify(self, token: str) -> defer.Deferred[dict[str, Any]]:
        """
        Check ``token`` as :meth:`requestAvatarId` does, for callers outside
        :mod:`twisted.cred` (a WebSocket handshake, say).

        :return: a Deferred of the token's claims, or failing with
            :class:`~twisted.cred.error.UnauthorizedLogin`.
        """
        return defer.Deferred.fromCoroutine(self._verify(token))

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            claims = await self._claims(token)
        except _Refused as refusal:
            self._log.info("refused a bearer token: {reason}", reason=refusal.reason)
            raise UnauthorizedLogin(_REFUSED) from None
        self._log.debug("accepted a bearer token for {subject}", subject=claims["sub"])
        return claims

    async def _claims(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise _Refused("empty token")
        if len(token) > self.max_token_size:
            raise _Refused("token too large")
        if not token.isascii():
            raise _Refused("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise _Refused(_reason(error)) from None
        algorithm = header.get("alg")
        # Before any key lookup, which may fetch.
        if not isinstance(algorithm, str) or algorithm not in _SUPPORTED_ALGORITHMS:
            raise _Refused("unsupported algorithm")
        try:
            key = await defer.maybeDeferred(self.keys.key_for, header)
        except KeyNotFound:
            raise _Refused("no key for the token") from None
        if algorithm not in key.algorithms:
            raise _Refused("algorithm not allowed for the key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=sorted(key.algorithms),
                options=self._options,  # type: ignore[arg-type]
                audience=self.audience,
                issuer=self.issuer,
            )
        except jwt.PyJWTError as error:
            raise _Refused(_reason(error)) from None
        now = self.clock.seconds()
        expires = _time_claim(claims, "exp")
        if expires is None:
            raise _Refused("missing exp claim")
        if now >= expires + self.leeway:
            raise _Refused("token expired")
        not_before = _time_claim(claims, "nbf")
        if not_before is not None and now + self.leeway < not_before:
            raise _Refused("token not yet valid")
        issued = _time_claim(claims, "iat")
        if issued is not None and now + self.leeway < issued:
            raise _Refused("token issued in the future")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _Refused("missing sub claim")
        return claims


_JWK_LOADERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
}
_PRIVATE_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def _key_from_jwk(jwk: Any) -> VerificationKey:
    if not isinstance(jwk, dict):
        raise ValueError("not a JSON object")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"its use is {use!r}, not 'sig'")
    operations = jwk.get("key_ops")
    if operations is not None and (
        not isinstance(operations, list) or "verify" not in operations
    ):
        raise ValueError("its key_ops lack 'verify'")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("its kid is not a string")
    # No "oct": a secret has no place in a published key set.
    loader = _JWK_LOADERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if loader is None:
        raise ValueError(f"kty {jwk.get('kty')!r} is not supported")
    try:
        key = loader(jwk)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"unusable: {error}") from None
    if isinstance(key, _PRIVATE_KEYS):
        key = key.public_key()
    algorithms = _algorithms_for(key)
    algorithm = jwk.get("alg")
    if algorithm is not None:
        if algorithm not in algorithms:
            raise ValueError(f"its alg {algorithm!r} does not fit its key")
        algorithms = frozenset({algorithm})
    return VerificationKey(key, algorithms, kid)


def keys_from_jwks(body: bytes) -> list[VerificationKey]:
    """
    Read a JWK Set (RFC 7517 §5), keeping the keys that can verify
    signatures: RSA, EC and OKP keys whose ``use`` (if any) is ``sig`` and
    whose ``alg`` (if any) fits the key. Each key may verify the algorithms
    its type allows (see :class:`VerificationKey`), or only its ``alg``.

    :raise ValueError: if ``body`` is not a JSON object with a ``keys`` list.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the JWKS is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('the JWKS has no "keys" list')
    keys = []
    for jwk in document["keys"]:
        try:
            keys.append(_key_from_jwk(jwk))
        except ValueError as error:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            _log.debug("skipped JWK {kid!r}: {reason}", kid=kid, reason=str(error))
    return keys


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class _TooLarge(Exception):
    pass


def _excerpt(value: object) -> str:
    # Headers are the client's to write: keep what is logged short.
    return repr(value)[:80]


@implementer(IKeySource)
class JWKS:
    """
    The signing keys an OAuth 2 / OpenID Connect provider publishes at a
    JWKS URL (its ``jwks_uri``), fetched with treq and cached.

    The keys are fetched on first use and again once they are ``max_age``
    old. A token whose ``kid`` is unknown makes it fetch them again, for the
    provider may have added a key, but no more often than once every
    ``refresh_interval`` seconds, so that made-up ``kid`` values cannot make
    it hammer the provider. When a fetch fails (the provider is down, or
    sends something that is not a key set) the keys already known are kept,
    and a warning logged.

    The URL is expected to be ``https``; ``http`` is accepted only for a
    loopback host (tests, or a provider on the same machine).

    :param reactor: does the fetching (by default, the global reactor).
    :param clock: tells the time for ``refresh_interval`` and ``max_age``
        (by default, ``reactor``).
    :param timeout: seconds for each whole fetch.
    :param max_size: the largest key set read, in bytes.
    :param context_factory: an
        :class:`~twisted.web.iweb.IPolicyForHTTPS` for the https
        connection (a private CA, say); by default, the system's trust.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        reactor: Any = None,
        refresh_interval: float = 60.0,
        *,
        clock: IReactorTime | None = None,
        timeout: float = DEFAULT_JWKS_TIMEOUT,
        max_size: int = DEFAULT_JWKS_MAX_SIZE,
        max_age: float = DEFAULT_JWKS_MAX_AGE,
        context_factory: Any = None,
    ) -> None:
        parts = urlsplit(url)
        if not (
            (parts.scheme == "https" and parts.hostname)
            or (parts.scheme == "http" and _is_loopback(parts.hostname))
        ):
            raise ValueError(
                f"the JWKS URL must be https (http only on loopback), not {url}"
            )
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.reactor = reactor
        self.clock = reactor if clock is None else clock
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self.max_size = max_size
        self.max_age = max_age
        agent_options: dict[str, Any] = {"connectTimeout": timeout}
        if context_factory is not None:
            agent_options["contextFactory"] = context_factory
        # Not kept for reuse: fetches are rare, and nothing stays open.
        pool = HTTPConnectionPool(reactor, persistent=False)
        self._client = HTTPClient(Agent(reactor, pool=pool, **agent_options))
        self._named: dict[str, VerificationKey] = {}
        self._unnamed: list[VerificationKey] = []
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._fetching = False
        self._waiting: list[defer.Deferred[None]] = []

    @property
    def keys(self) -> list[VerificationKey]:
        """
        The keys known now.
        """
        return [*self._named.values(), *self._unnamed]

    def key_for(self, header: dict[str, Any]) -> defer.Deferred[VerificationKey]:
        """
        :return: a Deferred of the key named by ``header``'s ``kid`` (with no
            ``kid``, the only key of a single-key set), or failing with
            :class:`KeyNotFound`.
        """
        return defer.Deferred.fromCoroutine(self._key_for(header.get("kid")))

    async def _key_for(self, kid: str | None) -> VerificationKey:
        if self._fetched_at is None or (
            self.clock.seconds() - self._fetched_at >= self.max_age
        ):
            if self._may_fetch():
                await self.refresh()
        key = self._lookup(kid)
        if key is None and self._may_fetch():
            self._log.info("no key {kid} in the JWKS: fetching it", kid=_excerpt(kid))
            await self.refresh()
            key = self._lookup(kid)
        if key is None:
            raise KeyNotFound("no key for the token in the JWKS")
        return key

    def _may_fetch(self) -> bool:
        return (
            self._fetching
            or self._tried_at is None
            or self.clock.seconds() - self._tried_at >= self.refresh_interval
        )

    def _lookup(self, kid: str | None) -> VerificationKey | None:
        if kid is not None and kid in self._named:
            return self._named[kid]
        keys = self.keys
        if len(keys) == 1 and (kid is None or keys[0].kid is None):
            return keys[0]
        return None

    def refresh(self) -> defer.Deferred[None]:
        """
        Fetch the keys now, whatever ``refresh_interval`` says; calls made
        while a fetch is under way share it.

        :return: a Deferred that fires (never fails) once the fetch is over,
            whether or not it brought keys.
        """
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(waiter)
        if not self._fetching:
            self._fetching = True
            self._tried_at = self.clock.seconds()
            defer.Deferred.fromCoroutine(self._refresh()).addBoth(self._refreshed)
        return waiter

    def _refreshed(self, result: Failure | None) -> None:
        if isinstance(result, Failure):
            self._log.failure("refreshing the JWKS failed", result)
        self._fetching = False
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.called:
                waiter.callback(None)

    async def _refresh(self) -> None:
        try:
            keys = keys_from_jwks(await self._fetch())
            if not keys:
                raise ValueError("the JWKS has no usable keys")
        except Exception as error:
            self._log.warn(
                "could not fetch the JWKS from {url}: {error}; "
                "still using the {count} keys fetched before",
                url=self.url,
                error=f"{type(error).__name__}: {error}",
                count=len(self.keys),
            )
            return
        self._named = {key.kid: key for key in keys if key.kid is not None}
        self._unnamed = [key for key in keys if key.kid is None]
        self._fetched_at = self.clock.seconds()
        self._log.info("fetched {count} keys from {url}", count=len(keys), url=self.url)

    async def _fetch(self) -> bytes:
        async def exchange() -> bytes:
            response = await self._client.get(
                self.url, headers={"Accept": ["application/json"]}
            )
            body = bytearray()

            def keep(data: bytes) -> None:
                body.extend(data)
                if len(body) > self.max_size:
                    raise _TooLarge(f"the JWKS is larger than {self.max_size} bytes")

            await collect(response, keep)
            if response.code != 200:
                raise ValueError(f"HTTP status {response.code}")
            return bytes(body)

        return await with_deadline(
            defer.Deferred.fromCoroutine(exchange()), self.timeout, self.reactor
        )


@implementer(IRealm)
class BearerRealm:
    """
    Gives each authenticated client the protected resource.

    :param resource: the resource, or a callable that makes one for each
        avatar id (the token's ``sub``), to serve each user their own.
    """

    def __init__(self, resource: IResource | Callable[[str], IResource]) -> None:
        self.resource = resource

    def requestAvatar(
        self, avatarId: str, mind: object, *interfaces: Any
    ) -> tuple[Any, IResource, Callable[[], None]]:
        if IResource not in interfaces:
            raise NotImplementedError("BearerRealm only gives IResource avatars")
        resource = self.resource
        if not IResource.providedBy(resource):
            resource = resource(avatarId)
        return IResource, resource, lambda: None


def protect(
    resource: IResource | Callable[[str], IResource],
    checker: ICredentialsChecker,
    realm: str = "netlab",
    max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
) -> HTTPAuthSessionWrapper:
    """
    :return: ``resource`` (and all below it) served only to requests with a
        bearer token ``checker`` accepts; see :class:`BearerRealm` for a
        resource per user.
    """
    portal = Portal(BearerRealm(resource), [checker])
    return HTTPAuthSessionWrapper(
        portal, [BearerCredentialFactory(realm, max_token_size)]
    )


def _first(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def token_from_websocket(
    headers: dict[str, Any], params: dict[str, Any], protocols: list[str]
) -> str | None:
    """
    Find the bearer token in a WebSocket opening handshake: pass an autobahn
    :class:`~autobahn.websocket.types.ConnectionRequest`'s ``headers``,
    ``params`` and ``protocols``.

    Looked for, in order: an ``Authorization: Bearer <token>`` header; a
    subprotocol ``bearer.<token>`` (browsers cannot set headers on a
    WebSocket, but can offer subprotocols); an ``access_token`` query
    parameter (RFC 6750 §2.3, the last resort: query strings end up in
    access logs).

    The server must not choose the ``bearer.`` subprotocol in its answer,
    which would send the token back: choose another one the client offered,
    or none.

    :return: the token, or None if the handshake carries none.
    """
    named = {name.lower(): value for name, value in headers.items()}
    authorization = _first(named.get("authorization"))
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for protocol in protocols or ():
        if protocol[:7].lower() == "bearer." and len(protocol) > 7:
            return protocol[7:]
    return _first(params.get("access_token")) or None


#: Paths that stay open whatever is protected: health checks must work
#: without credentials.
OPEN_PATHS = ("/healthz",)

#: The subprotocol a browser offers beside ``bearer.<token>``; a protected
#: WebSocket server chooses it, so the token is never sent back.
BEARER_SUBPROTOCOL = "bearer"


def _covered(path: str, prefix: str) -> bool:
    if prefix == "/":
        return True
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Protection:
    """
    Which request paths need a bearer token, and what checks it.

    :param checker: verifies the tokens.
    :param paths: path prefixes that need a token (``"/"`` for all); the
        paths in :data:`OPEN_PATHS` stay open.
    :param realm: named in ``WWW-Authenticate`` challenges.
    """

    checker: JWTChecker
    paths: tuple[str, ...]
    realm: str = "netlab"

    def covers(self, path: bytes | str) -> bool:
        """
        :return: whether a request for ``path`` (without its query) needs a
            token.
        """
        if isinstance(path, bytes):
            path = path.decode("latin-1")
        if any(_covered(path, open_path) for open_path in OPEN_PATHS):
            return False
        return any(_covered(path, prefix) for prefix in self.paths)
