// mailgate dashboard: local times (UTC on hover) and the overview's live refresh.
// Loaded from /ui/static only (the pages' CSP allows no inline script).
"use strict";

function localTimes(root) {
  root.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (isNaN(when.getTime())) return;
    el.textContent = when.toLocaleString();
    el.title = el.getAttribute("datetime").replace("T", " ").replace("Z", " UTC");
  });
}

function live(box) {
  var status = document.getElementById("live-status");
  function refresh() {
    fetch(box.dataset.src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        box.innerHTML = data.html;
        localTimes(box);
        if (status) status.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
      })
      .catch(function () {
        if (status) status.textContent = "Cannot refresh right now; retrying.";
      });
  }
  setInterval(refresh, 3000);
}

document.addEventListener("DOMContentLoaded", function () {
  localTimes(document);
  var box = document.getElementById("live");
  if (box) live(box);
});
