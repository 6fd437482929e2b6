// The marks of a search on the slide viewer: every hit on the shown slide as a numbered
// marker and a dot on the navigator, the hits per slide above the list, and clearing
// them. Loaded before app.js, whose `state`, `$`, `slideName` and `openSlide` it uses
// when called.
"use strict";

// Every hit on the shown slide: a numbered marker (its rectangle, thin; not the open
// one, drawn apart) on the slide, and a dot on the navigator (the slide's overview).
function addMarkers(slideId, open) {
  const nav = state.viewer.navigator;
  for (const hit of state.hits) {
    if (hit.slide_id !== slideId) continue;
    const r = state.viewer.viewport.imageToViewportRectangle(hit.x, hit.y, hit.w, hit.h);
    if (nav) {
      const dot = document.createElement("div");
      dot.className = "nav-marker";
      nav.addOverlay({ element: dot, location: r });
    }
    if (open && hit.x === open.x && hit.y === open.y && hit.w === open.w) continue;
    const el = document.createElement("div");
    el.className = "hit-marker";
    el.textContent = String(hit.rank);
    el.title = `hit ${hit.rank}`;
    state.viewer.addOverlay({ element: el, location: r });
  }
}

function clearOverlays() {
  state.viewer.clearOverlays();
  if (state.viewer.navigator) state.viewer.navigator.clearOverlays();
}

// After a search: the new hits' markers on the shown slide, and the hits per slide.
function showResultMarks() {
  if (state.viewer && state.viewer.world.getItemCount() > 0) {
    clearOverlays();
    addMarkers(state.slideId, null);
  }
  const counts = new Map();
  for (const hit of state.hits) counts.set(hit.slide_id, (counts.get(hit.slide_id) || 0) + 1);
  const line = $("per-slide");
  line.replaceChildren();
  if (counts.size) line.append("hits on: ");
  for (const [slideId, n] of counts) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "per-slide";
    button.dataset.slideId = String(slideId);
    button.textContent = `${slideName(slideId)} (${n})`;
    button.addEventListener("click", () => { clearHitMarks(); openSlide(slideId); });
    line.append(button);
  }
}

// The marks of a hit: its rectangle on the slide and its highlight in the list. They go
// when the query or the slide changes, so that nothing stale is shown.
function clearHitMarks() {
  if (state.viewer) clearOverlays();
  state.overlay = null;
  state.overlayReady = false;
  state.current = -1;
  $("compare").hidden = true;
  for (const el of document.querySelectorAll("#hits .hit.selected")) el.classList.remove("selected");
  if (state.slideId != null) $("viewer-caption").textContent = slideName(state.slideId);
}
