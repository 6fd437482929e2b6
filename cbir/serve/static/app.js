// cbir web page: search by an uploaded image or a region drawn on a slide, list the
// ranked hits, open a hit's slide in OpenSeadragon with the hit's rectangle drawn over it.
"use strict";

const $ = (id) => document.getElementById(id);

// Page state; exposed as window.cbir for tests and the console.
const state = {
  slides: [],         // GET /slides
  viewer: null,       // OpenSeadragon.Viewer
  slideId: null,      // slide shown in the viewer
  overlay: null,      // {x, y, w, h} level-0 px of the drawn hit rectangle
  overlayReady: false,
  hits: [],           // hits of the last search
  searches: 0,        // searches answered (or refused) so far
  asked: 0,           // searches sent so far: only the last one's answer is shown
  current: -1,        // index in hits of the hit open in the viewer (-1: none)
  region: null,       // {x, y, w, h} of the last region query (null: an image query)
  queryExtent: null,  // {w, h} px at 1x of the last region query (compare.js)
  slideQuery: null,   // {query, result, current} of "Similar slides" (slidequery.js)
  opened: Promise.resolve(),  // settles when the slide asked for last is shown
  restoring: false,   // the page is being set from its URL (pagestate.js)
  drawing: false,
  generation: null,   // the bundle generation the page shows (generation.js)
};
window.cbir = state;

