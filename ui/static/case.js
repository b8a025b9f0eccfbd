// The case view's B-scan viewer: the slider (or the arrow keys) picks the corrected B-scan the
// server draws with its layer surfaces.
"use strict";

const viewer = document.getElementById("b-scan-viewer");
const slider = document.getElementById("frame");
const image = document.getElementById("b-scan");

function show() {
  document.getElementById("frame-number").textContent = slider.value;
  image.src = `${viewer.dataset.url}${slider.value}.png`;
}

slider.addEventListener("input", show);
document.addEventListener("keydown", event => {
  if (event.target.tagName === "INPUT" && event.target !== slider) return;
  if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
  if (event.target === slider) return;  // the slider moves itself on arrow keys
  slider.value = Number(slider.value) + (event.key === "ArrowRight" ? 1 : -1);
  show();
});
