// Swap in a freshly rendered panel every few seconds; the page keeps its
// scroll position, and says so when it stops getting updates.
(function () {
  "use strict";
  var period = Math.max(1, Number(document.body.dataset.refresh) || 5) * 1000;
  var panel = document.getElementById("panel");
  var live = document.getElementById("live");
  // location.origin carries no user:password, which fetch would refuse.
  var url = location.origin + "/panel";
  function mark(state, text) {
    live.dataset.live = state;
    live.textContent = text;
  }
  function tick() {
    fetch(url, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        panel.innerHTML = html;
        mark("ok", "live · every " + period / 1000 + "s");
      })
      .catch(function (err) {
        mark("stale", "not updating: " + err.message);
      })
      .then(function () { setTimeout(tick, period); });
  }
  mark("waiting", "live · every " + period / 1000 + "s");
  setTimeout(tick, period);
})();
