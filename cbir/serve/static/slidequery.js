// "Similar slides": the shown slide as the query (POST /search/slide). The ranked slides
// are listed as a gallery with their scores; opening one shows it with its matched tiles
// numbered, the query slide shows the same numbers on its own tiles, and the best pair
// is drawn side by side. Loaded before app.js, whose `state`, `$`, `getJSON`,
// `setStatus`, `slideName`, `openSlide` and `clearHitMarks` it uses when called.
"use strict";

const SHOWN_PAIRS = 10;  // matched tile pairs numbered on the slides

async function searchSimilarSlides() {
  const slideId = state.slideId;
  if (slideId == null) return;
  clearHitMarks();
  const blocked = filterKeepsNone();
  if (blocked) { setStatus(blocked, true); return; }
  const mine = ++state.asked;  // as runSearch: only the last search's answer is shown
  state.hits = [];
  state.current = -1;
  state.region = null;  // the slide is the query now, not a region of it
  state.lastRequest = null;  // Export is of a patch search's hits: none on screen now
  $("export").disabled = true;
  showResultMarks();
  $("hits").replaceChildren();
  $("vote").textContent = "";
  setStatus(`searching slides like ${slideName(slideId)}...`);
  const body = { slide: slideId, exclude_query_slide: true };
  const k = Number($("opt-k").value);
  if (k > 0) body.k = k;
  const vote = $("opt-vote").value.trim();
  if (vote) body.vote = vote;
  const slides = slideFilterOption();
  if (slides) body.slides = slides;
  const started = performance.now();
  try {
    const result = await getJSON("/search/slide", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (mine !== state.asked) return;
    state.slideQuery = { query: slideId, result, current: -1 };
    renderSlideHits(result);
    const v = result.vote;
    $("vote").textContent = v && v.value ? `${v.key}: ${v.value} (${v.count} of ${v.of} slides)` : "";
    const ms = Math.round(performance.now() - started);
    const n = result.hits.length;
    setStatus(`${n} slide${n === 1 ? "" : "s"} like ${result.query}, ${ms} ms`);
  } catch (err) {
    if (mine !== state.asked) return;
    state.slideQuery = null;
    setStatus(err.message, true);
  }
  writeURL();
}

function renderSlideHits(result) {
  const list = $("hits");
  list.replaceChildren();
  result.hits.forEach((hit, i) => {
    const li = document.createElement("li");
    li.className = "hit slide-hit";
    li.dataset.rank = hit.rank;
    li.tabIndex = 0;
    const img = document.createElement("img");
    const slide = state.slides.find((s) => s.slide_id === hit.slide_id);
    if (slide) img.src = slideThumbURL(slide);
    img.alt = hit.slide;
    const cap = document.createElement("div");
    cap.className = "caption";
    const labels = Object.entries(hit.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    for (const [text, cls] of [[`#${hit.rank} `, ""], [hit.slide, "slide"],
      [`similarity ${hit.similarity.toFixed(3)}  (${result.method})`, "sim"],
      [`${hit.pairs.length} matched tiles at ${hit.magnification}x`, "sim"], [labels, "labels"]]) {
      if (!text) continue;
      const el = document.createElement(cls === "slide" ? "span" : "div");
      if (cls) el.className = cls;
      el.textContent = text;
      cap.appendChild(el);
    }
    li.append(img, cap);
    li.addEventListener("click", () => openSlideHit(i));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") openSlideHit(i); });
    list.appendChild(li);
  });
}

// Open ranked slide `i`: its matched tiles numbered, the best pair beside each other.
function openSlideHit(i) {
  const sq = state.slideQuery;
  if (!sq || !sq.result.hits.length) return;
  if (!Number.isInteger(i)) i = 0;  // a URL may say anything ("slidehit=abc")
  sq.current = Math.min(Math.max(i, 0), sq.result.hits.length - 1);
  const hit = sq.result.hits[sq.current];
  for (const [n, el] of [...$("hits").querySelectorAll(".hit")].entries()) {
    el.classList.toggle("selected", n === sq.current);
  }
  openSlide(hit.slide_id);
  const pair = hit.pairs[0];
  if (pair) {
    const [qx, qy, qw, qh] = pair.query;
    const [hx, hy, hw, hh] = pair.hit;
    const at = hit.magnification;
    $("query-preview").src = "";
    $("compare-query").src = regionURL({ slide_id: sq.query, x: qx, y: qy, w: qw, h: qh,
      magnification: at }, 320);
    $("compare-hit").src = regionURL({ slide_id: hit.slide_id, x: hx, y: hy, w: hw, h: hh,
      magnification: at }, 320);
    for (const id of ["compare-query", "compare-hit"]) {
      $(id).style.width = "160px";  // both tiles at the same magnification: one size
      $(id).style.height = "160px";
    }
    $("compare-hit-caption").textContent = `best pair: ${hit.slide}, ${at}x`;
    $("compare-scale").textContent = `distance ${pair.distance.toFixed(3)}`;
    $("compare").hidden = false;
  }
}

// On the shown slide, the open slide hit's tile pairs: the hit's tiles on its slide, the
// query's tiles on the query slide, numbered alike (called when a slide is shown).
function addPairMarks(slideId) {
  const sq = state.slideQuery;
  if (!sq || sq.current < 0) return;
  const hit = sq.result.hits[sq.current];
  const side = slideId === hit.slide_id ? "hit" : slideId === sq.query ? "query" : null;
  if (!side) return;
  hit.pairs.slice(0, SHOWN_PAIRS).forEach((pair, n) => {
    const [x, y, w, h] = pair[side];
    const el = document.createElement("div");
    el.className = "pair-marker";
    el.textContent = String(n + 1);
    el.title = `pair ${n + 1}: distance ${pair.distance}`;
    const r = state.viewer.viewport.imageToViewportRectangle(x, y, w, h);
    state.viewer.addOverlay({ element: el, location: r });
  });
}
