// The viewer's scale: the magnification the slide is shown at and a scale bar (when the
// slide states its micrometres per pixel). Loaded before app.js, whose `state` and `$`
// it uses when called.
"use strict";

// A round length (1, 2 or 5 times a power of ten) near `target`.
function roundLength(target) {
  const power = 10 ** Math.floor(Math.log10(target));
  for (const step of [5, 2, 1]) if (step * power <= target) return step * power;
  return power;
}

function updateScale() {
  const v = state.viewer;
  const slide = state.slides.find((s) => s.slide_id === state.slideId);
  if (!v || !slide || v.world.getItemCount() === 0) return;
  // screen px per level-0 px, then the magnification that is on screen
  const zoom = v.world.getItemAt(0).viewportToImageZoom(v.viewport.getZoom(true));
  $("scale-mag").textContent = `${(slide.base_magnification * zoom).toFixed(1)}x on screen`;
  const bar = $("scale-bar");
  if (!slide.mpp) {
    bar.hidden = true;
    return;
  }
  const umPerScreenPx = slide.mpp / zoom;
  const um = roundLength(120 * umPerScreenPx);
  bar.hidden = false;
  bar.style.width = `${Math.round(um / umPerScreenPx)}px`;
  bar.textContent = um >= 1000 ? `${um / 1000} mm` : `${um} \u00b5m`;
}
