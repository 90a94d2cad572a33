"""
A small page for people: type a message, see the WebSocket echo's reply.

Served by the HTTP service at ``/console`` (the page) and ``/console.js`` (its
script, kept apart so that the page's Content-Security-Policy can forbid
inline scripts). No dependencies, no build step.
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
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #log { border: 1px solid #ccc; min-height: 10rem; padding: .5rem;
         font-family: monospace; white-space: pre-wrap; }
  #state { font-weight: bold; }
</style>
</head>
<body>
<h1>WebSocket console</h1>
<p>Connection: <span id="state">connecting</span></p>
<form id="send">
  <input id="message" autocomplete="off" placeholder="Type a message" autofocus>
  <button id="button" type="submit" disabled>Send</button>
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
  const button = document.getElementById("button");
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + "/ws");

  function show(text, kind) {
    const line = document.createElement("div");
    line.className = kind;
    line.textContent = text;  // text, never HTML
    log.appendChild(line);
  }
  socket.addEventListener("open", function () {
    state.textContent = "open";
    button.disabled = false;
  });
  socket.addEventListener("message", function (event) {
    show(String(event.data), "received");
  });
  socket.addEventListener("close", function (event) {
    state.textContent = "closed (" + event.code + ")";
    button.disabled = true;
  });
  document.getElementById("send").addEventListener("submit", function (event) {
    event.preventDefault();
    if (socket.readyState !== WebSocket.OPEN) { return; }
    socket.send(message.value);
    show("> " + message.value, "sent");
    message.value = "";
  });
})();
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
