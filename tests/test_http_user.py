"""
A user's own twisted.web resource and WSGI app served by :class:`HTTPSite`
with every netlab guarantee: limits, access log, metrics, bearer tokens,
drain, ``/healthz``, and the WSGI thread pool started and stopped once.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import REGISTRY
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from netlab import auth, http
from netlab.limits import Limits
from netlab.testing import serve
from netlab.tracking import drain
from tests import user_http
from tests.hostile._helpers import next_response, open_peer
from tests.support import WAIT, bounded
from tests.test_protect import AUDIENCE, bearer, secret_file

LIMITS = Limits(
    max_body=1000,
    max_headers=10,
    # Every request here must send its head within it: 2 s is many times
    # what a loaded machine needs, and the 408 tests wait for it.
    head_timeout=2.0,
    idle_timeout=30.0,
    drain_seconds=10.0,
)


def requests_counted(service: str, status: int, method: str = "GET") -> float:
    labels = {"service": service, "method": method, "status": str(status)}
    return REGISTRY.get_sample_value("netlab_http_requests_total", labels) or 0.0


async def until(condition, seconds: float = 5.0) -> None:
    """
    Wait until ``condition()`` holds, within ``seconds``.
    """
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await task.deferLater(reactor, 0.02)
    raise AssertionError("condition not met in time")


class Sites:
    """
    Builds the sites under test, each stopped when its test ends.
    """

    def resource_site(self, root: Resource | None = None, **kw) -> http.HTTPSite:
        site = http.HTTPSite(http.UserRoot(root or user_http.Root()), LIMITS, **kw)
        site.service_name = "user-resource"
        return site

    def wsgi_site(self, threads: int = 2, **kw) -> http.HTTPSite:
        app = http.WSGIApp(user_http.app, threads=threads)
        app.startService()
        self.addCleanup(app.stopService)
        self.wsgi = app
        site = http.HTTPSite(http.UserRoot(app.resource), LIMITS, **kw)
        # Its own name: a request of an earlier test may still be counted.
        site.service_name = "user-wsgi-" + self.id().rsplit(".", 1)[-1]
        return site

    async def get(self, site: http.HTTPSite, path: str, **kw) -> http.Response:
        served = await serve(self, site)
        self.addCleanup(lambda: bounded(site.drained()))
        return await http.fetch(served.url(path), timeout=WAIT, **kw)

    async def assert_head_limits(self, served: Any, path: bytes) -> None:
        """
        A request head over ``max_headers`` is ``431``, and one that never
        ends is ``408`` once the head timeout passes.
        """
        peer = await open_peer(self, served)
        headers = b"".join(b"X-%d: v\r\n" % i for i in range(11))
        head = b"GET %s HTTP/1.1\r\nHost: h\r\n" % path
        peer.transport.write(head + headers + b"\r\n")
        self.assertEqual((await next_response(peer)).status, 431)
        peer = await open_peer(self, served)
        peer.transport.write(head)
        self.assertEqual((await next_response(peer, 5)).status, 408)


class UserResourceTests(Sites, TestCase):
    timeout = 60

    async def test_dynamic_resource(self) -> None:
        site = self.resource_site()
        response = await self.get(site, "/greet?name=bob")
        self.assertEqual((response.code, response.body), (200, b"Hello, bob!\n"))
        self.assertEqual(response.headers.getRawHeaders(b"server"), [b"netlab"])

    async def test_healthz_added_unless_the_tree_has_one(self) -> None:
        site = self.resource_site()
        served = await serve(self, site)
        health = await http.fetch(served.url("/healthz"), timeout=WAIT)
        self.assertEqual(json.loads(health.body), {"status": "ok"})
        missing = await http.fetch(served.url("/nope"), timeout=WAIT)
        self.assertEqual(missing.code, 404)

        own = user_http.Root()
        own.putChild(b"healthz", user_http.Greeting())
        served = await serve(self, self.resource_site(own))
        response = await http.fetch(served.url("/healthz?name=me"), timeout=WAIT)
        self.assertEqual(response.body, b"Hello, me!\n")

    async def test_no_healthz(self) -> None:
        site = http.HTTPSite(http.UserRoot(user_http.Root(), health=False), LIMITS)
        response = await self.get(site, "/healthz")
        self.assertEqual(response.code, 404)

    async def test_limits(self) -> None:
        served = await serve(self, self.resource_site())
        peer = await open_peer(self, served)
        peer.transport.write(
            b"POST /greet HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n"
        )
        self.assertEqual((await next_response(peer)).status, 413)
        await self.assert_head_limits(served, b"/greet")
        peer = await open_peer(self, served)
        peer.transport.write(
            b"POST /greet HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"
            + b"x" * 1000
        )
        response = await next_response(peer)
        self.assertEqual(response.body, b"got 1000 bytes\n")

    async def test_access_log_and_metrics(self) -> None:
        site = self.resource_site()
        before = requests_counted("user-resource", 200)
        with capturedLogs() as events:
            await self.get(site, "/greet?name=log")
        [event] = [e for e in events if e.get("log_format") == "{request}"]
        self.assertEqual(
            (event["method"], event["path"], event["status"], event["bytes"]),
            ("GET", "/greet?name=log", 200, len(b"Hello, log!\n")),
        )
        self.assertEqual(requests_counted("user-resource", 200), before + 1)

    async def test_protect(self) -> None:
        secret = secret_file(self)
        checker = auth.JWTChecker(auth.secret_from_file(secret), audience=AUDIENCE)
        protection = auth.Protection(checker, ("/",))
        served = await serve(self, self.resource_site(protection=protection))
        refused = await http.fetch(served.url("/greet"), timeout=WAIT)
        self.assertEqual(refused.code, 401)
        token = auth.mint(secret, "alice", audience=AUDIENCE)
        allowed = await http.fetch(
            served.url("/greet?name=alice"), headers=bearer(token), timeout=WAIT
        )
        self.assertEqual((allowed.code, allowed.body), (200, b"Hello, alice!\n"))
        health = await http.fetch(served.url("/healthz"), timeout=WAIT)
        self.assertEqual(health.code, 200)

    async def test_drain_finishes_a_request_in_flight(self) -> None:
        site = self.resource_site()
        served = await serve(self, site)
        peer = await open_peer(self, served)
        peer.transport.write(
            b"GET /greet?name=late&slow=0.5 HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        await task.deferLater(reactor, 0.1)
        draining = defer_of(drain([site], WAIT, reactor))
        response = await next_response(peer, 5)
        self.assertEqual(response.body, b"Hello, late!\n")
        self.assertEqual(response.header(b"connection"), [b"close"])
        await bounded(draining)


def defer_of(coroutine):
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coroutine)


class WSGITests(Sites, TestCase):
    timeout = 60

    async def test_serves_the_app_in_its_pool(self) -> None:
        response = await self.get(self.wsgi_site(), "/hello?name=wsgi")
        self.assertEqual(response.body, b"Hello, wsgi! (/hello)\n")
        self.assertEqual(response.headers.getRawHeaders(b"server"), [b"netlab"])
        self.assertTrue(any("netlab-wsgi" in name for name in user_http.seen.threads))

    async def test_healthz_never_reaches_the_app(self) -> None:
        site = self.wsgi_site()
        served = await serve(self, site)
        before = list(user_http.seen.requests)
        health = await http.fetch(served.url("/healthz"), timeout=WAIT)
        self.assertEqual(json.loads(health.body), {"status": "ok"})
        self.assertEqual(user_http.seen.requests, before)

    async def test_body_over_limit_refused_before_the_app(self) -> None:
        served = await serve(self, self.wsgi_site())
        before = list(user_http.seen.requests)
        for raw in (
            b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n",
            b"POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3e9\r\n"
            + b"x" * 1001
            + b"\r\n0\r\n\r\n",
        ):
            peer = await open_peer(self, served)
            peer.transport.write(raw)
            self.assertEqual((await next_response(peer)).status, 413)
        # Under the limit, the app reads the whole body.
        response = await http.fetch(
            served.url("/small"), method="POST", data=b"y" * 1000, timeout=WAIT
        )
        self.assertEqual(response.body, b"got 1000 bytes\n")
        self.assertEqual(user_http.seen.requests, [*before, ("POST", "/small", 1000)])

    async def test_header_limits_and_head_timeout(self) -> None:
        served = await serve(self, self.wsgi_site())
        await self.assert_head_limits(served, b"/a")

    async def test_access_log_metrics_and_protect(self) -> None:
        secret = secret_file(self)
        checker = auth.JWTChecker(auth.secret_from_file(secret), audience=AUDIENCE)
        site = self.wsgi_site(protection=auth.Protection(checker, ("/private",)))
        served = await serve(self, site)
        name = site.service_name
        before = requests_counted(name, 200)
        with capturedLogs() as events:
            refused = await http.fetch(served.url("/private/x"), timeout=WAIT)
            token = auth.mint(secret, "alice", audience=AUDIENCE)
            allowed = await http.fetch(
                served.url("/private/x?name=a"), headers=bearer(token), timeout=WAIT
            )
            open_ = await http.fetch(served.url("/public"), timeout=WAIT)
            # A WSGI response is complete on the wire before the request
            # finishes (and is logged) on the reactor.
            await until(lambda: requests_counted(name, 200) == before + 2)
        self.assertEqual(refused.code, 401)
        self.assertEqual(allowed.body, b"Hello, a! (/private/x)\n")
        self.assertEqual(open_.body, b"Hello, world! (/public)\n")
        logged = [
            (e["path"], e["status"])
            for e in events
            if e.get("log_format") == "{request}" and e["log_source"] is site
        ]
        self.assertEqual(
            logged,
            [("/private/x", 401), ("/private/x?name=a", 200), ("/public", 200)],
        )
        self.assertEqual(requests_counted(name, 200), before + 2)

    async def test_drain_finishes_a_request_in_flight(self) -> None:
        site = self.wsgi_site()
        served = await serve(self, site)
        user_http.release.clear()
        self.addCleanup(user_http.release.set)
        peer = await open_peer(self, served)
        peer.transport.write(b"GET /wait HTTP/1.1\r\nHost: h\r\n\r\n")
        await task.deferLater(reactor, 0.2)
        draining = defer_of(drain([site], WAIT, reactor))
        reactor.callLater(0.3, user_http.release.set)
        response = await next_response(peer, 5)
        self.assertEqual(response.body, b"Hello, world! (/wait)\n")
        self.assertEqual(response.header(b"connection"), [b"close"])
        await bounded(draining)

    async def test_pool_stopped_once(self) -> None:
        app = http.WSGIApp(user_http.app, threads=3)
        app.startService()
        self.assertTrue(app.pool.started)
        # A request under way when the stop begins finishes first.
        user_http.release.clear()
        self.addCleanup(user_http.release.set)
        site = http.HTTPSite(http.UserRoot(app.resource), LIMITS)
        served = await serve(self, site)
        peer = await open_peer(self, served)
        peer.transport.write(b"GET /wait HTTP/1.1\r\nHost: h\r\n\r\n")
        await task.deferLater(reactor, 0.2)
        with capturedLogs() as events:
            first, second = app.stopService(), app.stopService()
            reactor.callLater(0.3, user_http.release.set)
            response = await next_response(peer, 5)
            await bounded(first)
            await bounded(second)
            await bounded(app.stopService())
        self.assertEqual(response.status, 200)
        self.assertFalse(app.pool.started)
        self.assertFalse(any(thread.is_alive() for thread in app.pool.threads))
        stopped = [
            e for e in events if e.get("log_format") == "WSGI thread pool stopped"
        ]
        self.assertEqual(len(stopped), 1)

    def test_threads_bounded(self) -> None:
        app = http.WSGIApp(user_http.app, threads=4, reactor=reactor)
        self.assertEqual(app.pool.max, 4)
        self.assertRaises(ValueError, http.WSGIApp, user_http.app, threads=0)

    async def test_threads_busy_do_not_block_the_reactor(self) -> None:
        """
        Requests beyond the pool's size wait their turn; the reactor keeps
        answering (``/healthz``) meanwhile.
        """
        site = self.wsgi_site(threads=1)
        served = await serve(self, site)
        user_http.release.clear()
        self.addCleanup(user_http.release.set)
        peer = await open_peer(self, served)
        peer.transport.write(b"GET /wait HTTP/1.1\r\nHost: h\r\n\r\n")
        queued = http.fetch(served.url("/queued"), timeout=WAIT)
        health = await http.fetch(served.url("/healthz"), timeout=WAIT)
        self.assertEqual(health.code, 200)
        self.assertFalse(queued.called)
        await deferToThread(user_http.release.set)
        self.assertEqual((await next_response(peer, 5)).status, 200)
        self.assertEqual((await queued).body, b"Hello, world! (/queued)\n")
