/* Live progress of backup runs: every element with data-progress-url (a run that is queued or running) polls its
   JSON progress and moves its <progress> bar, counts, status and message; when the run ends the page reloads once,
   so buttons, sets and download links are current. No framework, no third-party code. */
(function () {
  "use strict";

  const INTERVAL_MS = 2000;
  const watched = Array.prototype.slice.call(document.querySelectorAll("[data-progress-url]"));
  if (!watched.length || !window.fetch) {
    return; // the page as rendered is still right; a reload shows the newest state
  }

  function formatBytes(bytes) {
    if (bytes < 1000) return bytes + " B";
    if (bytes < 1e6) return (bytes / 1e3).toFixed(1) + " KB";
    if (bytes < 1e9) return (bytes / 1e6).toFixed(1) + " MB";
    return (bytes / 1e9).toFixed(2) + " GB";
  }

  function field(root, name) {
    return root.querySelector('[data-field="' + name + '"]');
  }

  function show(root, run) {
    const bar = field(root, "bar");
    if (bar) {
      bar.value = run.percent;
      bar.textContent = run.percent + " %";
    }
    const counts = field(root, "counts");
    if (counts) {
      counts.textContent = run.percent + " % · " + run.files_done + " of " + run.files_total + " files · " +
        formatBytes(run.bytes_done) + " of " + formatBytes(run.bytes_total);
    }
    const status = field(root, "status");
    if (status) {
      status.textContent = run.status_display;
      status.className = "status status-run-" + run.status;
    }
    const message = field(root, "message");
    if (message) {
      message.textContent = run.message;
    }
  }

  let reloading = false;

  function poll(root) {
    fetch(root.dataset.progressUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (run) {
        show(root, run);
        if (run.active) {
          window.setTimeout(function () { poll(root); }, INTERVAL_MS);
        } else if (!reloading) {
          reloading = true;
          window.setTimeout(function () { window.location.reload(); }, 500);
        }
      })
      .catch(function () {
        window.setTimeout(function () { poll(root); }, INTERVAL_MS * 3); // the server may be restarting
      });
  }

  watched.forEach(poll);
})();