function setStatus(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

function slideName(id) {
  const slide = state.slides.find((s) => s.slide_id === id);
  return slide ? slide.name : `slide ${id}`;
}

function regionURL(hit, maxSide) {
  const q = new URLSearchParams({
    x: hit.x, y: hit.y, w: hit.w, h: hit.h, magnification: hit.magnification,
  });
  if (maxSide) q.set("max_side", maxSide);
  return `/slides/${hit.slide_id}/region.png?${q}`;
}

// -- viewer ---------------------------------------------------------------------------
// The magnifications a region of the shown slide can be searched at.
function fillRegionMagnifications(slideId) {
  const slide = state.slides.find((s) => s.slide_id === slideId);
  const select = $("region-mag");
  const kept = select.value;
  select.replaceChildren(new Option("highest that fits", ""));
  for (const m of slide ? [...slide.magnifications].reverse() : []) {
    select.append(new Option(`${m}x`, String(m)));
  }
  select.value = [...select.options].some((o) => o.value === kept) ? kept : "";
}

function openSlide(slideId, rect) {
  fillRegionMagnifications(slideId);
  state.overlayReady = false;
  state.overlay = rect || null;
  const show = () => {
    clearOverlays();
    if (rect) {
      const r = state.viewer.viewport.imageToViewportRectangle(rect.x, rect.y, rect.w, rect.h);
      const el = document.createElement("div");
      el.className = "hit-overlay";
      el.id = "hit-overlay";
      state.viewer.addOverlay({ element: el, location: r });
      const margin = Math.max(r.width, r.height) * 1.5;
      state.viewer.viewport.fitBounds(
        new OpenSeadragon.Rect(r.x - margin, r.y - margin, r.width + 2 * margin,
                               r.height + 2 * margin), true);
      state.overlayReady = true;
    }
    addMarkers(slideId, rect);  // after the hit: currentOverlays[0] is the hit
    addPairMarks(slideId);  // a slide query's matched tiles (slidequery.js)
  };
  let shown;
  state.opened = new Promise((resolve) => { shown = resolve; });
  const showThen = () => { show(); shown(); writeURL(); };
  if (state.slideId === slideId && state.viewer.world.getItemCount() > 0) {
    showThen();
  } else {
    state.slideId = slideId;
    state.viewer.addOnceHandler("open", showThen);
    state.viewer.addOnceHandler("open-failed", () => shown());
    state.viewer.open(`/slides/${slideId}.dzi`);
  }
  $("slide-select").value = String(slideId);
  $("viewer").dataset.slideId = String(slideId);
  $("viewer-caption").textContent = rect
    ? `${slideName(slideId)}: ${rect.w} x ${rect.h} px at (${rect.x}, ${rect.y})`
    : slideName(slideId);
}

function setupViewer() {
  state.viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "/static/openseadragon/images/",
    showNavigator: true,
    maxZoomPixelRatio: 2,
    preserveImageSizeOnResize: true,  // the strip of the hit beside the query rescales nothing
    gestureSettingsMouse: { clickToZoom: false },
  });
  state.viewer.addHandler("animation-finish", () => writeURL());
  state.viewer.addHandler("resize", () => writeURL());
  state.viewer.addHandler("animation", () => updateScale());
  state.viewer.addHandler("open", () => updateScale());
  // Region drawing: drag on the slide while "Draw a region" is on.
  let start = null;
  let box = null;
  const toImage = (pos) => state.viewer.viewport.viewerElementToImageCoordinates(pos);
  const rectOf = (a, b) => {  // level-0 px, clipped to the slide (a drag may leave it)
    const slide = state.slides.find((s) => s.slide_id === state.slideId);
    const W = slide ? slide.width : Infinity;
    const H = slide ? slide.height : Infinity;
    const clip = (v, top) => Math.min(Math.max(Math.round(v), 0), top);
    const x0 = clip(Math.min(a.x, b.x), W), x1 = clip(Math.max(a.x, b.x), W);
    const y0 = clip(Math.min(a.y, b.y), H), y1 = clip(Math.max(a.y, b.y), H);
    return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
  };
  state.viewer.addHandler("canvas-press", (e) => {
    if (!state.drawing) return;
    e.preventDefaultAction = true;
    start = toImage(e.position);
  });
  state.viewer.addHandler("canvas-drag", (e) => {
    if (!state.drawing || !start) return;
    e.preventDefaultAction = true;
    const r = rectOf(start, toImage(e.position));
    const vr = state.viewer.viewport.imageToViewportRectangle(r.x, r.y, r.w, r.h);
    if (!box) {
      box = document.createElement("div");
      box.className = "draw-overlay";
      state.viewer.addOverlay({ element: box, location: vr });
    } else {
      state.viewer.updateOverlay(box, vr);
    }
  });
  state.viewer.addHandler("canvas-release", (e) => {
    if (!state.drawing || !start) return;
    e.preventDefaultAction = true;
    const r = rectOf(start, toImage(e.position));
    if (box) state.viewer.removeOverlay(box);
    start = null;
    box = null;
    setDrawing(false);
    if (r.w > 8 && r.h > 8) searchRegion(r);
  });
}

function setDrawing(on) {
  state.drawing = on;
  $("viewer").classList.toggle("drawing", on);
  $("draw-toggle").textContent = on ? "Drag on the slide..." : "Draw a region";
  state.viewer.setMouseNavEnabled(true);
}

// -- search ---------------------------------------------------------------------------
// The search options of the controls; unset ones are left out (the server's defaults).
function options() {
  const o = { k: Number($("opt-k").value) || 10, scale: $("opt-scale").value };
  const minSim = $("opt-min-sim").value.trim();
  if (minSim !== "") o.min_similarity = Number(minSim);
  if ($("opt-background").checked) o.allow_background = true;
  if ($("opt-orientations").checked) o.orientations = true;
  const vote = $("opt-vote").value.trim();
  if (vote) o.vote = vote;
  const slides = slideFilterOption();
  if (slides) o.slides = slides;
  return o;
}

async function searchImage(file) {
  const blocked = filterKeepsNone();
  if (blocked) { setStatus(blocked, true); return; }
  state.region = null;  // an uploaded image is not in the page's URL
  state.queryExtent = null;  // its scale is each hit's magnification (compare.js)
  const preview = $("query-preview");
  preview.src = URL.createObjectURL(file);
  const form = new FormData();
  form.append("image", file, file.name);
  for (const [key, value] of Object.entries(options())) {  // slides: comma-separated ids
    form.append(key, Array.isArray(value) ? value.join(",") : String(value));
  }
  await runSearch(`${file.name}`, { method: "POST", body: form });
}

