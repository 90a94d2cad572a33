# netlab's endpoint-string plugin: "netlab-ssl:PORT:privateKey=...:certKey=...",
# TLS with netlab's hardened policy, for twistd and anyone's serverFromString.
# Kept import-light: it is imported whenever Twisted looks up an unknown prefix.
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _NetlabTLSParser:
    prefix = "netlab-ssl"

    def parseStreamServer(self, reactor, *args, **kwargs):
        from netlab.tls import server_endpoint

        return server_endpoint(reactor, *args, **kwargs)


netlabTLS = _NetlabTLSParser()
