// Mission Control board: live pages without a reload. The server says "change" over server-sent
// events; the page then fetches itself and swaps in the new <main>. When the server cannot be reached,
// the page keeps what it shows under an offline banner and recovers by itself.
(function () {
  "use strict";
  var offline = document.getElementById("offline");
  var live = document.getElementById("live");
  var shown = null;
  var source = null;

  function setOffline(down) {
    offline.hidden = !down;
    document.body.classList.toggle("is-offline", down);
    if (live) live.textContent = down ? "Offline" : "Live";
  }

  function typing() {  // a person filling in a form: do not swap the page under them
    var active = document.activeElement;
    if (active && active.form) return true;
    var fields = document.querySelectorAll("#content textarea, #content input[name=reason]");
    for (var i = 0; i < fields.length; i++) if (fields[i].value && fields[i].value !== fields[i].defaultValue) return true;
    return false;
  }

  function refresh() {
    if (typing()) { setTimeout(refresh, 2000); return Promise.resolve(); }
    return fetch(window.location.href, { headers: { "X-MC-Board": "refresh" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("content");
        var current = document.getElementById("content");
        if (fresh && current) current.replaceWith(document.adoptNode(fresh));
        setOffline(false);
      })
      .catch(function () { setOffline(true); });
  }

  function connect() {
    source = new EventSource("/api/stream");
    source.addEventListener("change", function (event) {
      setOffline(false);
      if (shown === null) { shown = event.data; return; }  // the first one says where we are
      if (event.data !== shown) { shown = event.data; refresh(); }
    });
    source.onopen = function () { if (!offline.hidden) refresh(); };
    source.onerror = function () {
      setOffline(true);
      if (source.readyState === EventSource.CLOSED) { shown = "?"; setTimeout(connect, 2000); }
    };
  }

  var generation = document.getElementById("content");
  shown = generation ? generation.getAttribute("data-generation") : null;
  connect();
})();
