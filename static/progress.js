// Live progress of a send: polls the JSON endpoint until the send ends.
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box) return;
  var url = box.getAttribute("data-url");
  var initial = box.getAttribute("data-status");
  function set(id, value) {
    var el = document.getElementById(id);
    if (el) el.textContent = value;
  }
  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        set("total", data.total);
        set("sent", data.sent);
        set("failed", data.failed);
        set("pending", data.pending);
        set("percent", data.percent);
        document.getElementById("bar-fill").style.width = data.percent + "%";
        box.querySelector("[role=progressbar]").setAttribute("aria-valuenow", data.percent);
        var badge = document.querySelector("#status .badge");
        if (badge) { badge.textContent = data.status; badge.className = "badge badge-" + data.status; }
        box.setAttribute("data-status", data.status);
        if (data.status === "queued" || data.status === "running") {
          setTimeout(poll, 1000);
        } else if (data.error || data.status !== initial) {
          // Paused, cancelled or done: the page shows why and the buttons that now apply.
          window.location.reload();
        }
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  if (box.getAttribute("data-status") === "queued" || box.getAttribute("data-status") === "running") {
    setTimeout(poll, 500);
  }
})();
