// The draw-to-search page: pointer strokes -> POST /search (QuickDraw strokes JSON or a PNG) after
// each stroke, debounced; a newer query aborts and supersedes an older one (sequence numbers), so
// only the latest answer is shown. Thumbnails are fetched with the bearer token (when the server
// asks for one) and shown as blob: URLs: the token is never put in a URL.
// window.splip holds the hooks the browser tests and the latency benchmark read.
(() => {
  "use strict";
  const DEBOUNCE_MS = 120;  // strokes ending closer together than this make one query
  const SPACE = 256;  // stroke coordinates are kept in a 256 x 256 box, like QuickDraw's
  const THUMBS_KEPT = 400;  // blob URLs of thumbnails kept for re-use across queries

  const $ = (id) => document.getElementById(id);
  const canvas = $("sketch"), pen = canvas.getContext("2d");
  const results = $("results"), state = $("state"), latency = $("latency");
  const strokes = [];  // [{points: [[x, y], ...], width}]
  let current = null, uploaded = null, uploadedBitmap = null;
  let token = null, pendingRetry = null;
  let seq = 0, controller = null, timer = null;
  let withMetadata = false;  // the server serves its store's captions (GET page/config)
  const thumbs = new Map();  // id -> Promise of a blob: URL

  const hooks = window.splip = {
    strokeEnds: [],   // performance.now() at each stroke's end
    timings: [],      // per shown answer: {seq, strokes, gridMs, imagesMs, roundTripMs, serverMs}
    queries: 0,       // requests sent to /search
    lastBody: null,   // the last strokes JSON sent (null for a PNG or a file)
    thumbnailStatus: {},  // id -> HTTP status of its thumbnail request
    busy: false,      // a query is scheduled or in flight
  };

  // ---- drawing -------------------------------------------------------------------------------
  function resize() {
    const rect = canvas.getBoundingClientRect(), ratio = window.devicePixelRatio || 1;
    const side = Math.max(64, Math.round(rect.width * ratio));
    if (canvas.width !== side) { canvas.width = side; canvas.height = side; }
    redraw();
  }

  function point(event) {
    const rect = canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) / rect.width * SPACE, y = (event.clientY - rect.top) / rect.height * SPACE;
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }

  function drawStroke(stroke) {
    const scale = canvas.width / SPACE, pts = stroke.points;
    pen.lineWidth = stroke.width * scale;
    pen.beginPath();
    pen.moveTo(pts[0][0] * scale, pts[0][1] * scale);
    if (pts.length === 1) pen.lineTo(pts[0][0] * scale + 0.01, pts[0][1] * scale);  // a dot
    for (const [x, y] of pts.slice(1)) pen.lineTo(x * scale, y * scale);
    pen.stroke();
  }

  function redraw() {
    pen.fillStyle = "#fff";
    pen.fillRect(0, 0, canvas.width, canvas.height);
    if (uploadedBitmap) {
      const fit = Math.min(canvas.width / uploadedBitmap.width, canvas.height / uploadedBitmap.height);
      const w = uploadedBitmap.width * fit, h = uploadedBitmap.height * fit;
      pen.drawImage(uploadedBitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    }
    pen.strokeStyle = "#000"; pen.lineCap = "round"; pen.lineJoin = "round";
    strokes.forEach(drawStroke);
    $("undo").disabled = !strokes.length && !uploaded;
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    current = {points: [point(event)], width: Number($("brush").value)};
    strokes.push(current);
    redraw();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of (events.length ? events : [event])) current.points.push(point(e));
    redraw();
  });
  const endStroke = () => {
    if (!current) return;
    current = null;
    hooks.strokeEnds.push(performance.now());
    schedule();
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  window.addEventListener("resize", resize);

  // ---- undo / clear / upload -----------------------------------------------------------------
  function undo() {
    if (strokes.length) strokes.pop(); else { uploaded = null; uploadedBitmap = null; }
    redraw();
    if (strokes.length || uploaded) schedule(); else showNothing();
  }

  function clear() {
    strokes.length = 0; uploaded = null; uploadedBitmap = null; $("upload").value = "";
    redraw();
    showNothing();
  }

  function showNothing() {
    clearTimeout(timer);
    seq += 1;  // an answer still in flight is now stale
    if (controller) controller.abort();
    hooks.busy = false;
    results.replaceChildren();
    latency.textContent = "";
    state.textContent = "Draw a sketch: the closest gallery photos appear here.";
  }

  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clear);
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z"
        && !(event.target instanceof HTMLInputElement && event.target.type === "password")) {
      event.preventDefault();
      undo();
    }
  });
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (!file) return;
    strokes.length = 0; uploaded = file;
    try { uploadedBitmap = await createImageBitmap(file); } catch (e) { uploadedBitmap = null; }  // SVG, ndjson
    redraw();
    schedule();
  });
  $("send-as").addEventListener("change", () => { if (strokes.length || uploaded) schedule(); });
  $("k").addEventListener("change", () => { if (strokes.length || uploaded) schedule(); });

  // ---- querying ------------------------------------------------------------------------------
  function authHeaders(extra = {}) {
    return token ? {...extra, Authorization: `Bearer ${token}`} : extra;
  }

  function schedule() {
    clearTimeout(timer);
    hooks.busy = true;
    const strokeEnd = performance.now();
    timer = setTimeout(() => query(strokeEnd), DEBOUNCE_MS);
  }

  async function queryBody() {
    if (uploaded && !strokes.length) return [uploaded, uploaded.type || "application/octet-stream"];
    if ($("send-as").value === "png" || uploaded) {
      return [await new Promise((done) => canvas.toBlob(done, "image/png")), "image/png"];
    }
    const drawing = strokes.map((s) => [s.points.map((p) => p[0]), s.points.map((p) => p[1])]);
    return [JSON.stringify({drawing}), "application/json"];
  }

  async function query(strokeEnd) {
    const mine = ++seq;
    if (controller) controller.abort();
    controller = new AbortController();
    const [body, type] = await queryBody();
    if (mine !== seq) return;
    hooks.lastBody = typeof body === "string" ? body : null;
    hooks.queries += 1;
    state.textContent = "Searching…";
    const sent = performance.now();
    let response, answer;
    try {
      response = await fetch(`search?k=${$("k").value}${withMetadata ? "&metadata=true" : ""}`, {
        method: "POST", body, headers: authHeaders({"Content-Type": type}), signal: controller.signal});
      answer = await response.json();
    } catch (error) {
      if (mine === seq && error.name !== "AbortError") { state.textContent = `Search failed: ${error.message}`; hooks.busy = false; }
      return;
    }
    if (mine !== seq) return;  // a newer drawing superseded this answer
    if (response.status === 401) { askForToken(token ? "That token was refused." : "", () => query(strokeEnd)); return; }
    hooks.busy = false;
    if (!response.ok) { state.textContent = `Search failed (${response.status}): ${answer.detail || answer.error}`; return; }
    const shown = performance.now();
    render(answer.results);
    const timing = {seq: mine, strokes: strokes.length, gridMs: shown - strokeEnd, roundTripMs: shown - sent,
                    serverMs: answer.latency_ms, imagesMs: null};
    hooks.timings.push(timing);
    latency.textContent = `${Math.round(shown - sent)} ms round trip · ${answer.latency_ms.toFixed(1)} ms in the server`;
    state.textContent = `Top ${answer.results.length} of the gallery (index version ${answer.index_version})`;
    imagesOf(results).then(() => { timing.imagesMs = performance.now() - strokeEnd; });
  }

  function imagesOf(container) {
    return Promise.all([...container.querySelectorAll("img")].map((img) => img.dataset.loaded
      ? Promise.resolve() : new Promise((done) => img.addEventListener("settled", done, {once: true}))));
  }

  function render(hits) {
    results.replaceChildren(...hits.map((hit) => {
      const figure = document.createElement("figure"), img = document.createElement("img");
      const caption = hit.metadata?.caption ?? "";
      img.dataset.id = hit.id;
      img.dataset.score = String(hit.score);
      img.alt = caption || hit.id;
      img.title = hit.id;
      thumbnail(hit.id).then((url) => new Promise((done) => {
        img.addEventListener("load", done, {once: true});
        img.addEventListener("error", done, {once: true});
        img.src = url;
      })).catch(() => img.classList.add("missing")).finally(() => {
        img.dataset.loaded = "1";
        img.dispatchEvent(new Event("settled"));
      });
      const text = document.createElement("figcaption");
      text.innerHTML = `<span class="rank"></span><span class="score"></span><span class="id"></span><span class="caption"></span>`;
      text.querySelector(".rank").textContent = `#${hit.rank}`;
      text.querySelector(".score").textContent = hit.score.toFixed(3);
      text.querySelector(".id").textContent = hit.id;
      text.querySelector(".id").title = hit.id;
      text.querySelector(".caption").textContent = caption;
      figure.append(img, text);
      return figure;
    }));
  }

  function thumbnail(id) {
    if (!thumbs.has(id)) {
      const made = fetch(`thumbnail?id=${encodeURIComponent(id)}`, {headers: authHeaders()}).then(async (response) => {
        hooks.thumbnailStatus[id] = response.status;
        if (!response.ok) throw new Error(`thumbnail ${response.status}`);
        return URL.createObjectURL(await response.blob());
      });
      made.catch(() => thumbs.delete(id));  // try again next time
      thumbs.set(id, made);
      while (thumbs.size > THUMBS_KEPT) {
        const [oldest, url] = thumbs.entries().next().value;
        thumbs.delete(oldest);
        url.then((u) => { if (!document.querySelector(`img[src="${u}"]`)) URL.revokeObjectURL(u); }, () => {});
      }
    }
    return thumbs.get(id);
  }

  // ---- the token -----------------------------------------------------------------------------
  function askForToken(message, retry) {
    if (retry) pendingRetry = retry;
    $("auth-message").textContent = message;
    if ($("auth").hidden) { $("auth").hidden = false; $("token").focus(); }
    state.textContent = "Waiting for the access token.";
  }

  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim() || null;
    $("token").value = "";
    $("auth").hidden = true;
    thumbs.clear();
    const retry = pendingRetry;
    pendingRetry = null;
    describeServer();
    if (retry) retry();
  });

  async function describeServer() {
    const response = await fetch("healthz", {headers: authHeaders()});
    if (response.status === 401) { askForToken(token ? "That token was refused." : "", null); return; }
    const [facts, config] = [await response.json(), await (await fetch("page/config", {headers: authHeaders()})).json()];
    withMetadata = Boolean(config.metadata);
    const engine = facts.engine || {}, index = facts.index || {};
    $("served").textContent = `${engine.clip_model || "?"} engine (${engine.backend}, ${engine.precision || "?"}) · `
      + `gallery of ${index.size} photos, ${index.kind} index, version ${index.version}`
      + (withMetadata ? " · store metadata on" : "");
  }

  resize();
  describeServer().catch(() => {});
})();
