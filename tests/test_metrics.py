"""
Prometheus metrics: real traffic to each service on loopback, then a scrape
of ``/metrics`` read with prometheus_client's own parser.

The registry is the process's: each test compares a scrape before with one
after.
"""

from __future__ import annotations

import pathlib

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

from netlab import auth, certs, http, metrics, tls, websocket
from netlab.services import echo, hello
from tests.support import WAIT, bounded


class Scraper:
    """
    A ``/metrics`` site on loopback, and reading what it says.
    """

    def __init__(self, case: TestCase) -> None:
        self.case = case

    async def start(self) -> None:
        root = Resource()
        root.putChild(b"metrics", metrics.resource())
        site = http.HTTPSite(root)
        site.service_name = "metrics"
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.case.addCleanup(port.stopListening)
        self.case.addCleanup(lambda: bounded(site.drained()))
        self.url = f"http://127.0.0.1:{port.getHost().port}/metrics"

    async def scrape(self) -> dict[tuple[str, tuple], float]:
        """
        :return: every sample, by name and sorted labels.
        """
        response = await http.fetch(self.url, timeout=WAIT)
        self.case.assertEqual(response.code, 200)
        self.case.assertTrue(
            response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
        )
        samples = {}
        for family in text_string_to_metric_families(response.body.decode()):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = sample.value
        return samples


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


class MetricsTests(TestCase):
    timeout = 60

    async def serve(self, factory, description="tcp:0:interface=127.0.0.1") -> int:
        port = await serverFromString(reactor, description).listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(factory.drained()))
        return port.getHost().port

    async def test_tcp_connections_and_bytes(self) -> None:
        scraper = Scraper(self)
        await scraper.start()
        factory = echo.EchoFactory()
        port = await self.serve(factory)
        before = await scraper.scrape()
        for message in (b"a" * 1000, b"b" * 24):
            await echo.echo(f"tcp:127.0.0.1:{port}", message, timeout=WAIT)
        await bounded(factory.drained())
        after = await scraper.scrape()
        self.assertEqual(
            delta(before, after, "netlab_connections_opened_total", service="echo"), 2
        )
        self.assertEqual(
            delta(before, after, "netlab_connections_closed_total", service="echo"), 2
        )
        self.assertEqual(
            delta(before, after, "netlab_connections_active", service="echo"), 0
        )
        for name in ("netlab_received_bytes_total", "netlab_sent_bytes_total"):
            self.assertEqual(delta(before, after, name, service="echo"), 1024)

    async def test_http_requests_and_websocket_messages(self) -> None:
        scraper = Scraper(self)
        await scraper.start()
        site = http.HTTPSite(hello.Root())
        port = await self.serve(site)
        before = await scraper.scrape()
        base = f"http://127.0.0.1:{port}"
        await http.fetch(base + "/", timeout=WAIT)
        await http.fetch(base + "/nowhere", timeout=WAIT)
        await http.fetch(base + "/echo", method="POST", data=b"12345", timeout=WAIT)
        connection = await websocket.connect(f"ws://127.0.0.1:{port}/ws")
        for text in ("one", "two"):
            connection.send(text)
            await bounded(connection.receive())
        await bounded(connection.close(1000))
        await bounded(site.drained())
        after = await scraper.scrape()

        def requests(method: str, status: str) -> float:
            return delta(
                before,
                after,
                "netlab_http_requests_total",
                service="http",
                method=method,
                status=status,
            )

        self.assertEqual(requests("GET", "200"), 1)
        self.assertEqual(requests("GET", "404"), 1)
        self.assertEqual(requests("POST", "200"), 1)
        self.assertEqual(
            delta(
                before,
                after,
                "netlab_http_request_duration_seconds_count",
                service="http",
                method="GET",
            ),
            2,
        )
        self.assertEqual(
            delta(before, after, "netlab_websocket_messages_total", direction="in"), 2
        )
        self.assertEqual(
            delta(before, after, "netlab_websocket_closes_total", code="1000"), 1
        )
        self.assertEqual(
            delta(before, after, "netlab_received_bytes_total", service="ws"), 6
        )

    async def test_tls_and_auth_failures(self) -> None:
        scraper = Scraper(self)
        await scraper.start()
        paths = certs.make_certificates(pathlib.Path(self.mktemp()))
        secret = pathlib.Path(self.mktemp())
        secret.write_bytes(b"s" * 32)
        checker = auth.JWTChecker(auth.secret_from_file(secret))
        site = http.HTTPSite(hello.Root(), protection=auth.Protection(checker, ("/",)))
        port = await self.serve(
            site,
            f"netlab-ssl:0:privateKey={paths.server_key}:certKey={paths.server}"
            f":clientCA={paths.ca}",
        )
        before = await scraper.scrape()
        url = f"https://localhost:{port}/"
        # No client certificate: the server ends the handshake.
        trusting = tls.ClientTLS(cacert=str(paths.ca))
        with self.assertRaises(Exception) as caught:
            await http.fetch(url, tls=trusting, timeout=WAIT)
        self.assertIn("certificate required", str(caught.exception))
        client = tls.ClientTLS(
            cacert=str(paths.ca), cert=str(paths.client), key=str(paths.client_key)
        )
        refused = await http.fetch(url, tls=client, timeout=WAIT)
        self.assertEqual(refused.code, 401)
        await bounded(site.drained())
        after = await scraper.scrape()
        self.assertEqual(
            delta(before, after, "netlab_tls_handshake_failures_total", service="http"),
            1,
        )
        self.assertEqual(
            delta(before, after, "netlab_auth_failures_total", via="http"), 1
        )


class HistogramTests(SynchronousTestCase):
    def test_buckets_are_cumulative_and_bounds_inclusive(self) -> None:
        """
        A duration equal to a bucket's bound counts in that bucket (``le``),
        the buckets are cumulative, and the sum and count add up.
        """
        for seconds in (0.005, 0.0051, 0.3, 11.0):
            metrics.http_request("histogram-test", "GET", 200, seconds)
        samples = {
            (sample.name, sample.labels.get("le")): sample.value
            for sample in metrics.HTTP_DURATION.collect().samples
            if sample.labels["service"] == "histogram-test"
        }
        bucket = "netlab_http_request_duration_seconds_bucket"
        self.assertEqual(samples[(bucket, "0.005")], 1)
        self.assertEqual(samples[(bucket, "0.01")], 2)
        self.assertEqual(samples[(bucket, "0.25")], 2)
        self.assertEqual(samples[(bucket, "0.5")], 3)
        self.assertEqual(samples[(bucket, "10.0")], 3)
        self.assertEqual(samples[(bucket, "+Inf")], 4)
        self.assertEqual(
            samples[("netlab_http_request_duration_seconds_count", None)], 4
        )
        self.assertAlmostEqual(
            samples[("netlab_http_request_duration_seconds_sum", None)], 11.3101
        )
