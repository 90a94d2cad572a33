"""
The twistd plugins' options and services (``twistd netlab-echo``, ...).

One module per plugin, each with an ``Options`` class and a ``makeService``
function, as in :mod:`twisted.web.tap`. What they share lives here.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.resource import Resource

from netlab import auth, metrics, proxy, pubsub, workers
from netlab.http import HTTPSite
from netlab.limits import LimitOptions
from netlab.tls import ClientTLS, hardened, use_keylog
from netlab.tracking import ConnectionTracker, drain
from netlab.transport import flushing
from netlab.wiretap import Wiretap


def import_object(path: str, option: str) -> Any:
    """
    Import what an option names: ``package.module:name`` (``name`` may be
    dotted) or, as ``twistd web --class`` takes it, ``package.module.name``.

    The current folder is searched first, as ``python -m`` and gunicorn do
    (twistd's own ``sys.path`` starts at its script's folder instead).

    :param option: the option's name, for the error (``--resource``).
    :raise ~twisted.python.usage.UsageError: with a one-line reason when the
        module cannot be imported or has no such name.
    """
    module_name, colon, name = path.partition(":")
    if not colon:
        module_name, _, name = path.rpartition(".")
    if (
        not module_name
        or not name
        or not all(
            part.isidentifier() for part in (*module_name.split("."), *name.split("."))
        )
    ):
        raise usage.UsageError(
            f"{option} {path}: expected package.module:name, such as myapp:root"
        )
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise usage.UsageError(
                f"{option} {path}: no module named {error.name!r} "
                "(is its folder on PYTHONPATH?)"
            ) from None
        raise usage.UsageError(
            f"{option} {path}: importing {module_name} failed: {error}"
        ) from None
    except Exception as error:
        raise usage.UsageError(
            f"{option} {path}: importing {module_name} failed: "
            f"{type(error).__name__}: {error}"
        ) from None
    for part in name.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise usage.UsageError(
                f"{option} {path}: {module_name} has no {name!r}"
            ) from None
    return found


#: The listen backlog of every endpoint that takes one and names none:
#: connections the kernel completes before the service accepts them.
#: Twisted's default, 50, overflows in a burst of connects (the others wait
#: for their SYN to be sent again, a second and more later); the kernel
#: caps the figure at ``net.core.somaxconn`` (4096 on current Linux).
DEFAULT_BACKLOG = 4096
# The endpoint types whose parsers take ``backlog=``.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "netlab-ssl", "unix"})
_NAMES_BACKLOG = re.compile(r"(?<!\\):backlog=")


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    :return: ``description`` asking for ``backlog``, when its endpoint type
        takes one and it names none itself (``tcp:8080:backlog=128`` keeps
        its own).
    """
    kind = description.split(":", 1)[0]
    if kind not in _BACKLOG_TYPES or _NAMES_BACKLOG.search(description):
        return description
    return f"{description}:backlog={backlog}"


def check_endpoint(description: str) -> str:
    """
    Check a server endpoint string without listening on it.

    TLS certificates and keys are loaded and checked here, so a bad one stops
    start-up with one line instead of a traceback when the service starts.

    :return: the string to listen on: a Twisted ``ssl:`` string becomes
        netlab's hardened ``netlab-ssl:``.
    :raise ~twisted.python.usage.UsageError: with a one-line reason when it
        cannot be used.
    """
    from twisted.internet import reactor

    inner, behind_proxy = proxy.split(description)
    description = hardened(inner)
    if behind_proxy:
        description = f"{proxy.PREFIX}:{description}"
    try:
        proxy.server_endpoint(reactor, description)
    except Exception as error:
        raise usage.UsageError(f"bad endpoint {description!r}: {error}") from None
    return description


class PluginService(MultiService):
    """
    The service a netlab plugin hands to twistd.

    A port it cannot listen on ends twistd with one logged line and exit
    status 1, instead of a traceback, and leaves nothing behind: not
    twistd's pid file (twistd removes it only after an ``Exception``, and
    this exit is a ``SystemExit``), nor an empty ``--wiretap`` capture.

    :param pidfile: twistd's pid file, if it writes one.
    """

    _log = Logger()

    def __init__(self, pidfile: str | None = None) -> None:
        super().__init__()
        self.pidfile = pidfile

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as error:
            self._log.critical(
                "cannot listen on {interface}:{port}: {reason}",
                interface=error.interface or "*",
                port=error.port,
                reason=error.socketError,
            )
            self._leave_nothing()
            raise SystemExit(1) from None

    def _leave_nothing(self) -> None:
        for child in self:
            if isinstance(child, _TapService):
                child.tap.discard()
        if self.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(self.pidfile)