async function searchRegion(r) {
  const blocked = filterKeepsNone();
  if (blocked) { setStatus(blocked, true); return; }
  state.region = r;
  const body = { ...options(), slide: state.slideId, ...r };
  const at = $("region-mag").value;
  if (at) body.magnification = Number(at);
  if ($("opt-exclude").checked) body.exclude_query_slide = true;
  const slide = state.slides.find((s) => s.slide_id === state.slideId);
  state.queryExtent = regionExtent(r, slide);
  $("query-preview").src = regionURL(
    { ...r, slide_id: state.slideId, magnification: slide.base_magnification }, 320);
  await runSearch(`${slideName(state.slideId)} region`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

// The magnification a region query was read at, from its name (slide:x,y,w,h@20x).
function regionMag(result) {
  const m = /@([\d.]+)x$/.exec(result.query || "");
  return m ? m[1] : "?";
}

async function runSearch(label, request) {
  const mine = ++state.asked;  // an answer to an older search is dropped when it comes
  state.slideQuery = null;  // a patch search replaces a slide query's results
  state.lastRequest = request;  // what Export sends again
  $("export").disabled = true;
  setStatus(`searching ${label}...`);
  clearHitMarks();
  $("hits").replaceChildren();
  $("vote").textContent = "";
  const started = performance.now();
  try {
    const result = await getJSON("/search", request);
    if (mine !== state.asked) return;  // a newer search owns the list
    state.hits = result.hits;
    renderHits(result);
    showResultMarks();
    $("export").disabled = result.hits.length === 0;
    const v = result.vote;
    $("vote").textContent = v
      ? `${v.key}: ${v.value ?? "no hit is labelled"}` +
        (v.value ? ` (${v.count} of ${v.of} hits)` : "")
      : "";
    const ms = Math.round(performance.now() - started);
    const few = result.hits.length < (result.k || 0) ? ` (${result.hits.length} of k=${result.k})` : "";
    const at = state.region ? ` (region read at ${result.query_read_at || regionMag(result)}x)` : "";
    setStatus(`${result.hits.length} hits${few} for ${result.query}${at}, ${ms} ms`);
  } catch (err) {
    if (mine !== state.asked) return;
    state.hits = [];
    showResultMarks();
    setStatus(err.message, true);
  } finally {
    state.searches += 1;
    if (mine === state.asked) writeURL();
  }
}

function renderHits(result) {
  const list = $("hits");
  for (const hit of result.hits) {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.rank = hit.rank;
    li.tabIndex = 0;
    const img = document.createElement("img");
    img.src = regionURL(hit, 192);
    img.alt = `hit ${hit.rank}`;
    img.loading = "lazy";
    const cap = document.createElement("div");
    cap.className = "caption";
    const sim = hit.similarity == null ? "" : `similarity ${hit.similarity.toFixed(3)}`;
    const dist = hit.inliers != null ? `${hit.inliers} inliers` : `distance ${hit.distance.toFixed(3)}`;
    cap.innerHTML = "";
    const lines = [
      [`#${hit.rank} `, ""], [hit.slide, "slide"],
      [`${hit.magnification}x  (${hit.x}, ${hit.y})  ${hit.w} x ${hit.h} px`, ""],
      [`${sim}  ${dist}`, "sim"],
    ];
    const labels = Object.entries(hit.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    if (labels) lines.push([labels, "labels"]);
    for (const [text, cls] of lines) {
      const span = document.createElement(cls === "slide" ? "span" : "div");
      if (cls) span.className = cls;
      span.textContent = text;
      cap.appendChild(span);
    }
    li.append(img, cap);
    const index = state.hits.indexOf(hit);
    const open = () => openHit(index);
    li.addEventListener("click", open);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    list.appendChild(li);
  }
  if (result.hits.some((h) => !state.slides.some((s) => s.slide_id === h.slide_id))) {
    checkGeneration();  // a slide the page does not know: the bundle changed
  }
}

// Open hit `i` of the list: selected, shown on its slide, and side by side with the query.
function openHit(i) {
  if (!state.hits.length || !Number.isInteger(i)) return;  // a URL's "hit=abc": no hit
  i = ((i % state.hits.length) + state.hits.length) % state.hits.length;
  const hit = state.hits[i];
  const items = $("hits").querySelectorAll(".hit");
  for (const el of items) el.classList.remove("selected");
  items[i].classList.add("selected");
  items[i].scrollIntoView({ block: "nearest" });
  state.current = i;
  openSlide(hit.slide_id, { x: hit.x, y: hit.y, w: hit.w, h: hit.h });
  showCompare(hit);
  writeURL();
}

// The last search again, answered with its export (a zip) that the browser downloads.
async function exportHits() {
  if (!state.lastRequest) return;
  setStatus("exporting...");
  const response = await fetch("/export", state.lastRequest);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    setStatus(typeof body.detail === "string" ? body.detail : `${response.status}`, true);
    return;
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = "cbir-export.zip";
  document.body.appendChild(link);
  link.click();
  link.remove();
  setStatus("exported: cbir-export.zip");
}

function stepHit(by) {
  const sq = state.slideQuery;
  if (sq && sq.result.hits.length) {  // the ranked slides of "Similar slides"
    const n = sq.result.hits.length;
    openSlideHit(sq.current < 0 ? (by > 0 ? 0 : n - 1) : (sq.current + by + n) % n);
    return;
  }
  openHit(state.current < 0 ? (by > 0 ? 0 : -1) : state.current + by);
}

// -- setup ----------------------------------------------------------------------------
async function init() {
  setupViewer();
  const zone = $("drop-zone");
  $("query-file").addEventListener("change", (e) => {
    if (e.target.files.length) searchImage(e.target.files[0]);
    e.target.value = "";  // picking the same file again (other options) searches again
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) searchImage(e.dataTransfer.files[0]);
  });
  $("draw-toggle").addEventListener("click", () => setDrawing(!state.drawing));
  $("hit-prev").addEventListener("click", () => stepHit(-1));
  $("export").addEventListener("click", () => exportHits());
  $("hit-next").addEventListener("click", () => stepHit(1));
  $("similar-slides").addEventListener("click", () => searchSimilarSlides());
  document.addEventListener("keydown", (e) => {  // n / p: next / previous hit
    if (e.target.closest && e.target.closest("input, select, textarea")) return;
    if (e.key === "n") stepHit(1);
    else if (e.key === "p") stepHit(-1);
  });
  $("slide-select").addEventListener("change", (e) => {
    clearHitMarks();
    openSlide(Number(e.target.value));
  });
  try {
    const [health, slides] = await Promise.all([getJSON("/healthz"), getJSON("/slides")]);
    state.slides = slides;
    showBundle(health);
    watchGeneration(health);
    const mags = [...new Set(slides.flatMap((s) => s.magnifications))].sort((a, b) => a - b);
    for (const value of mags.map((m) => `${m}x`)) {
      $("opt-scale").append(new Option(value, value));
    }
    fillSlideSelect(slides);
    for (const el of document.querySelectorAll(".options input, .options select")) {
      el.addEventListener("change", () => writeURL());
    }
    $("label-filter").addEventListener("input", () => { renderGallery(); writeURL(); });
    if (!(await restoreFromURL()) && slides.length) openSlide(slides[0].slide_id);
    renderGallery();
    document.body.dataset.ready = "1";
  } catch (err) {
    setStatus(err.message, true);
  }
}

init();
