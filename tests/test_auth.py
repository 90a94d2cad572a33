"""
Tests of netlab.auth: the checker with a fake clock, the HTTP path through a
real HTTPAuthSessionWrapper (in memory, with StubTreq), and JWKS against a
provider on loopback.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
from treq.testing import StubTreq
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.test.requesthelper import DummyRequest

from netlab import auth
from netlab.tracking import ConnectionTracker
from tests.support import bounded

#: What the fake clock says when a test starts.
NOW = 1_700_000_000.0
SECRET = b"0123456789abcdef0123456789abcdef0123456789abcdef"


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    # Made once: an RSA key takes a while.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def certificate_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def claims(**changes: Any) -> dict[str, Any]:
    """
    :return: valid claims at :data:`NOW`, with ``changes`` (None removes).
    """
    base: dict[str, Any] = {
        "sub": "alice",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 3600,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def hs256(secret: bytes, payload: dict[str, Any]) -> str:
    """
    Sign by hand: PyJWT itself refuses a PEM key as an HMAC secret.
    """
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def sign(key: Any, algorithm: str, payload: dict[str, Any], kid: str = "") -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


class Files:
    """
    Writes key files in a test's own temporary folder.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.folder = Path(test.mktemp())
        self.folder.mkdir(parents=True)

    def write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path


class Refusals:
    """
    Helpers for tests of :class:`auth.JWTChecker` on a fake clock.
    """

    def checker(self, keys: Any, **options: Any) -> auth.JWTChecker:
        return auth.JWTChecker(keys, clock=self.clock, **options)

    def accepted(self, checker: auth.JWTChecker, token: str) -> str:
        return self.successResultOf(checker.requestAvatarId(auth.BearerToken(token)))

    def assert_refused(self, checker: auth.JWTChecker, token: str, reason: str) -> None:
        """
        ``token`` is refused, for ``reason`` (logged), with a generic message,
        and it never reaches the log.
        """
        with capturedLogs() as events:
            failure = self.failureResultOf(
                checker.requestAvatarId(auth.BearerToken(token)), UnauthorizedLogin
            )
        self.assertEqual(str(failure.value), "invalid token")
        reasons = [event.get("reason", "") for event in events]
        self.assertTrue(any(reason in r for r in reasons), (reason, reasons))
        assert_token_not_logged(self, token, events)


def assert_token_not_logged(test: Any, token: str, events: Any) -> None:
    # The signature alone would do to find a replayed token: look for it too.
    signature = token.rsplit(".", 1)[-1]
    for event in events:
        for text in (formatEvent(event), repr(event)):
            test.assertNotIn(token, text)
            if len(signature) > 16:
                test.assertNotIn(signature, text)