def _as_plugins_listen(description: str, reactor: Any) -> tuple[str, Any]:
    """
    :return: the endpoint string and reactor a plugin listens with for
        ``description`` and ``reactor`` (see :func:`plugin_endpoint`).
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        # Replies leave with the read that made them (netlab.transport).
        reactor = flushing(_reactor)
    inner, behind_proxy = proxy.split(description)
    if behind_proxy:
        # The PROXY header is read on the connection, before TLS and before
        # the factory builds a protocol (netlab.proxy).
        reactor = proxy.proxied(reactor)
    return with_backlog(hardened(inner)), reactor


def plugin_endpoint(description: str, reactor: Any = None) -> IStreamServerEndpoint:
    """
    The endpoint a netlab plugin listens on for ``--listen description``:
    ``ssl:`` read as ``netlab-ssl:``, ``haproxy:`` read by :mod:`netlab.proxy`,
    :data:`DEFAULT_BACKLOG` unless the string names a backlog, and, on the
    global reactor, the flushing transport of :mod:`netlab.transport`. What
    tests serve with, so that they hold what the plugins serve to the
    contracts.

    :param reactor: what the endpoint listens with; ``None``, the global
        reactor with the flushing transport.
    """
    description, reactor = _as_plugins_listen(description, reactor)
    return serverFromString(reactor, description)


def listening_service(
    descriptions: Iterable[str],
    factory: IProtocolFactory,
    tap: Wiretap | None = None,
    reactor: Any = None,
) -> MultiService:
    """
    :param tap: if given, records every connection.
    :param reactor: what the endpoints listen with (``None``: the global
        reactor); :mod:`netlab.workers` gives its own, which shares or adopts
        the sockets.
    :return: a service that listens with ``factory`` on each endpoint string.
    """
    service = MultiService()
    # First in, so that on stop it is called after every port has begun to
    # close: nothing new comes in while the connections drain.
    _Drain(factory).setServiceParent(service)
    if tap is not None:
        factory = tap.wrap(factory)
    for description in descriptions:
        # As plugin_endpoint listens; strports.service, so that a port that
        # cannot listen stops twistd with the error.
        description, listener = _as_plugins_listen(description, reactor)
        strports.service(description, factory, listener).setServiceParent(service)
    return service


class _Drain(Service):
    """
    On stop, drains a factory's connections (see
    :func:`netlab.tracking.drain`) within its ``drain_seconds``.
    """

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def stopService(self) -> Any:
        super().stopService()
        if not isinstance(self.factory, ConnectionTracker):
            return None
        from twisted.internet import reactor

        return defer.Deferred.fromCoroutine(
            drain([self.factory], self.factory.limits.drain_seconds, reactor)
        )


class _TapService(Service):
    """
    Closes a wiretap's file when twistd stops.
    """

    def __init__(self, tap: Wiretap) -> None:
        self.tap = tap

    def stopService(self) -> Any:
        super().stopService()
        return self.tap.close()


class DebugOptions(usage.Options):
    """
    ``--wiretap FILE``: record every connection for Wireshark;
    ``--tls-keylog FILE``: the TLS secrets to decrypt a real capture;
    ``--metrics ENDPOINT``: Prometheus metrics at ``/metrics``.

    Under ``twistd`` with no ``--logger`` (nor ``--syslog``), the log is
    netlab's faster text observer, written where twistd's own would write
    (see :func:`netlab.logs.use_under_twistd`).
    """

    def opt_metrics(self, description: str) -> None:
        """
        Serve Prometheus metrics at /metrics on this endpoint string.
        """
        self["metrics"] = check_endpoint(description)

    optParameters = [
        [
            "tls-keylog",
            None,
            None,
            "Append TLS secrets to this file (NSS key log, for Wireshark) "
            "[default: $SSLKEYLOGFILE, if set].",
        ],
        [
            "wiretap",
            None,
            None,
            "Record every connection's bytes (plaintext under TLS) in this "
            "pcapng file, for Wireshark or tshark.",
        ],
        [
            "wiretap-max-bytes",
            None,
            1024 * 1024 * 1024,
            "Stop recording when the file reaches this size.",
            int,
        ],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        self._use_netlab_log()
        if self["tls-keylog"]:
            try:
                use_keylog(self["tls-keylog"])
            except OSError as error:
                raise usage.UsageError(
                    f"--tls-keylog {self['tls-keylog']}: {error.strerror}"
                ) from None
        path = self["wiretap"]
        if path is None:
            return
        if self["wiretap-max-bytes"] <= 0:
            raise usage.UsageError("--wiretap-max-bytes must be positive")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.access(folder, os.W_OK) or os.path.isdir(path):
            raise usage.UsageError(f"--wiretap {path}: cannot write there")

    def _use_netlab_log(self) -> None:
        """
        As twistd's sub-command, tell :mod:`netlab.logs` twistd's options
        (parsed, but not yet used to make its log observer).
        """
        from twisted.application.app import ServerOptions

        from netlab import logs

        parent = getattr(self, "parent", None)
        if isinstance(parent, ServerOptions):
            logs.use_under_twistd(parent)

    def root(self) -> PluginService:
        """
        :return: the service to hand twistd, told twistd's pid file.
        """
        from twisted.application.app import ServerOptions

        parent = getattr(self, "parent", None)
        if isinstance(parent, ServerOptions):
            return PluginService(parent.get("pidfile") or None)
        return PluginService()

    def metrics(self, parent: MultiService) -> None:
        """
        Add to ``parent`` the ``/metrics`` service the options ask for, if any.
        """
        description = self.get("metrics")
        if description is None:
            return
        root = Resource()
        root.putChild(b"metrics", metrics.resource())
        site = HTTPSite(root)
        site.service_name = "metrics"
        listening_service([description], site).setServiceParent(parent)

    def wiretap(self, parent: MultiService) -> Wiretap | None:
        """
        :return: the wiretap the options ask for, if any, closed when
            ``parent`` stops.
        """
        if self["wiretap"] is None:
            return None
        tap = Wiretap(self["wiretap"], self["wiretap-max-bytes"])
        _TapService(tap).setServiceParent(parent)
        return tap


class ServiceOptions(workers.WorkerOptions, DebugOptions, LimitOptions):
    """
    Options for a plugin that runs one service: a repeatable ``--listen``.

    Subclasses set :attr:`default_listen`, and :attr:`factory_class`: the
    service's factory, which takes ``limits=``.
    """

    #: The endpoint string ``--listen`` defaults to.
    default_listen: str = ""
    #: The service's factory class, called with ``limits=`` and the
    #: service's other arguments.
    factory_class: type

    @classmethod
    def make_factory(cls, options: usage.Options, **arguments: Any) -> Any:
        """
        :param options: the parsed options (the plugin's own, or
            ``twistd netlab``'s).
        :param arguments: the limits and, as the plugin takes them, the
            allowed origins and bearer-token protection.
        :return: the factory to listen with; by default
            :attr:`factory_class` called with ``arguments``. Plugins that
            serve a user's application override this.
        """
        return cls.factory_class(**arguments)

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self.docs["listen"] = (
            "Listen on this Twisted server endpoint string (repeatable). "
            f"[default: {self.default_listen}]"
        )

    def opt_listen(self, description: str) -> None:
        """
        Listen on this Twisted server endpoint string (repeatable).
        """
        self["listen"].append(check_endpoint(description))

    def postOptions(self) -> None:
        super().postOptions()
        if not self["listen"]:
            self["listen"] = [self.default_listen]
        self.check_workers(self["listen"])


class BrokerOptions(usage.Options):
    """
    ``--broker redis://HOST:PORT/DB``: publish/subscribe across processes
    and hosts (see :mod:`netlab.pubsub`), with the password and the CA in
    files.
    """

    optParameters = [
        [
            "broker",
            None,
            None,
            "Bridge publish/subscribe to the Redis at this URL: "
            "redis://HOST[:PORT][/DB], or rediss:// over TLS. "
            "[default: none, delivery within the process]",
        ],
        [
            "broker-password-file",
            None,
            None,
            "The broker's password: the first line of this file.",
        ],
        [
            "broker-ca",
            None,
            None,
            "Verify a rediss:// broker with the CA certificates in this PEM "
            "file instead of the system's.",
        ],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        self["broker_config"] = None
        url = self["broker"]
        if url is None:
            for name in ("broker-password-file", "broker-ca"):
                if self[name]:
                    raise usage.UsageError(f"--{name} needs --broker")
            return
        try:
            address = pubsub.BrokerAddress.parse(url)
            pubsub.check_client()
            password = None
            if self["broker-password-file"]:
                password = pubsub.read_password(self["broker-password-file"])
        except ValueError as error:
            raise usage.UsageError(f"--broker: {error}") from None
        client_tls = None
        if self["broker-ca"]:
            if not address.tls:
                raise usage.UsageError("--broker-ca needs a rediss:// broker")
            try:
                client_tls = ClientTLS(cacert=self["broker-ca"])
            except Exception as error:
                raise usage.UsageError(f"--broker-ca: {error}") from None
        self["broker_config"] = {
            "address": address,
            "password": password,
            "tls": client_tls,
        }

    def broker(self, parent: MultiService, reactor: Any) -> None:
        """
        Add to ``parent`` the bridge to the broker the options name, if
        any, unless this process is a ``--workers`` supervisor, which serves
        nothing (each worker connects on its own).
        """
        config = self.get("broker_config")
        if config is None or workers.supervising(reactor):
            return
        pubsub.BrokerService(pubsub.Broker(**config)).setServiceParent(parent)


class OriginOptions(usage.Options):
    """
    ``--allowed-origin``, for plugins that serve WebSocket to browsers.
    """

    def __init__(self) -> None:
        super().__init__()
        self["allowed_origins"] = []
        self.docs["allowed-origin"] = (
            "A browser origin (http://host:port) that may open WebSockets, "
            "besides the page's own (repeatable)."
        )

    def opt_allowed_origin(self, origin: str) -> None:
        """
        A browser origin that may open WebSockets (repeatable).
        """
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise usage.UsageError(
                f"bad origin {origin!r}: expected http://HOST[:PORT] or https://..."
            )
        self["allowed_origins"].append(origin)


class AuthOptions(usage.Options):
    """
    Bearer tokens (JWT) for plugins that serve HTTP or WebSocket: the paths
    to protect, and the keys that tokens are checked with.
    """

    optParameters = [
        [
            "jwt-secret",
            None,
            None,
            "Check tokens (HS256) with the secret in this file.",
        ],
        [
            "jwt-public-key",
            None,
            None,
            "Check tokens with the public key (PEM: RSA, EC or Ed25519) in this file.",
        ],
        [
            "jwks-url",
            None,
            None,
            "Check tokens with the keys an OAuth 2 / OpenID provider publishes here.",
        ],
        ["jwt-audience", None, None, "The aud that tokens must name."],
        ["jwt-issuer", None, None, "The iss that tokens must have."],
        [
            "jwt-leeway",
            None,
            auth.DEFAULT_LEEWAY,
            "Seconds of clock skew allowed for exp and nbf.",
            float,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["protect"] = []
        self["protection"] = None
        self.docs["protect"] = (
            "Ask for a bearer token on this path and below it (repeatable; / for "
            f"all). {', '.join(auth.OPEN_PATHS)} stays open."
        )

    def opt_protect(self, path: str) -> None:
        """
        Ask for a bearer token on this path and below it (repeatable).
        """
        if not path.startswith("/"):
            raise usage.UsageError(f"--protect {path}: a path starts with /")
        if path.rstrip("/") in auth.OPEN_PATHS:
            raise usage.UsageError(f"--protect {path}: health checks stay open")
        self["protect"].append(path)

    def postOptions(self) -> None:
        super().postOptions()
        sources = [n for n in ("jwt-secret", "jwt-public-key", "jwks-url") if self[n]]
        if len(sources) > 1:
            raise usage.UsageError(f"give one of --{' or --'.join(sources)}")
        if not self["protect"]:
            if sources:
                raise usage.UsageError(f"--{sources[0]} needs --protect PATH")
            return
        if not sources:
            raise usage.UsageError(
                "--protect needs keys: --jwt-secret, --jwt-public-key or --jwks-url"
            )
        try:
            if self["jwt-secret"]:
                keys: Any = auth.secret_from_file(self["jwt-secret"])
            elif self["jwt-public-key"]:
                keys = auth.public_key_from_pem(self["jwt-public-key"])
            else:
                keys = auth.JWKS(self["jwks-url"], context_factory=ClientTLS().policy())
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
        checker = auth.JWTChecker(
            keys,
            audience=self["jwt-audience"],
            issuer=self["jwt-issuer"],
            leeway=self["jwt-leeway"],
        )
        self["protection"] = auth.Protection(checker, tuple(self["protect"]))


def make_factory(options: LimitOptions, plugin: type[ServiceOptions]) -> Any:
    """
    :return: ``plugin``'s factory, held to the limits (and allowed origins,
        and bearer-token protection) that ``options`` describe.
    """
    arguments: dict[str, Any] = {"limits": options.limits()}
    if issubclass(plugin, OriginOptions):
        arguments["allowed_origins"] = options["allowed_origins"]
    if issubclass(plugin, AuthOptions):
        arguments["protection"] = options["protection"]
    return plugin.make_factory(options, **arguments)


def makeService(options: ServiceOptions) -> IService:
    """
    The ``makeService`` of every single-service plugin: listen with the
    service's factory on each ``--listen`` endpoint (in each worker, with
    ``--workers``: see :mod:`netlab.workers`).
    """

    def build(reactor: Any) -> MultiService:
        factory = make_factory(options, type(options))
        service = options.root()
        options.metrics(service)
        tap = options.wiretap(service)
        if isinstance(options, BrokerOptions):
            options.broker(service, reactor)
        listening_service(options["listen"], factory, tap, reactor).setServiceParent(
            service
        )
        return service

    return workers.serve(options, build)
