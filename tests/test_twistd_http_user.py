"""
``twistd -n netlab-http --resource`` and ``--wsgi`` as users run them: real
processes serving :mod:`tests.user_http`, and bad values refused in one line.
"""

from __future__ import annotations

import pathlib

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netlab import auth, certs, http
from netlab.tap import http as tap_http
from tests.support import WAIT, run
from tests.test_protect import AUDIENCE
from tests.test_twistd import LOOPBACK_ANY_PORT, TwistdCase, twistd
from tests.user_http import Root


class OptionTests(SynchronousTestCase):
    def parse(self, *args: str) -> tap_http.Options:
        options = tap_http.Options()
        options.parseOptions(["--listen", LOOPBACK_ANY_PORT, *args])
        return options

    def test_resource_kinds(self) -> None:
        for path in (
            "tests.user_http:root",
            "tests.user_http:Root",
            "tests.user_http:make_root",
        ):
            site = tap_http.Options.make_factory(self.parse("--resource", path))
            self.assertIsInstance(site.resource, http.UserRoot)
            self.assertIsInstance(site.resource.resource, Root)

    def test_bad_values(self) -> None:
        for args, said in (
            (("--resource", "tests.user_http:not_a_resource"), "got int"),
            (("--resource", "tests.no_such_xyz:root"), "no module named"),
            (("--resource", "tests.user_http:nope"), "has no 'nope'"),
            (("--wsgi", "tests.user_http:not_a_resource"), "a callable), got int"),
            (
                ("--resource", "tests.user_http:root", "--wsgi", "tests.user_http:app"),
                "not both",
            ),
            (("--wsgi", "tests.user_http:app", "--wsgi-threads", "0"), "at least 1"),
        ):
            error = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(said, str(error))
            self.assertNotIn("\n", str(error))


class ResourcePluginTests(TwistdCase):
    async def test_resource_over_tls_with_protect_and_metrics(self) -> None:
        folder = pathlib.Path(self.mktemp()).resolve()
        paths = certs.make_certificates(folder)
        secret = folder / "secret"
        secret.write_bytes(b"s" * 32)
        capture = folder / "capture.pcapng"
        child, [metrics_port, port] = await self.start(
            "netlab-http",
            *("--resource", "tests.user_http:root"),
            *(
                "--listen",
                f"ssl:0:interface=127.0.0.1:privateKey={paths.server_key}"
                f":certKey={paths.server}",
            ),
            *("--protect", "/greet", "--jwt-secret", str(secret)),
            *("--jwt-audience", AUDIENCE),
            *("--metrics", LOOPBACK_ANY_PORT, "--drain-seconds", "5"),
            *("--wiretap", str(capture)),
            factories=("HTTPSite", r"HTTPSite \(WiretapFactory\) \(TLS\)"),
        )
        base = f"https://localhost:{port}"
        trust = http.ClientTLS(cacert=str(paths.ca))
        refused = await http.fetch(base + "/greet?name=x", tls=trust, timeout=WAIT)
        self.assertEqual(refused.code, 401)
        token = auth.mint(str(secret), "alice", audience=AUDIENCE)
        allowed = await http.fetch(
            base + "/greet?name=alice",
            headers={"Authorization": [f"Bearer {token}"]},
            tls=trust,
            timeout=WAIT,
        )
        self.assertEqual((allowed.code, allowed.body), (200, b"Hello, alice!\n"))
        health = await http.fetch(base + "/healthz", tls=trust, timeout=WAIT)
        self.assertEqual(health.code, 200)
        scraped = await http.fetch(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=WAIT
        )
        self.assertIn(
            b'netlab_http_requests_total{method="GET",service="http",status="200"}',
            scraped.body,
        )
        await self.assert_stops_on_sigterm(child, port)
        # The plaintext of the user's answer, as the wiretap recorded it.
        self.assertIn(b"Hello, alice!", capture.read_bytes())

    async def test_bad_values_are_one_line(self) -> None:
        for args, said in (
            (("--resource", "tests.no_such_xyz:root"), b"no module named"),
            (("--resource", "tests.user_http:nope"), b"has no 'nope'"),
            (("--resource", "tests.user_http:not_a_resource"), b"got int"),
            (
                ("--resource", "tests.user_http:root", "--wsgi", "tests.user_http:app"),
                b"not both",
            ),
        ):
            result = await run(
                twistd("-n", "--pidfile=", "netlab-http", *args), cwd=self.outside
            )
            self.assertEqual(result.status, 1, result)
            self.assertNotIn(b"Traceback", result.out + result.err)
            last = (result.out + result.err).strip().splitlines()[-1]
            self.assertIn(said, last)


class WSGIPluginTests(TwistdCase):
    async def test_wsgi_with_workers(self) -> None:
        child, [port] = await self.start(
            "netlab-http",
            *("--wsgi", "tests.user_http:app", "--workers", "2"),
            *("--listen", LOOPBACK_ANY_PORT),
            factories=("HTTPSite",),
        )
        for name in ("a", "b", "c", "d"):
            response = await http.fetch(
                f"http://127.0.0.1:{port}/hi?name={name}", timeout=WAIT
            )
            self.assertEqual(response.body, f"Hello, {name}! (/hi)\n".encode())
        health = await http.fetch(f"http://127.0.0.1:{port}/healthz", timeout=WAIT)
        self.assertEqual(health.code, 200)
        await self.assert_stops_on_sigterm(child, port)

    async def test_wsgi_pool_stopped_once_on_sigterm(self) -> None:
        child, [port] = await self.start(
            "netlab-http",
            *("--wsgi", "tests.user_http:app", "--wsgi-threads", "3"),
            *("--max-body", "100", "--listen", LOOPBACK_ANY_PORT),
            factories=("HTTPSite",),
        )
        base = f"http://127.0.0.1:{port}"
        response = await http.fetch(base + "/x", timeout=WAIT)
        self.assertEqual(response.body, b"Hello, world! (/x)\n")
        big = await http.fetch(base + "/x", method="POST", data=b"z" * 101)
        self.assertEqual(big.code, 413)
        await self.assert_stops_on_sigterm(child, port)
        result = await child.ended()
        self.assertEqual(result.out.count(b"WSGI thread pool stopped"), 1, result)
