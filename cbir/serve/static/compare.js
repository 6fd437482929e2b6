// The query beside the open hit, both drawn at the same scale: a micrometre of tissue is
// as long on screen in the query as in the hit, so sizes and textures compare by eye.
// Loaded before app.js, whose `state` and `$` it uses when called.
"use strict";

const COMPARE_BOX = 160;  // CSS px: the larger of the two images fills this side

// The query's extent in px at 1x (level-0 px / base magnification), or null for an
// uploaded image, whose scale is the magnification each hit matched it at.
function regionExtent(r, slide) {
  return { w: r.w / slide.base_magnification, h: r.h / slide.base_magnification };
}

// Extents at 1x of the query and of `hit`: {query: {w, h}, hit: {w, h}}.
function compareExtents(hit, preview) {
  const slide = state.slides.find((s) => s.slide_id === hit.slide_id);
  const base = slide ? slide.base_magnification : hit.magnification;
  const hitExtent = { w: hit.w / base, h: hit.h / base };
  // a preview the browser cannot show (a TIFF upload): drawn at the hit's extent
  const shown = preview.naturalWidth > 0;
  const query = state.queryExtent || (shown ? {
    w: preview.naturalWidth / hit.magnification, h: preview.naturalHeight / hit.magnification,
  } : hitExtent);
  return { query, hit: hitExtent };
}

function sizeImage(img, extent, scale) {
  img.style.width = `${Math.max(1, Math.round(extent.w * scale))}px`;
  img.style.height = `${Math.max(1, Math.round(extent.h * scale))}px`;
}

// Show `hit` beside the query, both scaled by one factor (screen px per px at 1x: the
// magnification on screen, which the caption says).
async function showCompare(hit) {
  const preview = $("query-preview");
  if (!preview.complete) {  // loading: wait for it (a failed one is complete already)
    await new Promise((done) => { preview.onload = done; preview.onerror = done; });
  }
  const ext = compareExtents(hit, preview);
  const scale = COMPARE_BOX / Math.max(ext.query.w, ext.query.h, ext.hit.w, ext.hit.h);
  const hitSide = Math.max(ext.hit.w, ext.hit.h) * hit.magnification;  // px it has there
  const query = $("compare-query");
  const shown = $("compare-hit");
  query.src = preview.src;
  sizeImage(query, ext.query, scale);
  sizeImage(shown, ext.hit, scale);
  // read the hit no larger than it is at its magnification, nor than twice its box
  const side = Math.round(Math.min(hitSide, 2 * Math.max(ext.hit.w, ext.hit.h) * scale));
  shown.src = regionURL(hit, Math.max(16, side));
  $("compare-hit-caption").textContent =
    `hit ${hit.rank} of ${state.hits.length}: ${hit.slide}, ${hit.magnification}x`;
  $("compare-scale").textContent = `both at ${scale.toFixed(1)}x on screen`;
  $("compare").hidden = false;
}
