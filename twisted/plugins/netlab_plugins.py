# The twistd plugins of netlab. Keep this module to ServiceMaker lines: it is
# imported whenever anyone lists plugins, and must not import the reactor.
from twisted.application.service import ServiceMaker

netlab = ServiceMaker(
    "netlab", "netlab.tap.lab", "Every netlab service in one process.", "netlab"
)
netlabEcho = ServiceMaker(
    "netlab-echo", "netlab.tap.echo", "The netlab TCP echo service.", "netlab-echo"
)
netlabGreeting = ServiceMaker(
    "netlab-greeting",
    "netlab.tap.greeting",
    "The netlab TCP greeting service.",
    "netlab-greeting",
)
netlabHTTP = ServiceMaker(
    "netlab-http", "netlab.tap.http", "The netlab HTTP service.", "netlab-http"
)
netlabWS = ServiceMaker(
    "netlab-ws", "netlab.tap.ws", "The netlab WebSocket echo service.", "netlab-ws"
)
netlabTCP = ServiceMaker(
    "netlab-tcp",
    "netlab.tap.tcp",
    "Your own TCP protocol, served by netlab.",
    "netlab-tcp",
)
