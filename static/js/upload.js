/* Browser upload of DICOM files, folders and zips: each file is its own POST (three at a time), so every
   file has its own progress bar and result. No framework, no third-party code. */
(function () {
  "use strict";

  const form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) {
    return; // the plain form still posts the chosen files
  }

  const endpoint = form.dataset.endpoint;
  const concurrency = parseInt(form.dataset.concurrency, 10) || 3;
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const fileInput = document.getElementById("upload-files");
  const folderInput = document.getElementById("upload-folder");
  const dropZone = document.getElementById("upload-drop");
  const section = document.getElementById("upload-progress");
  const list = document.getElementById("upload-list");
  const overallBar = document.getElementById("upload-overall-bar");
  const overallText = document.getElementById("upload-overall-text");
  const retryButton = document.getElementById("upload-retry");
  const announcer = document.getElementById("upload-announce");

  const waiting = [];
  const items = [];
  let active = 0;
  let announceEach = true;

  const LABELS = {
    stored: "Stored",
    already_stored: "Already stored (the archive holds this exact file)",
    replaced: "Stored, replacing the older version",
  };

  // With the script running, files go as soon as they are chosen or dropped.
  document.getElementById("upload-submit").hidden = true;
  dropZone.hidden = false;
  if (!("webkitdirectory" in folderInput)) {
    folderInput.closest("div").hidden = true; // the browser cannot choose folders; dropping one may still work
  }

  function formatBytes(bytes) {
    if (bytes < 1000) return bytes + " B";
    if (bytes < 1e6) return (bytes / 1e3).toFixed(1) + " kB";
    if (bytes < 1e9) return (bytes / 1e6).toFixed(1) + " MB";
    return (bytes / 1e9).toFixed(2) + " GB";
  }

  function announce(text) {
    // A fresh text node each time, so screen readers repeat identical messages too.
    announcer.textContent = "";
    window.setTimeout(function () {
      announcer.textContent = text;
    }, 50);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function addFile(file, name) {
    const item = { file: file, name: name || file.name, sent: 0, state: "waiting", status: "" };
    const row = element("li", "upload-row is-waiting");
    const head = element("div", "upload-row-head");
    head.appendChild(element("span", "upload-name", item.name));
    head.appendChild(element("span", "upload-size muted", formatBytes(file.size)));
    const bar = element("progress", "upload-bar");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Transfer of " + item.name);
    const result = element("div", "upload-result", "Waiting");
    row.appendChild(head);
    row.appendChild(bar);
    row.appendChild(result);
    list.appendChild(row);
    item.row = row;
    item.bar = bar;
    item.result = result;
    items.push(item);
    waiting.push(item);
    section.hidden = false;
  }

  function addFiles(fileList, namer, quiet) {
    const files = Array.prototype.slice.call(fileList);
    if (!files.length) return;
    files.forEach(function (file) {
      addFile(file, namer ? namer(file) : file.name);
    });
    announceEach = items.length <= 20; // beyond that, only refusals and the end are announced
    if (!quiet) announce(files.length + (files.length === 1 ? " file" : " files") + " added to the upload.");
    updateOverall();
    pump();
  }

  function pump() {
    while (active < concurrency && waiting.length) {
      send(waiting.shift());
    }
    updateOverall();
    if (!active && !waiting.length && items.length) {
      finished();
    }
  }

  function setState(item, state, text) {
    item.state = state;
    item.row.className = "upload-row is-" + state;
    if (text !== undefined) item.result.textContent = text;
  }

  function send(item) {
    active += 1;
    setState(item, "sending", "Sending…");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", endpoint);
    xhr.setRequestHeader("X-CSRFToken", csrfToken);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.upload.onprogress = function (event) {
      if (event.lengthComputable && event.total) {
        item.sent = Math.min(item.file.size, (event.loaded / event.total) * item.file.size);
        item.bar.value = Math.round((100 * event.loaded) / event.total);
        updateOverall();
      }
    };
    xhr.upload.onload = function () {
      item.bar.value = 100;
      setState(item, "checking", /\.zip$/i.test(item.name) ? "Sent; unpacking and checking…" : "Sent; checking…");
    };
    xhr.onload = function () {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (error) {
        body = null;
      }
      if (!body || !body.status) {
        // Not our answer: a proxy's limit, a server error, a login page.
        body = {
          status: xhr.status >= 500 ? "error" : "refused",
          reason: xhr.status === 413 ? "The file is larger than the server accepts (HTTP 413)." : "The server answered HTTP " + xhr.status + ".",
        };
      }
      done(item, body);
    };
    xhr.onerror = function () {
      done(item, { status: "error", reason: "The connection failed before the archive answered. Nothing is lost: retry." });
    };
    xhr.onabort = xhr.onerror;
    const data = new FormData();
    data.append("name", item.name);
    data.append("file", item.file, item.file.name);
    xhr.send(data);
  }

  function done(item, body) {
    active -= 1;
    item.sent = item.file.size;
    item.bar.value = 100;
    item.status = body.status;
    item.body = body;
    item.result.textContent = "";
    const ok = body.status === "stored" || body.status === "already_stored" || body.status === "replaced";
    setState(item, ok ? "done" : body.status === "error" ? "error" : "refused");
    if (body.kind === "zip" && body.summary) {
      item.result.appendChild(element("span", "upload-summary", "Zip unpacked — " + body.summary + "."));
      if (body.refused && body.refused.length) {
        const refused = element("ul", "upload-refused");
        body.refused.forEach(function (entry) {
          refused.appendChild(element("li", "", entry.name + ": refused. " + entry.reason));
        });
        if (body.refused_not_listed) {
          refused.appendChild(element("li", "", "… and " + body.refused_not_listed + " more refused."));
        }
        item.result.appendChild(refused);
      }
      if (!ok || announceEach || (body.counts && body.counts.refused)) announce(item.name + ": " + body.summary + ".");
    } else if (ok) {
      item.result.textContent = LABELS[body.status];
      if (announceEach) announce(item.name + ": " + LABELS[body.status] + ".");
    } else {
      const prefix = body.status === "error" ? "Not sent: " : "Refused: ";
      item.result.textContent = prefix + (body.reason || "no reason given.");
      announce(item.name + ": " + item.result.textContent);
    }
    pump();
  }

  function counts() {
    const c = { total: items.length, done: 0, stored: 0, already_stored: 0, refused: 0, error: 0 };
    items.forEach(function (item) {
      if (!item.status) return;
      c.done += 1;
      if (item.body && item.body.kind === "zip" && item.body.counts) {
        c.stored += item.body.counts.stored + item.body.counts.replaced;
        c.already_stored += item.body.counts.already_stored;
        c.refused += item.body.counts.refused;
      } else if (item.status === "stored" || item.status === "replaced") {
        c.stored += 1;
      } else if (item.status in c) {
        c[item.status] += 1;
      }
    });
    return c;
  }

  function updateOverall() {
    let total = 0;
    let sent = 0;
    items.forEach(function (item) {
      total += item.file.size;
      sent += item.sent;
    });
    overallBar.value = total ? Math.round((100 * sent) / total) : 0;
    const c = counts();
    let text = c.done + " of " + c.total + " files done, " + formatBytes(sent) + " of " + formatBytes(total) + " sent";
    if (c.done) {
      text += " — " + c.stored + " stored, " + c.already_stored + " already stored, " + c.refused + " refused";
      if (c.error) text += ", " + c.error + " not sent";
    }
    overallText.textContent = text + ".";
  }

  function finished() {
    const c = counts();
    retryButton.hidden = !c.error;
    document.getElementById("upload-done").hidden = !(c.stored || c.already_stored);
    let text = "Upload finished: " + c.stored + " stored, " + c.already_stored + " already stored, " + c.refused + " refused";
    if (c.error) text += ", " + c.error + " not sent (use Retry failed transfers)";
    announce(text + ".");
  }

  retryButton.addEventListener("click", function () {
    items.forEach(function (item) {
      if (item.status === "error") {
        item.status = "";
        item.sent = 0;
        item.bar.value = 0;
        setState(item, "waiting", "Waiting");
        waiting.push(item);
      }
    });
    retryButton.hidden = true;
    pump();
  });

  fileInput.addEventListener("change", function () {
    addFiles(fileInput.files);
    fileInput.value = "";
  });

  folderInput.addEventListener("change", function () {
    addFiles(folderInput.files, function (file) {
      return file.webkitRelativePath || file.name;
    });
    folderInput.value = "";
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault(); // files were sent as they were chosen
  });

  // The drop zone is a button: Enter, Space or a click open the file chooser.
  dropZone.addEventListener("click", function () {
    fileInput.click();
  });

  ["dragenter", "dragover"].forEach(function (type) {
    dropZone.addEventListener(type, function (event) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      dropZone.classList.add("is-over");
    });
  });
  ["dragleave", "dragend"].forEach(function (type) {
    dropZone.addEventListener(type, function () {
      dropZone.classList.remove("is-over");
    });
  });

  // Dropped folders are walked through the File and Directory Entries API; plain files need no walk.
  function walk(entry) {
    if (entry.isFile) {
      entry.file(
        function (file) {
          addFiles(
            [file],
            function () {
              return entry.fullPath.replace(/^\//, "");
            },
            true
          );
        },
        function () {
          announce(entry.fullPath + " could not be read by the browser.");
        }
      );
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      const readBatch = function () {
        // readEntries answers in batches (about 100 in Chrome) until it answers none.
        reader.readEntries(function (batch) {
          if (!batch.length) return;
          batch.forEach(walk);
          readBatch();
        });
      };
      readBatch();
    }
  }

  dropZone.addEventListener("drop", function (event) {
    event.preventDefault();
    dropZone.classList.remove("is-over");
    const transfer = event.dataTransfer;
    const dataItems = transfer.items ? Array.prototype.slice.call(transfer.items) : [];
    // Entries must be taken now: the items are emptied once this handler returns.
    const entries = dataItems
      .filter(function (item) {
        return item.kind === "file" && typeof item.webkitGetAsEntry === "function";
      })
      .map(function (item) {
        return item.webkitGetAsEntry();
      })
      .filter(Boolean);
    if (entries.length) {
      announce("Adding the dropped files and folders to the upload.");
      entries.forEach(walk);
    } else {
      addFiles(transfer.files); // no entries (older browsers): plain files only
    }
  });

  // A file dropped beside the zone would make the browser open it and leave the page.
  ["dragover", "drop"].forEach(function (type) {
    window.addEventListener(type, function (event) {
      if (!dropZone.contains(event.target)) event.preventDefault();
    });
  });

  window.addEventListener("beforeunload", function (event) {
    if (active || waiting.length) {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  // Files chosen before this script ran (a fast hand on a slow page) are sent too.
  if (fileInput.files && fileInput.files.length) {
    fileInput.dispatchEvent(new Event("change"));
  }
  if (folderInput.files && folderInput.files.length) {
    folderInput.dispatchEvent(new Event("change"));
  }
  form.dataset.ready = "true";
})();