class CheckerTests(Refusals, SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.files = Files(self)
        self.secret_checker = self.checker(
            auth.secret_from_file(self.files.write("secret", SECRET + b"\n"))
        )

    def public_checker(self, key: Any, **options: Any) -> auth.JWTChecker:
        path = self.files.write("public.pem", public_pem(key))
        return self.checker(auth.public_key_from_pem(path), **options)

    def test_hs256_accepted(self) -> None:
        token = sign(SECRET, "HS256", claims())
        self.assertEqual(self.accepted(self.secret_checker, token), "alice")

    def test_rs256_accepted(self) -> None:
        checker = self.public_checker(rsa_key())
        token = sign(rsa_key(), "RS256", claims())
        self.assertEqual(self.accepted(checker, token), "alice")

    def test_ps256_accepted(self) -> None:
        checker = self.public_checker(rsa_key())
        token = sign(rsa_key(), "PS256", claims())
        self.assertEqual(self.accepted(checker, token), "alice")

    def test_es256_accepted(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        checker = self.public_checker(key)
        self.assertEqual(self.accepted(checker, sign(key, "ES256", claims())), "alice")

    def test_eddsa_accepted(self) -> None:
        for key in (
            ed25519.Ed25519PrivateKey.generate(),
            ed448.Ed448PrivateKey.generate(),
        ):
            checker = self.public_checker(key)
            token = sign(key, "EdDSA", claims())
            self.assertEqual(self.accepted(checker, token), "alice")

    def test_certificate_accepted(self) -> None:
        """
        A certificate PEM gives its public key.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        path = self.files.write("issuer.pem", certificate_pem(key))
        checker = self.checker(auth.public_key_from_pem(path))
        self.assertEqual(self.accepted(checker, sign(key, "ES256", claims())), "alice")

    def test_verify_gives_claims(self) -> None:
        token = sign(SECRET, "HS256", claims(role="admin"))
        verified = self.successResultOf(self.secret_checker.verify(token))
        self.assertEqual(verified, claims(role="admin"))

    def test_alg_none_refused(self) -> None:
        token = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims())}."
        self.assert_refused(self.secret_checker, token, "unsupported algorithm")
        for header in ({"typ": "JWT"}, {"alg": ["HS256"]}, {"alg": "HS1"}):
            odd = f"{segment(header)}.{segment(claims())}.c2ln"
            self.assert_refused(self.secret_checker, odd, "unsupported algorithm")

    def test_key_confusion_refused(self) -> None:
        """
        An HS256 token whose HMAC secret is the RSA public key PEM (which the
        attacker knows) is refused by a checker holding that public key.
        """
        checker = self.public_checker(rsa_key())
        token = hs256(public_pem(rsa_key()), claims())
        self.assert_refused(checker, token, "algorithm not allowed for the key")

    def test_asymmetric_token_refused_by_secret(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        token = sign(key, "ES256", claims())
        self.assert_refused(
            self.secret_checker, token, "algorithm not allowed for the key"
        )

    def test_curve_fixes_the_algorithm(self) -> None:
        """
        A P-384 key verifies ES384 only: not an ES256 token.
        """
        key = ec.generate_private_key(ec.SECP384R1())
        checker = self.public_checker(key)
        self.assertEqual(self.accepted(checker, sign(key, "ES384", claims())), "alice")
        token = jwt.encode(
            claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"
        )
        self.assert_refused(checker, token, "algorithm not allowed for the key")

    def test_expired_refused(self) -> None:
        token = sign(SECRET, "HS256", claims(exp=int(NOW) - 31))
        self.assert_refused(self.secret_checker, token, "token expired")

    def test_expiry_leeway(self) -> None:
        """
        Expired ten seconds ago is still accepted with 30 s of leeway, and
        refused without.
        """
        token = sign(SECRET, "HS256", claims(exp=int(NOW) - 10))
        self.assertEqual(self.accepted(self.secret_checker, token), "alice")
        strict = self.checker(self.secret_checker.keys, leeway=0)
        self.assert_refused(strict, token, "token expired")

    def test_expiry_follows_the_clock(self) -> None:
        token = sign(SECRET, "HS256", claims())
        self.assertEqual(self.accepted(self.secret_checker, token), "alice")
        self.clock.advance(3600 + 30)
        self.assert_refused(self.secret_checker, token, "token expired")

    def test_exp_required(self) -> None:
        token = sign(SECRET, "HS256", claims(exp=None))
        self.assert_refused(self.secret_checker, token, "missing exp claim")
        for exp in ("tomorrow", True, 10**400):
            token = sign(SECRET, "HS256", claims(exp=exp))
            self.assert_refused(self.secret_checker, token, "malformed exp claim")

    def test_not_yet_valid_refused(self) -> None:
        token = sign(SECRET, "HS256", claims(nbf=int(NOW) + 60))
        self.assert_refused(self.secret_checker, token, "token not yet valid")
        self.clock.advance(30)
        self.assertEqual(self.accepted(self.secret_checker, token), "alice")

    def test_not_before_leeway(self) -> None:
        token = sign(SECRET, "HS256", claims(nbf=int(NOW) + 10))
        self.assertEqual(self.accepted(self.secret_checker, token), "alice")
        strict = self.checker(self.secret_checker.keys, leeway=0)
        self.assert_refused(strict, token, "token not yet valid")

    def test_issued_in_the_future_refused(self) -> None:
        token = sign(SECRET, "HS256", claims(iat=int(NOW) + 600))
        self.assert_refused(self.secret_checker, token, "token issued in the future")

    def test_wrong_audience_refused(self) -> None:
        checker = self.checker(self.secret_checker.keys, audience="netlab")
        right = sign(SECRET, "HS256", claims(aud=["other", "netlab"]))
        self.assertEqual(self.accepted(checker, right), "alice")
        wrong = sign(SECRET, "HS256", claims(aud="other"))
        self.assert_refused(checker, wrong, "wrong audience")
        missing = sign(SECRET, "HS256", claims())
        self.assert_refused(checker, missing, "missing aud claim")

    def test_wrong_issuer_refused(self) -> None:
        checker = self.checker(self.secret_checker.keys, issuer="https://id.test/")
        right = sign(SECRET, "HS256", claims(iss="https://id.test/"))
        self.assertEqual(self.accepted(checker, right), "alice")
        wrong = sign(SECRET, "HS256", claims(iss="https://evil.test/"))
        self.assert_refused(checker, wrong, "wrong issuer")
        missing = sign(SECRET, "HS256", claims())
        self.assert_refused(checker, missing, "missing iss claim")

    def test_tampered_payload_refused(self) -> None:
        header, _, signature = sign(SECRET, "HS256", claims()).split(".")
        forged = f"{header}.{segment(claims(sub='admin'))}.{signature}"
        self.assert_refused(self.secret_checker, forged, "bad signature")

    def test_garbage_refused(self) -> None:
        for garbage in ("garbage", "a.b.c", "..", "ünïcode.x.y", segment({}) + ".e30."):
            self.assert_refused(self.secret_checker, garbage, "")

    def test_oversized_refused(self) -> None:
        token = sign(SECRET, "HS256", claims(padding="x" * 9000))
        self.assert_refused(self.secret_checker, token, "token too large")
        roomy = self.checker(self.secret_checker.keys, max_token_size=16384)
        self.assertEqual(self.accepted(roomy, token), "alice")
        # At the boundary: a token of exactly the limit passes, one byte more not.
        exact = self.checker(self.secret_checker.keys, max_token_size=len(token))
        self.assertEqual(self.accepted(exact, token), "alice")
        under = self.checker(self.secret_checker.keys, max_token_size=len(token) - 1)
        self.assert_refused(under, token, "token too large")

    def test_missing_sub_refused(self) -> None:
        for sub in (None, "", 42):
            token = sign(SECRET, "HS256", claims(sub=sub))
            self.assert_refused(self.secret_checker, token, "")

    def test_refusals_look_alike(self) -> None:
        """
        Whatever the reason, the failure says only "invalid token".
        """
        tokens = [
            sign(SECRET, "HS256", claims(exp=int(NOW) - 100)),
            sign(b"another secret, just as long as the first", "HS256", claims()),
            "garbage",
        ]
        messages = {
            str(
                self.failureResultOf(
                    self.secret_checker.requestAvatarId(auth.BearerToken(token))
                ).value
            )
            for token in tokens
        }
        self.assertEqual(messages, {"invalid token"})

    def test_tokens_never_logged(self) -> None:
        """
        Neither accepting nor refusing logs the token, and BearerToken's repr
        hides it.
        """
        good = sign(SECRET, "HS256", claims())
        bad = sign(SECRET, "HS256", claims(exp=int(NOW) - 100))
        with capturedLogs() as events:
            self.accepted(self.secret_checker, good)
            self.failureResultOf(self.secret_checker.verify(bad))
        self.assertTrue(events)
        for token in (good, bad):
            assert_token_not_logged(self, token, events)
            self.assertNotIn(token, repr(auth.BearerToken(token)))


class KeyFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self)

    def test_secret_strips_one_newline(self) -> None:
        for ending in (b"\n", b"\r\n", b""):
            key = auth.secret_from_file(self.files.write("secret", SECRET + ending))
            self.assertEqual(key.key, SECRET)

    def test_secret_algorithms_by_length(self) -> None:
        for size, expected in (
            (32, {"HS256"}),
            (48, {"HS256", "HS384"}),
            (64, {"HS256", "HS384", "HS512"}),
        ):
            path = self.files.write("secret", b"k" * size)
            self.assertEqual(auth.secret_from_file(path).algorithms, expected)

    def test_short_secret_refused(self) -> None:
        path = self.files.write("secret", b"too short\n")
        error = self.assertRaises(ValueError, auth.secret_from_file, path)
        self.assertIn("9 bytes", str(error))
        self.assertIn("32", str(error))

    def test_pem_is_no_secret(self) -> None:
        path = self.files.write("public.pem", public_pem(rsa_key()))
        error = self.assertRaises(ValueError, auth.secret_from_file, path)
        self.assertIn("PEM", str(error))

    def test_secret_repr_hidden(self) -> None:
        key = auth.secret_from_file(self.files.write("secret", SECRET))
        self.assertNotIn(SECRET.decode(), repr(key))

    def test_public_key_algorithms(self) -> None:
        """
        Each key type allows its own algorithms and never an HMAC one.
        """
        for key, expected in (
            (rsa_key(), {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
            (ec.generate_private_key(ec.SECP256R1()), {"ES256"}),
            (ec.generate_private_key(ec.SECP384R1()), {"ES384"}),
            (ed25519.Ed25519PrivateKey.generate(), {"EdDSA"}),
            (ed448.Ed448PrivateKey.generate(), {"EdDSA"}),
        ):
            path = self.files.write("public.pem", public_pem(key))
            self.assertEqual(auth.public_key_from_pem(path).algorithms, expected)

    def test_unreadable_pem(self) -> None:
        missing = self.files.folder / "missing.pem"
        error = self.assertRaises(ValueError, auth.public_key_from_pem, missing)
        self.assertIn("cannot read", str(error))
        self.assertNotIn("\n", str(error))

    def test_garbage_pem(self) -> None:
        path = self.files.write("garbage.pem", b"-----BEGIN NONSENSE-----\nxyz\n")
        error = self.assertRaises(ValueError, auth.public_key_from_pem, path)
        self.assertIn("no PEM public key or certificate", str(error))
        self.assertNotIn("\n", str(error))

    def test_private_pem_is_not_public(self) -> None:
        path = self.files.write("private.pem", private_pem(rsa_key()))
        error = self.assertRaises(ValueError, auth.public_key_from_pem, path)
        self.assertIn("private key", str(error))

    def test_small_rsa_refused(self) -> None:
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        path = self.files.write("small.pem", public_pem(small))
        error = self.assertRaises(ValueError, auth.public_key_from_pem, path)
        self.assertIn("1024 bits", str(error))


class MintTests(Refusals, SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.files = Files(self)

    def test_hs256_round_trip(self) -> None:
        path = self.files.write("secret", SECRET + b"\n")
        token = auth.mint(path, "bob", now=NOW)
        self.assertEqual(jwt.get_unverified_header(token)["alg"], "HS256")
        checker = self.checker(auth.secret_from_file(path))
        self.assertEqual(self.accepted(checker, token), "bob")

    def test_private_pem_round_trip(self) -> None:
        for key, algorithm in (
            (rsa_key(), "RS256"),
            (ec.generate_private_key(ec.SECP256R1()), "ES256"),
            (ec.generate_private_key(ec.SECP384R1()), "ES384"),
            (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
        ):
            private = self.files.write("private.pem", private_pem(key))
            public = self.files.write("public.pem", public_pem(key))
            token = auth.mint(private, "carol", now=NOW)
            self.assertEqual(jwt.get_unverified_header(token)["alg"], algorithm)
            checker = self.checker(auth.public_key_from_pem(public))
            self.assertEqual(self.accepted(checker, token), "carol")

    def test_claims_and_kid(self) -> None:
        path = self.files.write("secret", SECRET)
        token = auth.mint(
            path, "dave", audience="api", issuer="me", ttl=60, now=NOW, kid="k1"
        )
        self.assertEqual(jwt.get_unverified_header(token)["kid"], "k1")
        checker = self.checker(auth.secret_from_file(path), audience="api", issuer="me")
        verified = self.successResultOf(checker.verify(token))
        self.assertEqual(
            verified,
            {
                "sub": "dave",
                "aud": "api",
                "iss": "me",
                "iat": int(NOW),
                "nbf": int(NOW),
                "exp": int(NOW) + 60,
            },
        )
        self.clock.advance(60 + 30)
        self.assert_refused(checker, token, "token expired")

    def test_public_key_cannot_sign(self) -> None:
        path = self.files.write("public.pem", public_pem(rsa_key()))
        error = self.assertRaises(ValueError, auth.mint, path, "eve")
        self.assertIn("no unencrypted PEM private key", str(error))


class FactoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.factory = auth.BearerCredentialFactory("netlab", max_token_size=100)
        self.request = DummyRequest([b""])

    def test_scheme(self) -> None:
        """
        The scheme matches what HTTPAuthSessionWrapper compares (lower case)
        and is written as RFC 6750 spells it.
        """
        self.assertEqual(self.factory.scheme, b"bearer")
        self.assertEqual(b"BEARER", self.factory.scheme)
        self.assertNotEqual(self.factory.scheme, b"basic")
        self.assertEqual(bytes(self.factory.scheme), b"Bearer")

    def test_decode(self) -> None:
        credentials = self.factory.decode(b"abc.DEF-_~+/=", self.request)
        self.assertTrue(auth.IBearerToken.providedBy(credentials))
        self.assertEqual(credentials.token, "abc.DEF-_~+/=")

    def test_extra_spaces(self) -> None:
        self.assertEqual(self.factory.decode(b"  abc", self.request).token, "abc")

    def test_empty_refused(self) -> None:
        for response in (b"", b"   "):
            self.assertRaises(LoginFailed, self.factory.decode, response, self.request)

    def test_oversized_refused(self) -> None:
        self.assertEqual(self.factory.decode(b"a" * 100, self.request).token, "a" * 100)
        self.assertRaises(LoginFailed, self.factory.decode, b"a" * 101, self.request)

    def test_not_token68_refused(self) -> None:
        for response in (b"a b", b"a,b", b"a\x00b", b'"ab"', b"=ab", b"\xc3\xa9"):
            self.assertRaises(LoginFailed, self.factory.decode, response, self.request)

    def test_challenge_without_credentials(self) -> None:
        self.assertEqual(self.factory.getChallenge(self.request), {"realm": "netlab"})

    def test_challenge_for_another_scheme(self) -> None:
        self.request.requestHeaders.setRawHeaders(b"authorization", [b"Basic eDp5"])
        self.assertEqual(self.factory.getChallenge(self.request), {"realm": "netlab"})

    def test_challenge_after_a_token(self) -> None:
        self.request.requestHeaders.setRawHeaders(b"authorization", [b"bearer x"])
        self.assertEqual(
            self.factory.getChallenge(self.request),
            {"realm": "netlab", "error": "invalid_token"},
        )

    def test_realm_checked(self) -> None:
        self.assertRaises(ValueError, auth.BearerCredentialFactory, "bad\nrealm")


class Private(Resource):
    """
    Says whom it serves.
    """

    isLeaf = True

    def __init__(self, subject: str) -> None:
        super().__init__()
        self.subject = subject

    def render_GET(self, request: Request) -> bytes:
        return b"hello " + self.subject.encode()


class Open(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"open to all"


class HTTPTests(SynchronousTestCase):
    """
    Through a real HTTPAuthSessionWrapper, in memory.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        checker = auth.JWTChecker(
            auth.VerificationKey(SECRET, frozenset({"HS256"})), clock=self.clock
        )
        root = Resource()
        root.putChild(b"open", Open())
        root.putChild(b"private", auth.protect(Private, checker))
        self.treq = StubTreq(root)

    def get(self, path: str, authorization: str | None = None) -> tuple[Any, bytes]:
        headers = {} if authorization is None else {"Authorization": [authorization]}
        d = self.treq.get("http://netlab.test" + path, headers=headers)
        self.treq.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(self.treq.content(response))

    def challenge(self, response: Any) -> list[bytes]:
        return response.headers.getRawHeaders(b"www-authenticate")

    def test_valid_token(self) -> None:
        response, body = self.get(
            "/private", "Bearer " + sign(SECRET, "HS256", claims())
        )
        self.assertEqual((response.code, body), (200, b"hello alice"))

    def test_scheme_in_any_case(self) -> None:
        response, body = self.get(
            "/private", "bEaReR " + sign(SECRET, "HS256", claims())
        )
        self.assertEqual((response.code, body), (200, b"hello alice"))

    def test_children_protected(self) -> None:
        response, _ = self.get("/private/deeper")
        self.assertEqual(response.code, 401)

    def test_no_credentials(self) -> None:
        response, _ = self.get("/private")
        self.assertEqual(response.code, 401)
        self.assertEqual(self.challenge(response), [b'Bearer realm="netlab"'])

    def test_another_scheme(self) -> None:
        response, _ = self.get("/private", "Basic YWxpY2U6c2VjcmV0")
        self.assertEqual(response.code, 401)
        self.assertEqual(self.challenge(response), [b'Bearer realm="netlab"'])

    def test_refused_tokens(self) -> None:
        """
        Each refusal is a 401 with error="invalid_token", and its body holds
        neither the token nor the reason.
        """
        for token, reason in (
            (sign(SECRET, "HS256", claims(exp=int(NOW) - 100)), b"expired"),
            (sign(SECRET, "HS256", claims(sub=None)), b"sub"),
            ("not.a.token", b"malformed"),
            ("bad token with spaces", b"token68"),
            ("x" * 9000, b"large"),
        ):
            with capturedLogs() as events:
                response, body = self.get("/private", "Bearer " + token)
            self.assertEqual(response.code, 401)
            self.assertEqual(
                self.challenge(response),
                [b'Bearer realm="netlab", error="invalid_token"'],
            )
            self.assertNotIn(token.encode(), body)
            self.assertNotIn(reason, body.lower())
            self.assertNotIn(
                token.encode(),
                b"".join(response.headers.getRawHeaders(b"www-authenticate")),
            )
            assert_token_not_logged(self, token, events)

    def test_open_stays_open(self) -> None:
        response, body = self.get("/open")
        self.assertEqual((response.code, body), (200, b"open to all"))


class WebSocketTokenTests(SynchronousTestCase):
    def test_none(self) -> None:
        self.assertIsNone(auth.token_from_websocket({}, {}, []))
        self.assertIsNone(
            auth.token_from_websocket(
                {"authorization": "Basic eDp5"}, {"other": ["1"]}, ["chat"]
            )
        )

    def test_header(self) -> None:
        found = auth.token_from_websocket({"authorization": "Bearer abc"}, {}, [])
        self.assertEqual(found, "abc")

    def test_query(self) -> None:
        found = auth.token_from_websocket({}, {"access_token": ["abc", "def"]}, [])
        self.assertEqual(found, "abc")

    def test_subprotocol(self) -> None:
        found = auth.token_from_websocket({}, {}, ["chat", "bearer.abc.def.ghi"])
        self.assertEqual(found, "abc.def.ghi")

    def test_header_first(self) -> None:
        found = auth.token_from_websocket(
            {"authorization": "Bearer one"}, {"access_token": ["three"]}, ["bearer.two"]
        )
        self.assertEqual(found, "one")
        found = auth.token_from_websocket(
            {}, {"access_token": ["three"]}, ["bearer.two"]
        )
        self.assertEqual(found, "two")


def jwk(key: Any, kid: str | None, **members: Any) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        data["kid"] = kid
    data.update(members)
    return data


def jwks(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


class KeySetTests(SynchronousTestCase):
    """
    Reading a JWK Set.
    """

    def test_usable_keys(self) -> None:
        p256 = ec.generate_private_key(ec.SECP256R1())
        edwards = ed25519.Ed25519PrivateKey.generate()
        keys = auth.keys_from_jwks(
            jwks(
                jwk(rsa_key(), "rsa", use="sig"),
                jwk(p256, "ec"),
                jwk(edwards, "ed"),
                jwk(rsa_key(), "rs384", alg="RS384"),
            )
        )
        self.assertEqual(
            {key.kid: key.algorithms for key in keys},
            {
                "rsa": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
                "ec": {"ES256"},
                "ed": {"EdDSA"},
                "rs384": {"RS384"},
            },
        )

    def test_unfit_keys_skipped(self) -> None:
        p256 = ec.generate_private_key(ec.SECP256R1())
        keys = auth.keys_from_jwks(
            jwks(
                jwk(p256, "encryption", use="enc"),
                jwk(p256, "wrong-alg", alg="RS256"),
                jwk(p256, "no-verify", key_ops=["encrypt"]),
                {
                    "kty": "oct",
                    "kid": "secret",
                    "k": HMACAlgorithm.to_jwk(SECRET, True)["k"],
                },
                {"kty": "EC", "kid": "broken", "crv": "P-256", "x": "AA", "y": "AA"},
                "not an object",
                jwk(p256, "good"),
            )
        )
        self.assertEqual([key.kid for key in keys], ["good"])

    def test_garbage(self) -> None:
        for body in (b"not json", b"[]", b'{"keys": "none"}', b"\xff"):
            self.assertRaises(ValueError, auth.keys_from_jwks, body)

    def test_url_checked(self) -> None:
        memory = MemoryReactorClock()
        for url in ("http://id.example.com/jwks", "ftp://127.0.0.1/", "https:///x"):
            self.assertRaises(ValueError, auth.JWKS, url, memory)
        for url in (
            "https://id.example.com/jwks",
            "http://127.0.0.1:1/",
            "http://[::1]/",
        ):
            auth.JWKS(url, memory)


class Provider(Resource):
    """
    A JWKS URL whose answer the test sets, and which counts its requests.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.body = b'{"keys": []}'
        self.code = 200
        self.requests = 0
        self.stall = False

    def render_GET(self, request: Request) -> bytes | int:
        self.requests += 1
        if self.stall:
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        request.setHeader(b"Content-Type", b"application/json")
        return self.body


class _TrackedChannel(HTTPChannel):
    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.track(self)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.factory.forget(self)


class ProviderSite(ConnectionTracker, Site):
    protocol = _TrackedChannel

    def __init__(self, resource: Resource) -> None:
        ConnectionTracker.__init__(self)
        Site.__init__(self, resource)


class JWKSTests(Refusals, TestCase):
    """
    A JWKS fetched from a provider on loopback; time for refreshing is a
    fake clock.
    """

    async def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.provider = Provider()
        site = ProviderSite(self.provider)
        self.port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            site
        )
        self.listening = True

        async def stop() -> None:
            await self.stop_provider()
            for connection in list(site.connections):
                connection.transport.abortConnection()
            await bounded(site.drained())

        self.addCleanup(lambda: defer.Deferred.fromCoroutine(stop()))
        url = f"http://127.0.0.1:{self.port.getHost().port}/jwks.json"
        self.jwks = auth.JWKS(url, reactor, refresh_interval=60.0, clock=self.clock)
        self.checker = self.checker_for(self.jwks)
        self.k1 = ec.generate_private_key(ec.SECP256R1())
        self.k2 = ed25519.Ed25519PrivateKey.generate()
        self.stranger = ec.generate_private_key(ec.SECP256R1())

    def checker_for(self, keys: Any) -> auth.JWTChecker:
        return auth.JWTChecker(keys, clock=self.clock)

    async def stop_provider(self) -> None:
        if self.listening:
            self.listening = False
            await self.port.stopListening()

    def token(self, key: Any, kid: str, **changes: Any) -> str:
        algorithm = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
        now = int(self.clock.seconds())
        changes = {"iat": now, "nbf": now, "exp": now + 3600, **changes}
        return sign(key, algorithm, claims(**changes), kid=kid)

    async def accept(self, token: str) -> str:
        return await bounded(self.checker.requestAvatarId(auth.BearerToken(token)))

    async def refuse(self, token: str) -> list[Any]:
        """
        :return: the events logged while ``token`` was refused.
        """
        with capturedLogs() as events:
            d = self.checker.requestAvatarId(auth.BearerToken(token))
            await self.assertFailure(bounded(d), UnauthorizedLogin)
        assert_token_not_logged(self, token, events)
        return list(events)

    def warnings(self, events: list[Any]) -> list[str]:
        return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]

    async def test_kid_accepted(self) -> None:
        self.provider.body = jwks(jwk(self.k1, "k1"), jwk(self.k2, "k2"))
        self.assertEqual(await self.accept(self.token(self.k1, "k1")), "alice")
        self.assertEqual(await self.accept(self.token(self.k2, "k2", sub="bob")), "bob")
        self.assertEqual(self.provider.requests, 1)

    async def test_wrong_kid_refused(self) -> None:
        """
        The kid picks the key: k2's kid on a token k1 signed does not verify.
        """
        self.provider.body = jwks(jwk(self.k1, "k1"), jwk(self.k2, "k2"))
        await self.refuse(self.token(self.k1, "k2"))
        await self.refuse(self.token(self.k1, ""))

    async def test_first_use_fetches_once(self) -> None:
        """
        Tokens checked while the first fetch is under way all wait for it.
        """
        self.provider.body = jwks(jwk(self.k1, "k1"))
        checks = [
            self.checker.requestAvatarId(auth.BearerToken(self.token(self.k1, "k1")))
            for _ in range(3)
        ]
        results = await bounded(defer.gatherResults(checks))
        self.assertEqual(results, ["alice"] * 3)
        self.assertEqual(self.provider.requests, 1)

    async def test_rotation(self) -> None:
        """
        A key the provider adds is found by one refresh, once the refresh
        interval allows it.
        """
        self.provider.body = jwks(jwk(self.k1, "k1"))
        await self.accept(self.token(self.k1, "k1"))
        self.provider.body = jwks(jwk(self.k1, "k1"), jwk(self.k2, "k2"))
        await self.refuse(self.token(self.k2, "k2"))
        self.assertEqual(self.provider.requests, 1)
        self.clock.advance(60)
        self.assertEqual(await self.accept(self.token(self.k2, "k2")), "alice")
        self.assertEqual(await self.accept(self.token(self.k1, "k1")), "alice")
        self.assertEqual(self.provider.requests, 2)

    async def test_unknown_kid_refresh_rate_limited(self) -> None:
        self.provider.body = jwks(jwk(self.k1, "k1"))
        await self.accept(self.token(self.k1, "k1"))
        self.clock.advance(61)
        await self.refuse(self.token(self.stranger, "x"))
        self.assertEqual(self.provider.requests, 2)
        self.clock.advance(59)
        await self.refuse(self.token(self.stranger, "y"))
        self.assertEqual(self.provider.requests, 2)
        self.clock.advance(1)
        await self.refuse(self.token(self.stranger, "y"))
        self.assertEqual(self.provider.requests, 3)

    async def test_keys_expire(self) -> None:
        """
        After max_age the keys are fetched again: a key the provider dropped
        is no longer accepted.
        """
        self.provider.body = jwks(jwk(self.k1, "k1"), jwk(self.k2, "k2"))
        await self.accept(self.token(self.k1, "k1"))
        self.provider.body = jwks(jwk(self.k2, "k2"))
        self.clock.advance(auth.DEFAULT_JWKS_MAX_AGE)
        await self.refuse(self.token(self.k1, "k1"))
        self.assertEqual(await self.accept(self.token(self.k2, "k2")), "alice")
        self.assertEqual(self.provider.requests, 2)

    async def test_provider_down(self) -> None:
        """
        The keys already fetched stay in use (stale) while the provider is
        down; an unknown kid is refused at once.
        """
        self.provider.body = jwks(jwk(self.k1, "k1"))
        await self.accept(self.token(self.k1, "k1"))
        await self.stop_provider()
        self.clock.advance(61)
        events = await self.refuse(self.token(self.k2, "k2"))
        self.assertTrue(self.warnings(events), events)
        self.clock.advance(auth.DEFAULT_JWKS_MAX_AGE)
        with capturedLogs() as events:
            self.assertEqual(await self.accept(self.token(self.k1, "k1")), "alice")
        self.assertIn("1 keys fetched before", "".join(self.warnings(list(events))))

    async def test_garbage_body(self) -> None:
        self.provider.body = b"<html>not a key set</html>"
        events = await self.refuse(self.token(self.k1, "k1"))
        self.assertIn("not JSON", "".join(self.warnings(events)))
        self.provider.body = jwks(jwk(self.k1, "k1"))
        self.clock.advance(60)
        await self.accept(self.token(self.k1, "k1"))
        for garbage in (b'{"keys": "none"}', jwks(jwk(self.k2, "k2", use="enc"))):
            self.provider.body = garbage
            self.clock.advance(60)
            await self.refuse(self.token(self.k2, "k2"))
            self.assertEqual(await self.accept(self.token(self.k1, "k1")), "alice")
        self.assertEqual(self.provider.requests, 4)

    async def test_error_status(self) -> None:
        self.provider.body = jwks(jwk(self.k1, "k1"))
        self.provider.code = 503
        events = await self.refuse(self.token(self.k1, "k1"))
        self.assertIn("HTTP status 503", "".join(self.warnings(events)))

    async def test_oversized_body(self) -> None:
        self.provider.body = jwks(jwk(self.k1, "k1"))
        small = auth.JWKS(self.jwks.url, reactor, clock=self.clock, max_size=64)
        self.checker = self.checker_for(small)
        events = await self.refuse(self.token(self.k1, "k1"))
        self.assertIn("larger than 64 bytes", "".join(self.warnings(events)))

    async def test_fetch_times_out(self) -> None:
        self.provider.stall = True
        stalled = auth.JWKS(self.jwks.url, reactor, clock=self.clock, timeout=0.1)
        self.checker = self.checker_for(stalled)
        events = await self.refuse(self.token(self.k1, "k1"))
        self.assertIn("TimeoutError", "".join(self.warnings(events)))
