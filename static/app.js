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

  /** Images whose longer side is shorter are drawn a whole number of times their size. */
  const TINY_SIDE = 64;
  /** The widths `/image.png?width=` answers at (as `src/web/resized.rs` lists them). */
  const WIDTHS = [320, 480, 640, 960, 1280, 1600, 1920, 2560, 3840];

  function imageId(seq) {
    return incarnation + "-" + seq;
  }

  /** The whole factor a tiny image is enlarged by; 1 for any other. */
  function enlargement(width, height) {
    const longer = Math.max(width, height, 1);
    return longer >= TINY_SIDE ? 1 : Math.ceil(TINY_SIDE / longer);
  }

  /** "Image #3, 1x1, RGBA 8-bit, drawn 64 times its size" + `more`. */
  function caption(image, more) {
    const factor = enlargement(image.width, image.height);
    return "Image #" + image.seq + ", " + describe(image) +
      (factor > 1 ? ", drawn " + factor + " times its size" : "") + more;
  }

  /** `srcset` for an image: the widths below its own, and the full image. */
  function sourceSet(url, width) {
    const smaller = WIDTHS.filter((candidate) => candidate < width);
    if (smaller.length === 0) {
      return "";
    }
    return smaller
      .map((candidate) => url + "&width=" + candidate + " " + candidate + "w")
      .concat([url + " " + width + "w"])
      .join(", ");
  }

  /** The figure for the image, made if the page has none yet. */
  function figureElement() {
    let figure = $("picture");
    if (!figure) {
      figure = el(
        "figure",
        { class: "picture", id: "picture" },
        el(
          "figcaption",
          {},
          el("span", { class: "stale-note" }, "Possibly out of date"),
          el("span", { class: "caption-text" }),
          " ",
          el("a", { class: "full-size" }, "Open full size"),
        ),
        el("div", { class: "frame" }, el("a", {})),
      );
      slot.append(figure);
    }
    return figure;
  }

  /** The CSS size `image` (width, height) is drawn at in the figure's frame: fitted inside it,
   *  never enlarged unless tiny. */
  function drawnSize(frame, image) {
    const factor = enlargement(image.width, image.height);
    const width = image.width * factor;
    const height = image.height * factor;
    const box = frame.getBoundingClientRect();
    const scale = Math.min(1, box.width / width, box.height / height);
    return {
      width: Math.max(1, Math.floor(width * scale)),
      height: Math.max(1, Math.floor(height * scale)),
      tiny: factor > 1,
    };
  }

  /** The image the page is fetching now: [id, Image] (a newer one replaces it). */
  let pending = null;

  /**
   * Shows image `image` (width, height, seq) of the segment, unless it is shown already: first
   * a box of its shape saying it is loading (never the previous picture), then the image,
   * fetched at the width it is drawn (`srcset`), once the browser has decoded it.
   */
  function showImage(image, alt, caption) {
    const id = imageId(image.seq);
    const url = "/image.png?v=" + id;
    const figure = figureElement();
    figure.classList.remove("stale");
    const link = figure.querySelector(".frame a");
    figure.querySelector(".full-size").href = url;
    link.href = url;
    if (figure.dataset.imageId === id || (pending && pending[0] === id)) {
      figure.querySelector(".caption-text").textContent = caption;
      const shown = link.querySelector("img");
      if (shown) {
        shown.alt = alt;
      }
      return;
    }
    delete figure.dataset.imageId;
    figure.dataset.loading = id;
    figure.querySelector(".caption-text").textContent =
      "Loading image #" + image.seq + " (" + image.width + "x" + image.height + ")…";
    const size = drawnSize(figure.querySelector(".frame"), image);
    const placeholder = el("div", { class: "placeholder", role: "img", "aria-label": "Loading image #" + image.seq },
      "Loading image #" + image.seq + "…");
    placeholder.dataset.width = image.width;
    placeholder.dataset.height = image.height;
    placeholder.style.width = size.width + "px";
    placeholder.style.height = size.height + "px";
    link.replaceChildren(placeholder);

    const img = new Image();
    pending = [id, img];
    img.alt = alt;
    img.decoding = "async";
    img.width = image.width * enlargement(image.width, image.height);
    img.height = image.height * enlargement(image.width, image.height);
    if (size.tiny) {
      img.className = "tiny";
    }
    const srcset = sourceSet(url, image.width);
    if (srcset) {
      img.sizes = size.width + "px";
      img.srcset = srcset;
    }
    img.src = url;
    const drawn = () => {
      if (!pending || pending[1] !== img) {
        return;
      }
      pending = null;
      link.replaceChildren(img);
      figure.dataset.imageId = id;
      delete figure.dataset.loading;
      figure.querySelector(".caption-text").textContent = caption;
      fitPicture();
      // When the new pixels reached the screen: for people reading the DOM, and for the
      // latency benchmark.
      requestAnimationFrame(() => {
        figure.dataset.drawnAt = String(performance.timeOrigin + performance.now());
      });
    };
    img.decode().then(drawn, () => {
      if (!pending || pending[1] !== img) {
        return;
      }
      pending = null;
      delete figure.dataset.loading;
      placeholder.textContent = "Image #" + image.seq + " could not be loaded";
      say("error", "Image #" + image.seq + " could not be loaded from the server: press \"Display image from shared memory\" to try again");
    });
  }

  function shownImageId() {
    const figure = $("picture");
    return figure ? figure.dataset.imageId || figure.dataset.loading || null : null;
  }

  function removeImage() {
    pending = null;
    const figure = $("picture");
    if (figure) {
      figure.remove();
    }
  }

  /** Marks the shown image as possibly out of date (true) or current (false). */
  function markStale(stale) {
    const figure = $("picture");
    if (figure) {
      figure.classList.toggle("stale", stale);
    }
  }

  /**
   * Fits what the figure shows to its frame again: the loading box's size, and the width the
   * image is drawn at (`sizes`, from which the browser picks a `srcset` candidate and takes the
   * image's intrinsic size). Runs whenever the frame changes size: the window, or a status line
   * of another length.
   */
  function fitPicture() {
    const figure = $("picture");
    const frame = figure && figure.querySelector(".frame");
    if (!frame) {
      return;
    }
    const placeholder = frame.querySelector(".placeholder");
    if (placeholder && placeholder.dataset.width) {
      const size = drawnSize(frame, { width: +placeholder.dataset.width, height: +placeholder.dataset.height });
      placeholder.style.width = size.width + "px";
      placeholder.style.height = size.height + "px";
    }
    const img = frame.querySelector("img");
    if (img && img.srcset) {
      img.sizes = drawnSize(frame, { width: img.width, height: img.height }).width + "px";
    }
  }

  if (window.ResizeObserver) {
    new ResizeObserver(fitPicture).observe(slot);
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

  /** Where this page's server is, for messages: "127.0.0.1:8080". */
  const server = location.host;
  /** True while the page cannot reach its server. */
  let offline = false;
  /** The timer of a reconnection this script schedules itself. */
  let retry = null;

  function liveStatus(state, prefix) {
    const image = state.image;
    say(
      "ok",
      prefix + "image #" + image.seq + " (" + describe(image) + ") from shared memory segment \"" +
        state.name + "\", written by " + writer(image) + " at " + localTime(image.written_at),
    );
  }

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
    const reconnected = offline;
    setOffline(false);
    const image = state.image;
    if (!liveToggle.checked) {
      return;
    }
    if (!image) {
      if (shownImageId()) {
        removeImage();
      }
      if (reconnected || shownImageId() === null) {
        say(
          "idle",
          (reconnected ? "The server is back. " : "") + "Shared memory segment \"" + state.name +
            "\" holds no image now: choose a file and press \"Load image from file\"",
        );
      }
      return;
    }
    if (shownImageId() === imageId(image.seq)) {
      if (reconnected) {
        liveStatus(state, "The server is back. Live: ");
      }
      return;
    }
    if (!uploading) {
      liveStatus(state, (reconnected ? "The server is back. " : "") + "Live: ");
    }
    showImage(
      image,
      "Image #" + image.seq + " from shared memory",
      caption(image, ", written by " + image.writer_label + " at " + localTime(image.written_at)),
    );
  }

  /** Says loudly that the server is out of reach, or that it is back. */
  function setOffline(now) {
    if (now === offline) {
      return;
    }
    offline = now;
    enhancements.classList.toggle("disconnected", now);
    markStale(now);
    if (now) {
      liveState.textContent = "server not reachable";
      say(
        "offline",
        "Cannot reach the server at " + server + ": it may have stopped. " +
          (shownImageId() ? "The image below may be out of date. " : "") +
          (events ? "This page reconnects by itself when the server is back." :
            "Start it again, then press \"Display image from shared memory\"."),
      );
    } else {
      liveState.textContent = "";
    }
  }

  function connect() {
    if (events) {
      return;
    }
    clearTimeout(retry);
    events = new EventSource("/events");
    events.addEventListener("state", onSegmentEvent);
    events.addEventListener("image", onSegmentEvent);
    events.addEventListener("error", () => {
      setOffline(true);
      // The browser retries by itself while the stream is CONNECTING; if it gave up (CLOSED),
      // this page tries again every two seconds.
      if (events && events.readyState === EventSource.CLOSED) {
        events.close();
        events = null;
        retry = setTimeout(connect, 2000);
      }
    });
  }

  function disconnect() {
    clearTimeout(retry);
    if (events) {
      events.close();
      events = null;
    }
    liveState.textContent = "";
    enhancements.classList.remove("disconnected");
  }

  liveToggle.addEventListener("change", () => (liveToggle.checked ? connect() : disconnect()));

  // ----- "Display image from shared memory", in place -----

  /** The server's message from a JSON error answer, if it sent one. */
  function serverMessage(body) {
    try {
      return JSON.parse(body).error || "";
    } catch (_) {
      return "";
    }
  }

  /** `text` with a capital first letter, to stand alone as a sentence. */
  function sentence(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  displayForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    let response;
    try {
      response = await fetch("/api/segment", { headers: { Accept: "application/json" } });
    } catch (_) {
      setOffline(true);
      if (!events) {
        // Without Live nothing will notice the server's return: say so next time it answers.
        offline = true;
      }
      return;
    }
    if (!events) {
      setOffline(false);
    }
    if (!response.ok) {
      const message = serverMessage(await response.text());
      say("error", message ? sentence(message) :
        "The server could not say what the segment holds (it answered " + response.status + "); its log may say more");
      return;
    }
    const state = await response.json();
    renderFacts(state);
    const image = state.image;
    if (!image) {
      removeImage();
      say("error", "No image in shared memory segment \"" + state.name + "\" yet: load one first");
      return;
    }
    showImage(image, "Image #" + image.seq + " from shared memory", caption(image, ""));
    say(
      "ok",
      "Displaying image #" + image.seq + " (" + describe(image) + ") from shared memory segment \"" +
        state.name + "\", written by " + writer(image),
    );
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
      say("error", "An upload is still on its way: wait for it to finish, then try again");
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
        const message = serverMessage(request.responseText);
        say("error", name + " was not loaded: " + (message ||
          "the server refused it without saying why (it answered " + request.status + "); its log may say more"));
        return;
      }
      const stored = JSON.parse(request.responseText);
      showImage(stored, name + ", image #" + stored.seq, caption(stored, ""));
      say(
        "ok",
        "Loaded " + name + " (" + describe(stored) + ") into shared memory segment \"" + stored.segment + "\"",
      );
    });
    request.addEventListener("error", () => {
      finishUpload();
      say("error", name + " was not loaded: it did not reach the server at " + server +
        ", which may have stopped. Start it again, then load the file again");
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
