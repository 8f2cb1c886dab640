// Live progress of a subscriber import: polls the JSON endpoint until the job ends,
// then reloads once so the page shows the final state (report link, errors).
(function () {
  "use strict";
  var box = document.getElementById("import-progress");
  if (!box) return;
  var url = box.getAttribute("data-url");
  function running(status) { return status === "queued" || status === "running"; }
  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        box.querySelectorAll("[data-field]").forEach(function (el) {
          var key = el.getAttribute("data-field");
          if (key in data) el.textContent = data[key];
        });
        document.getElementById("import-bar").style.width = data.percent + "%";
        box.querySelector("[role=progressbar]").setAttribute("aria-valuenow", data.percent);
        var badge = document.querySelector("#import-status .badge");
        if (badge) { badge.textContent = data.status; badge.className = "badge badge-" + data.status; }
        if (running(data.status)) {
          setTimeout(poll, 1000);
        } else {
          window.location.reload();
        }
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  if (running(box.getAttribute("data-status"))) setTimeout(poll, 500);
})();
