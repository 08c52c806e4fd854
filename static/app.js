// shmimage's page, enhanced: live updates from /events, upload progress, drag-and-drop and
// paste. All of it is optional: without this script the page's plain forms do the same work.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const status = $("status");
  const slot = $("picture-slot");
  const facts = $("facts");
  const enhancements = $("enhancements");
  const uploadForm = document.querySelector('form[action="/image"]');
  const displayForm = document.querySelector('form[action="/"]');
  if (!status || !slot || !facts || !enhancements || !uploadForm || !displayForm) {
    return;
  }
  const fileInput = $("image");
  const uploadButton = uploadForm.querySelector("button");
  const liveToggle = $("live");
  const liveState = $("live-state");
  const progressBox = $("upload-progress");
  const progressBar = $("upload-bar");

  /** Tells this segment from earlier ones of the same name; image ids are `I-N`. */
  let incarnation = slot.dataset.incarnation;
  /** The EventSource while live mode is on. */
  let events = null;
  /** True while an upload is on its way. */
  let uploading = false;

  // ----- What the page says -----

  function say(kind, text) {
    status.className = "status status-" + kind;
    status.textContent = text;
  }

  /** "1920x1080, RGB 8-bit", as the server writes it. */
  function describe(image) {
    return image.width + "x" + image.height + ", " + image.color;
  }

  /** "127.0.0.1:8080 (pid 4242)". */
  function writer(image) {
    return image.writer_label + " (pid " + image.writer_pid + ")";
  }

  /** "6220800 bytes (5.9 MiB)", as the server writes it. */
  function byteCount(bytes) {
    const units = ["KiB", "MiB", "GiB", "TiB"];
    if (bytes < 1024) {
      return bytes + " bytes";
    }
    let value = bytes / 1024;
    let unit = 0;
    while (value >= 1024 && unit + 1 < units.length) {
      value /= 1024;
      unit += 1;
    }
    return bytes + " bytes (" + value.toFixed(1) + " " + units[unit] + ")";
  }

  function localTime(rfc3339) {
    const at = new Date(rfc3339);
    return Number.isNaN(at.getTime()) ? rfc3339 : at.toLocaleTimeString();
  }

  /** An element with children: strings become text, so nothing is ever parsed as markup. */
  function el(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      element.setAttribute(name, value);
    }
    element.append(...children);
    return element;
  }

  // ----- The image -----

  function imageId(seq) {
    return incarnation + "-" + seq;
  }

  /** Shows image `image` (width, height, seq) of the segment, unless it is shown already. */
  function showImage(image, alt, caption) {
    const id = imageId(image.seq);
    const url = "/image.png?v=" + id;
    let figure = $("picture");
    if (!figure) {
      figure = el(
        "figure",
        { class: "picture", id: "picture" },
        el("a", {}, el("img", {})),
        el("figcaption", {}),
      );
      slot.append(figure);
    }
    const link = figure.querySelector("a");
    const img = figure.querySelector("img");
    figure.querySelector("figcaption").textContent = caption;
    img.alt = alt;
    if (figure.dataset.imageId !== id) {
      figure.dataset.imageId = id;
      img.width = image.width;
      img.height = image.height;
      img.src = url;
      link.href = url;
    }
  }

  function shownImageId() {
    const figure = $("picture");
    return figure ? figure.dataset.imageId : null;
  }

  function removeImage() {
    const figure = $("picture");
    if (figure) {
      figure.remove();
    }
  }

  // ----- The segment's facts -----

  /** Rewrites the facts list from `state`, what `/api/segment` and `/events` send. */
  function renderFacts(state) {
    const rows = [["Shared-memory object", el("code", {}, state.os_name)]];
    const image = state.image;
    if (image) {
      const download = el("a", { href: "/image.png", download: state.name + ".png" }, "Download PNG");
      rows.push(
        ["Image", [describe(image) + " · ", download]],
        ["Pixels", byteCount(image.bytes)],
        ["Sequence number", String(state.seq)],
        [
          "Written",
          [
            el("time", { datetime: image.written_at, title: image.written_at }, localTime(image.written_at)),
            " by " + writer(image),
          ],
        ],
      );
    } else {
      rows.push(["Image", "none yet"]);
    }
    rows.push(["Slot capacity", byteCount(state.slot_capacity)]);
    const servers = el("ul", { class: "servers" });
    for (const server of state.attached) {
      const item = el("li", {}, el("code", {}, server.label), " (pid " + server.pid + ")");
      if (server.is_self) {
        item.append(" ", el("span", { class: "tag" }, "this server"));
      }
      servers.append(item);
    }
    rows.push(["Servers attached", [String(state.attached.length), servers]]);
    facts.replaceChildren(
      ...rows.flatMap(([term, value]) => [
        el("dt", {}, term),
        el("dd", {}, ...(Array.isArray(value) ? value : [value])),
      ]),
    );
  }

  // ----- Live updates -----

  function onSegmentEvent(event) {
    const state = JSON.parse(event.data);
    const id = event.lastEventId || "";
    const dash = id.lastIndexOf("-");
    if (dash > 0) {
      incarnation = id.slice(0, dash);
    }
    renderFacts(state);
    // Which event the page heard last: for people reading the DOM, and for the browser tests.
    enhancements.dataset.lastEvent = id;
    const image = state.image;
    if (!liveToggle.checked || !image || shownImageId() === imageId(image.seq)) {
      return;
    }
    showImage(
      image,
      "Image #" + image.seq + " from shared memory",
      "Image #" + image.seq + ", " + describe(image) + ", written by " + image.writer_label +
        " at " + localTime(image.written_at),
    );
    if (!uploading) {
      say(
        "ok",
        "Live: image #" + image.seq + " (" + describe(image) + ") from shared memory segment \"" +
          state.name + "\", written by " + writer(image) + " at " + localTime(image.written_at),
      );
    }
  }

  function connect() {
    if (events) {
      return;
    }
    events = new EventSource("/events");
    events.addEventListener("state", onSegmentEvent);
    events.addEventListener("image", onSegmentEvent);
    events.addEventListener("open", () => {
      liveState.textContent = "";
      enhancements.classList.remove("disconnected");
    });
    events.addEventListener("error", () => {
      liveState.textContent = "reconnecting…";
      enhancements.classList.add("disconnected");
    });
  }

  function disconnect() {
    if (events) {
      events.close();
      events = null;
    }
    liveState.textContent = "";
    enhancements.classList.remove("disconnected");
  }

  liveToggle.addEventListener("change", () => (liveToggle.checked ? connect() : disconnect()));

  // ----- "Display image from shared memory", in place -----

  /** The server's message from a JSON error answer, or a description of the failure. */
  function errorText(httpStatus, statusText, body) {
    let message = "";
    try {
      message = JSON.parse(body).error || "";
    } catch (_) {
      message = "";
    }
    const prefix = httpStatus ? httpStatus + " " + statusText : "Error";
    return prefix + ": " + (message || "the server gave no reason; its log may say more");
  }

  displayForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const response = await fetch("/api/segment", { headers: { Accept: "application/json" } });
      if (!response.ok) {
        say("error", errorText(response.status, response.statusText, await response.text()));
        return;
      }
      const state = await response.json();
      renderFacts(state);
      const image = state.image;
      if (!image) {
        removeImage();
        say("error", "no image in shared memory segment \"" + state.name + "\" yet: load one first");
        return;
      }
      showImage(image, "Image #" + image.seq + " from shared memory", "Image #" + image.seq + ", " + describe(image));
      say(
        "ok",
        "Displaying image #" + image.seq + " (" + describe(image) + ") from shared memory segment \"" +
          state.name + "\", written by " + writer(image),
      );
    } catch (error) {
      say("error", "cannot reach the server (" + error.message + "): check that it is still running");
    }
  });

  // ----- Uploads with progress: the form, drag-and-drop, paste -----

  function setProgress(loaded, total) {
    progressBox.hidden = false;
    if (total > 0) {
      progressBar.max = total;
      progressBar.value = loaded;
      progressBar.textContent = Math.round((loaded / total) * 100) + "%";
    } else {
      progressBar.removeAttribute("value");
    }
  }

  function finishUpload() {
    uploading = false;
    progressBox.hidden = true;
    uploadButton.disabled = false;
    uploadForm.removeAttribute("aria-busy");
  }

  /** Sends `file` to `POST /image` and shows what happens, step by step. */
  function upload(file) {
    if (uploading) {
      say("error", "an upload is still on its way: wait for it to finish, then try again");
      return;
    }
    uploading = true;
    uploadButton.disabled = true;
    uploadForm.setAttribute("aria-busy", "true");
    const name = file.name || "the pasted image";
    const body = new FormData();
    body.append("image", file, file.name || "pasted.png");

    const request = new XMLHttpRequest();
    request.open("POST", "/image");
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (event) => {
      setProgress(event.loaded, event.lengthComputable ? event.total : 0);
    });
    request.upload.addEventListener("load", () => {
      setProgress(0, 0);
      say("idle", "Decoding " + name + " and writing it to shared memory…");
    });
    request.addEventListener("load", () => {
      finishUpload();
      if (request.status !== 201) {
        say("error", errorText(request.status, request.statusText, request.responseText));
        return;
      }
      const stored = JSON.parse(request.responseText);
      showImage(stored, name + ", image #" + stored.seq, "Image #" + stored.seq + ", " + describe(stored));
      say(
        "ok",
        "Loaded " + name + " (" + describe(stored) + ") into shared memory segment \"" + stored.segment + "\"",
      );
    });
    request.addEventListener("error", () => {
      finishUpload();
      say("error", "the upload of " + name + " did not reach the server: check that it is still running, then try again");
    });
    say("idle", "Uploading " + name + " (" + byteCount(file.size) + ")…");
    setProgress(0, file.size);
    request.send(body);
  }

  uploadForm.addEventListener("submit", (event) => {
    const file = fileInput.files[0];
    if (!file) {
      return;
    }
    event.preventDefault();
    upload(file);
  });

  function carriesFiles(event) {
    return event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
  }

  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (carriesFiles(event)) {
      dragDepth += 1;
      document.body.classList.add("dropping");
    }
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) {
      document.body.classList.remove("dropping");
    }
  });
  document.addEventListener("dragover", (event) => {
    if (carriesFiles(event)) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    }
  });
  document.addEventListener("drop", (event) => {
    dragDepth = 0;
    document.body.classList.remove("dropping");
    if (!carriesFiles(event)) {
      return;
    }
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) {
      upload(file);
    }
  });

  document.addEventListener("paste", (event) => {
    const files = event.clipboardData ? Array.from(event.clipboardData.files) : [];
    const file = files.find((candidate) => candidate.type.startsWith("image/")) || files[0];
    if (file) {
      event.preventDefault();
      upload(file);
    }
  });

  // ----- Start -----

  enhancements.hidden = false;
  document.body.classList.add("enhanced");
  if (liveToggle.checked) {
    connect();
  }
})();
