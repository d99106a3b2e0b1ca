// Node page: live values over server-sent events, and the phone's position for the location form.
// Plain DOM, no library: the page must stay small on a slow mobile link.
(function () {
  "use strict";
  var root = document.getElementById("node");
  if (!root) return;
  var conn = root.querySelector("[data-live-conn]");
  function set(sel, text) {  // every match: a config's result shows in two places
    root.querySelectorAll(sel).forEach(function (el) {
      if (el.textContent !== text) { el.textContent = text; el.classList.add("changed"); }
    });
  }
  function ago(t) {
    var s = Math.max(0, Math.floor(Date.now() / 1000 - t));
    if (s >= 86400) return Math.floor(s / 86400) + " d ago";
    if (s >= 3600) return Math.floor(s / 3600) + " h ago";
    if (s >= 60) return Math.floor(s / 60) + " min ago";
    return s + " s ago";
  }
  if (window.EventSource) {
    var es = new EventSource(root.dataset.live);
    es.addEventListener("state", function (ev) {
      var s = JSON.parse(ev.data);
      var status = root.querySelector("[data-live-status]");
      status.textContent = s.status; status.className = "state " + s.status;
      if (s.last_seen) set("[data-live-seen]", ago(s.last_seen));
      Object.keys(s.values).forEach(function (k) { set('[data-live-value="' + k + '"]', s.values[k]); });
      Object.keys(s.facts).forEach(function (k) { set('[data-live-fact="' + k + '"]', s.facts[k]); });
      Object.keys(s.commands).forEach(function (k) { set('[data-live-command="' + k + '"]', s.commands[k]); });
      conn.textContent = "live";
    });
    es.addEventListener("gone", function () {  // moved to another organisation, or unshared
      es.close();
      conn.textContent = "no longer visible to you: reload";
    });
    es.onerror = function () { conn.textContent = "reconnecting…"; };
  }
  var geo = root.querySelector("[data-geolocate]");
  if (geo && navigator.geolocation) {
    geo.hidden = false;
    geo.addEventListener("click", function () {
      geo.textContent = "Locating…";
      navigator.geolocation.getCurrentPosition(function (p) {
        var form = document.getElementById("place-form");
        form.lat.value = p.coords.latitude.toFixed(6);
        form.lon.value = p.coords.longitude.toFixed(6);
        geo.textContent = "Position filled in (±" + Math.round(p.coords.accuracy) + " m); save it";
      }, function (e) { geo.textContent = "No position: " + e.message; },
      { enableHighAccuracy: true, timeout: 20000 });
    });
  }
})();
