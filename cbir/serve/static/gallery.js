// The slide gallery: every slide with a thumbnail and its labels; a label filter
// (key=value) shows only the slides that carry it and searches only them. Loaded before
// app.js, whose `state`, `$` and `openSlide` it uses when called.
"use strict";

// The slides the label filter lets through (all when it is empty or not key=value).
function filteredSlides() {
  const text = $("label-filter").value.trim();
  const at = text.indexOf("=");
  if (at < 1) return state.slides;
  const key = text.slice(0, at).trim();
  const value = text.slice(at + 1).trim();
  return state.slides.filter((s) => (s.labels || {})[key] === value);
}

// The `slides` search option: the filtered slides' ids, or none when all pass.
function slideFilterOption() {
  const kept = filteredSlides();
  return kept.length === state.slides.length ? null : kept.map((s) => s.slide_id);
}

// Why a search cannot run under the label filter (it keeps no slide), or null.
function filterKeepsNone() {
  if (!state.slides.length || filteredSlides().length) return null;
  return `no slide has the label ${$("label-filter").value.trim()}: clear the filter to search`;
}

// A whole slide's thumbnail (at most 160 px a side).
function slideThumbURL(slide) {
  const side = Math.max(slide.width, slide.height);
  const q = new URLSearchParams({ x: 0, y: 0, w: slide.width, h: slide.height,
    magnification: slide.base_magnification * Math.min(1, 2048 / side), max_side: 160 });
  return `/slides/${slide.slide_id}/region.png?${q}`;
}

function renderGallery() {
  const list = $("gallery");
  list.replaceChildren();
  for (const slide of filteredSlides()) {
    const li = document.createElement("li");
    li.dataset.slideId = String(slide.slide_id);
    li.classList.toggle("current", slide.slide_id === state.slideId);
    const img = document.createElement("img");
    img.src = slideThumbURL(slide);
    img.alt = slide.name;
    img.loading = "lazy";
    const name = document.createElement("div");
    name.textContent = slide.name;
    const labels = document.createElement("div");
    labels.className = "labels";
    labels.textContent = Object.entries(slide.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    li.append(img, name, labels);
    li.addEventListener("click", () => {
      clearHitMarks();
      openSlide(slide.slide_id);
      renderGallery();
    });
    list.appendChild(li);
  }
}
