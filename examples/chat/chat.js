"use strict";
// The chat page: log in with a bearer token (pasted, or in the address
// as #token=...), join rooms, talk. Text only: nothing received is ever
// put into the page as HTML.
(function () {
  const $ = function (id) { return document.getElementById(id); };
  const state = $("state"), log = $("log"), room = $("room");
  let socket = null;

  function show(text, kind) {
    const line = document.createElement("div");
    line.className = kind || "";
    line.textContent = text;
    log.appendChild(line);
    log.scrollTop = log.scrollHeight;
  }
  function enable(on) {
    ["join-button", "leave-button", "send-button"].forEach(function (id) {
      $(id).disabled = !on;
    });
  }
  function send(value) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(value));
    }
  }
  function received(event) {
    const said = JSON.parse(event.data);
    if (said.type === "message") {
      show("[" + said.room + "] " + said.from + ": " + said.text, "message");
    } else if (said.type === "joined") {
      said.history.forEach(function (old) {
        show("[" + old.room + "] " + old.from + ": " + old.text, "history");
      });
      show("[" + said.room + "] joined; here: " + said.who.join(", "), "presence");
    } else if (said.type === "presence") {
      show("[" + said.room + "] " + said.who + " " + said.event + "s", "presence");
    } else if (said.type === "error") {
      show("error: " + said.error, "error");
    }
  }
  function connect(token) {
    if (socket) { socket.close(); }
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    // Browsers cannot put a header on a WebSocket: the token goes as a
    // subprotocol, and the server answers with plain "bearer".
    socket = new WebSocket(scheme + location.host + "/ws", ["bearer", "bearer." + token]);
    state.textContent = "connecting";
    socket.addEventListener("open", function () {
      state.textContent = "open";
      enable(true);
    });
    socket.addEventListener("message", received);
    socket.addEventListener("close", function (event) {
      state.textContent = "closed (" + event.code + (event.reason ? ": " + event.reason : "") + ")";
      enable(false);
    });
  }
  $("login").addEventListener("submit", function (event) {
    event.preventDefault();
    connect($("token").value.trim());
  });
  $("join").addEventListener("submit", function (event) {
    event.preventDefault();
    send({ join: room.value.trim() });
  });
  $("leave-button").addEventListener("click", function () {
    send({ leave: room.value.trim() });
  });
  $("send").addEventListener("submit", function (event) {
    event.preventDefault();
    send({ say: $("message").value, room: room.value.trim() });
    $("message").value = "";
  });
  const fromAddress = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (fromAddress) {
    $("token").value = decodeURIComponent(fromAddress[1]);
    connect($("token").value);
  }
})();
