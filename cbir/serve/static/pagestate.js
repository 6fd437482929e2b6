// The page's state in its URL, after "#": slide, view (centre and zoom), region query,
// options and the open hit, or a slide query ("Similar slides") and its open slide hit,
// so that a view can be shared and reloaded. An uploaded
// image is not in it (only its results were on the page). Loaded before app.js, whose
// `state`, `$`, `openSlide`, `searchRegion` and `openHit` it uses when called.
"use strict";

// URL key -> control id: text fields (left out at their defaults) and check boxes.
const URL_FIELDS = { k: ["opt-k", "10"], scale: ["opt-scale", "all"],
  min_similarity: ["opt-min-sim", ""], vote: ["opt-vote", ""], label: ["label-filter", ""] };
const URL_FLAGS = { allow_background: "opt-background", orientations: "opt-orientations",
  exclude_query_slide: "opt-exclude" };

function writeURL() {
  if (state.restoring) return;
  const q = new URLSearchParams();
  if (state.slideId != null) q.set("slide", String(state.slideId));
  if (state.region) q.set("region", ["x", "y", "w", "h"].map((k) => state.region[k]).join(","));
  if (state.current >= 0) q.set("hit", String(state.current + 1));
  const sq = state.slideQuery;
  if (sq) q.set("similar", String(sq.query));
  if (sq && sq.current >= 0) q.set("slidehit", String(sq.current + 1));
  for (const [key, [id, fallback]] of Object.entries(URL_FIELDS)) {
    const value = $(id).value.trim();
    if (value && value !== fallback) q.set(key, value);
  }
  for (const [key, id] of Object.entries(URL_FLAGS)) if ($(id).checked) q.set(key, "1");
  const v = state.viewer;
  if (v && v.world.getItemCount() > 0) {
    const c = v.viewport.getCenter();
    q.set("view", `${c.x.toFixed(5)},${c.y.toFixed(5)},${v.viewport.getZoom().toFixed(4)}`);
  }
  history.replaceState(null, "", `#${q}`);
}

// Set the page from its URL; false when the URL names no slide of this bundle.
async function restoreFromURL() {
  const q = new URLSearchParams(location.hash.slice(1));
  const slideId = Number(q.get("slide"));
  if (!q.has("slide") || !state.slides.some((s) => s.slide_id === slideId)) return false;
  state.restoring = true;
  try {
    for (const [key, [id]] of Object.entries(URL_FIELDS)) if (q.has(key)) $(id).value = q.get(key);
    for (const [key, id] of Object.entries(URL_FLAGS)) $(id).checked = q.get(key) === "1";
    openSlide(slideId);
    await state.opened;
    if (q.has("region")) {
      const [x, y, w, h] = q.get("region").split(",").map(Number);
      await searchRegion({ x, y, w, h });
      if (q.has("hit") && state.hits.length) {
        openHit(Number(q.get("hit")) - 1);
        await state.opened;
      }
    }
    const similar = Number(q.get("similar"));
    if (q.has("similar") && state.slides.some((s) => s.slide_id === similar)) {
      if (state.slideId !== similar) {
        openSlide(similar);
        await state.opened;
      }
      await searchSimilarSlides();
      if (q.has("slidehit") && state.slideQuery && state.slideQuery.result.hits.length) {
        openSlideHit(Number(q.get("slidehit")) - 1);
        await state.opened;
      }
    }
    if (q.has("view")) {
      // after the layout settles (the hit beside the query resizes the viewer)
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
      const [x, y, zoom] = q.get("view").split(",").map(Number);
      // a link may say anything: only a finite place near the slide and a sane zoom
      const sane = [x, y, zoom].every(Number.isFinite) && Math.abs(x) <= 10 &&
        Math.abs(y) <= 10 && zoom > 0 && zoom <= 1e4;
      if (sane) {
        state.viewer.viewport.panTo(new OpenSeadragon.Point(x, y), true);
        state.viewer.viewport.zoomTo(zoom, null, true);
      }
    }
    return true;
  } finally {
    state.restoring = false;
    writeURL();
  }
}
