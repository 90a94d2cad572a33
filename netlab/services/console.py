"""
A small page for people: type a message, see the WebSocket echo's reply.

Served by the HTTP service at ``/console`` (the page), ``/console.js`` (its
script, kept apart so that the page's Content-Security-Policy can forbid
inline scripts) and ``/favicon.svg`` (its icon, a file of its own for the
same reason: the policy allows no ``data:`` images). No dependencies, no
build step.

When the connection drops (the server restarts, the network goes away) the
page says so, counts down to its next try and reconnects, waiting one
second, then twice as long after each failure, up to eight seconds. A
message sent while it is down is refused on the page and stays in the box,
to send again.
"""

from __future__ import annotations

from twisted.web.server import Request

from netlab.http import Route

_POLICY = b"default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'"

PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>netlab WebSocket console</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #log { border: 1px solid #ccc; min-height: 10rem; padding: .5rem;
         font-family: monospace; white-space: pre-wrap; overflow-wrap: anywhere; }
  #state { font-weight: bold; }
  .refused { color: #a00; }
</style>
</head>
<body>
<h1>WebSocket console</h1>
<p>Connection: <span id="state" role="status">connecting</span></p>
<form id="send">
  <input id="message" autocomplete="off" placeholder="Type a message" autofocus>
  <button id="button" type="submit">Send</button>
</form>
<div id="log" aria-live="polite"></div>
<script src="/console.js"></script>
</body>
</html>
"""

SCRIPT = b"""\
"use strict";
(function () {
  const state = document.getElementById("state");
  const log = document.getElementById("log");
  const message = document.getElementById("message");
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const url = scheme + location.host + "/ws";
  const RETRY_MAX = 8;  // seconds
  let retry = 1;
  let socket = null;

  function show(text, kind) {
    const line = document.createElement("div");
    line.className = kind;
    line.textContent = text;  // text, never HTML
    log.appendChild(line);
  }

  function connect() {
    state.textContent = "connecting";
    socket = new WebSocket(url);
    socket.addEventListener("open", function () {
      state.textContent = "connected";
      retry = 1;
    });
    socket.addEventListener("message", function (event) {
      show(String(event.data), "received");
    });
    // A failed try ends here too, so every drop and every refusal waits.
    socket.addEventListener("close", function (event) {
      reconnectAfter(retry, event.code);
      // Doubling spares a server that is starting up; the cap keeps the
      // page from waiting long once it is back.
      retry = Math.min(retry * 2, RETRY_MAX);
    });
  }

  function reconnectAfter(seconds, code) {
    if (seconds === 0) {
      connect();
      return;
    }
    state.textContent = "disconnected (" + code + ") \\u2014 reconnecting in " +
      seconds + "s";
    setTimeout(reconnectAfter, 1000, seconds - 1, code);
  }

  document.getElementById("send").addEventListener("submit", function (event) {
    event.preventDefault();
    if (socket.readyState !== WebSocket.OPEN) {
      // Said, not dropped: the text stays in the box for the next try.
      show("not sent, not connected: " + message.value, "refused");
      return;
    }
    socket.send(message.value);
    show("> " + message.value, "sent");
    message.value = "";
  });

  connect();
})();
"""

#: The page's icon: a message going out and its echo coming back.
FAVICON = b"""\
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">
<rect width="16" height="16" rx="3" fill="#2b6cb0"/>
<path d="M3 6h9M9 3l3 3-3 3M13 10H4m3-3-3 3 3 3" stroke="#fff" stroke-width="1.5"
 fill="none"/>
</svg>
"""


class _Static(Route):
    """
    One fixed document, with headers that keep a browser from guessing.
    """

    content_type = b""
    body = b""

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", self.content_type)
        request.setHeader(b"Content-Security-Policy", _POLICY)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"no-cache")
        return self.body


class Console(_Static):
    """
    ``GET /console``: the page.
    """

    content_type = b"text/html; charset=utf-8"
    body = PAGE


class ConsoleScript(_Static):
    """
    ``GET /console.js``: the page's script.
    """

    content_type = b"text/javascript; charset=utf-8"
    body = SCRIPT


class Favicon(_Static):
    """
    ``GET /favicon.svg``: the page's icon.
    """

    content_type = b"image/svg+xml"
    body = FAVICON
