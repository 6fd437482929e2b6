// The bundle can change under an open page: `cbir add`, `remove` and `label` publish a
// new generation while the server runs, and a replaced slide gets a new id. Every
// POLL_MS, and when an answer names a slide the page does not know, the page asks
// /healthz; on a new generation it reloads /slides (slide list, gallery, header) and
// reopens the shown slide under its new id when exactly one slide has its name, or says
// it is gone. Loaded before app.js, whose `state`, `$`, `getJSON`, `setStatus`,
// `openSlide`, `clearHitMarks` and `renderGallery` it uses when called.
"use strict";

const POLL_MS = 5000;

function showBundle(health) {
  const slides = `${health.slides} slide${health.slides === 1 ? "" : "s"}`;
  $("bundle-info").textContent = `${health.recipe}, ${slides}, generation ${health.generation}`;
}

function fillSlideSelect(slides) {
  const select = $("slide-select");
  select.replaceChildren(...slides.map((s) => new Option(s.name, String(s.slide_id))));
  if (state.slideId !== null) select.value = String(state.slideId);
}

// A new generation's slides; the shown slide followed by name. Returns a status line.
function followSlides(health, slides) {
  const shown = state.slides.find((s) => s.slide_id === state.slideId);
  const staleHits = state.hits.some((h) => !slides.some((s) => s.slide_id === h.slide_id));
  state.slides = slides;
  state.generation = health.generation;
  showBundle(health);
  fillSlideSelect(slides);
  if (typeof renderGallery === "function") renderGallery();
  let said = `the bundle changed (generation ${health.generation})`;
  if (shown && !slides.some((s) => s.slide_id === shown.slide_id)) {
    const same = slides.filter((s) => s.name === shown.name);
    if (same.length === 1) {
      clearHitMarks();
      openSlide(same[0].slide_id);
      said += `: ${shown.name} is now slide ${same[0].slide_id}`;
    } else {
      said += `: ${shown.name} is no longer in it`;
    }
  }
  if (staleHits) said += "; some hits are of slides it no longer has: search again";
  return said;
}

let checking = null;

// Ask /healthz; on a new generation, reload the slides. Resolves when done.
async function checkGeneration() {
  if (checking) return checking;
  checking = (async () => {
    try {
      const health = await getJSON("/healthz");
      if (state.generation === null || health.generation === state.generation) return;
      const slides = await getJSON("/slides");
      setStatus(followSlides(health, slides), true);
    } catch (err) {
      // a server restarting or gone: the next poll tries again
    } finally {
      checking = null;
    }
  })();
  return checking;
}

function watchGeneration(health) {
  state.generation = health.generation;
  window.setInterval(checkGeneration, POLL_MS);
}
