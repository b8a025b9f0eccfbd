// The tile editor: the en-face tile with the cone mask and uncertainty as overlays; brush and
// eraser paint the mask, Save posts it as a new label version (never overwriting one).
"use strict";

const SCALE = 12;  // screen pixels per tile pixel
const root = document.getElementById("editor");
const canvas = document.getElementById("tile-canvas");
const context = canvas.getContext("2d");
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
// Blind mode: the tile awaits this person's second rating for adjudication; the server sends
// the model's mask, there is no history to show, and Save records the rating instead.
const blind = root.dataset.mode === "blind";
let canEdit = root.dataset.canEdit === "yes";
const state = { tile: null, enface: null, uncertainty: null, mask: null, undo: [],
                painting: false, idempotencyKey: null, dirty: false };

function status(text) { document.getElementById("status").textContent = text; }

// A key per change: a double click or a retried request saves once. getRandomValues, unlike
// randomUUID, works on plain-http pages too.
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, b => b.toString(16).padStart(2, "0")).join("");
}

async function api(url, options = {}) {
  const answer = await fetch(url, { credentials: "same-origin", ...options,
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken, ...(options.headers || {}) } });
  const body = answer.status === 204 ? null : await answer.json();
  if (!answer.ok) throw new Error(body && body.error ? body.error : answer.statusText);
  return { status: answer.status, body };
}

function decodePng(base64) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => {
      const scratch = document.createElement("canvas");
      scratch.width = image.width; scratch.height = image.height;
      const c = scratch.getContext("2d");
      c.drawImage(image, 0, 0);
      const rgba = c.getImageData(0, 0, image.width, image.height).data;
      const grey = new Uint8Array(image.width * image.height);
      for (let i = 0; i < grey.length; i++) grey[i] = rgba[4 * i];
      resolve(grey);
    };
    image.onerror = reject;
    image.src = "data:image/png;base64," + base64;
  });
}

function maskPng() {
  const { width_px: w, height_px: h } = state.tile;
  const scratch = document.createElement("canvas");
  scratch.width = w; scratch.height = h;
  const c = scratch.getContext("2d");
  const pixels = c.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const v = state.mask[i] ? 255 : 0;
    pixels.data.set([v, v, v, 255], 4 * i);
  }
  c.putImageData(pixels, 0, 0);
  return scratch.toDataURL("image/png").split(",")[1];
}

function draw() {
  if (!state.tile) return;
  const { width_px: w, height_px: h } = state.tile;
  const showMask = document.getElementById("show-mask").checked;
  const maskAlpha = document.getElementById("mask-opacity").value / 100;
  const showUncertainty = document.getElementById("show-uncertainty").checked;
  const uncertaintyAlpha = document.getElementById("uncertainty-opacity").value / 100;
  const pixels = context.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    let r = state.enface[i], g = r, b = r;
    if (showUncertainty) {  // magenta, stronger where the model is less sure
      const a = uncertaintyAlpha * state.uncertainty[i] / 255;
      r = r * (1 - a) + 255 * a; g = g * (1 - a); b = b * (1 - a) + 255 * a;
    }
    if (showMask && state.mask[i]) {  // cones in green
      r = r * (1 - maskAlpha); g = g * (1 - maskAlpha) + 255 * maskAlpha; b = b * (1 - maskAlpha);
    }
    pixels.data.set([r, g, b, 255], 4 * i);
  }
  const small = document.createElement("canvas");
  small.width = w; small.height = h;
  small.getContext("2d").putImageData(pixels, 0, 0);
  context.imageSmoothingEnabled = false;
  context.drawImage(small, 0, 0, w * SCALE, h * SCALE);
}

function paintAt(event) {
  const bounds = canvas.getBoundingClientRect();
  const column = Math.floor((event.clientX - bounds.left) * canvas.width / bounds.width / SCALE);
  const row = Math.floor((event.clientY - bounds.top) * canvas.height / bounds.height / SCALE);
  const size = Number(document.getElementById("brush-size").value);
  const value = document.getElementById("tool-eraser").checked ? 0 : 1;
  const { width_px: w, height_px: h } = state.tile;
  const reach = (size - 1) / 2;
  for (let r = Math.ceil(row - reach); r <= Math.floor(row + reach); r++) {
    for (let c = Math.ceil(column - reach); c <= Math.floor(column + reach); c++) {
      if (r >= 0 && r < h && c >= 0 && c < w && (r - row) ** 2 + (c - column) ** 2 <= reach ** 2 + 0.5) {
        state.mask[r * w + c] = value;
      }
    }
  }
  state.dirty = true;
  draw();
}

canvas.addEventListener("pointerdown", event => {
  if (!canEdit || !state.tile) return;
  state.undo.push(state.mask.slice());
  state.painting = true;
  canvas.setPointerCapture(event.pointerId);
  paintAt(event);
});
canvas.addEventListener("pointermove", event => { if (state.painting) paintAt(event); });
canvas.addEventListener("pointerup", () => { state.painting = false; });

function undo() {
  if (state.undo.length) { state.mask = state.undo.pop(); state.dirty = state.undo.length > 0; draw(); }
}

async function saveBlindRating() {
  status("Sending your blind rating…");
  try {
    const { body } = await api(root.dataset.ratingUrl, { method: "POST",
      body: JSON.stringify({ mask_png: maskPng() }) });
    canEdit = false;  // one rating per person; the adjudicator decides from here
    status(`Blind rating recorded. Agreement with the first rater (Dice): ${body.dice.toFixed(3)}.`);
    document.getElementById("diff").textContent = `Dice ${body.dice.toFixed(3)}`;
  } catch (error) { status("Not recorded: " + error.message); }
}

async function save() {
  if (!canEdit || !state.tile) return;
  if (blind) { await saveBlindRating(); return; }
  if (!state.dirty) { status("Nothing changed since the last version."); return; }
  state.idempotencyKey = state.idempotencyKey || newKey();
  status("Saving…");
  try {
    const { body } = await api(root.dataset.saveUrl, { method: "POST",
      headers: { "Idempotency-Key": state.idempotencyKey },
      body: JSON.stringify({ tile_id: state.tile.tile_id, base_version: state.tile.head_version,
                             mask_png: maskPng(), comment: document.getElementById("comment").value }) });
    state.idempotencyKey = null;
    document.getElementById("comment").value = "";
    await load();
    document.getElementById("diff").textContent = body.diff;
    status(`Saved as version ${body.version}.`);
  } catch (error) { status("Not saved: " + error.message); }
}

async function rollback(version) {
  status(`Rolling back to version ${version}…`);
  try {
    const { body } = await api(root.dataset.rollbackUrl, { method: "POST",
      headers: { "Idempotency-Key": newKey() },
      body: JSON.stringify({ tile_id: state.tile.tile_id, target_version: version }) });
    await load();
    document.getElementById("diff").textContent = body.diff;
    status(`Version ${body.version} restores version ${version}.`);
  } catch (error) { status("Not rolled back: " + error.message); }
}

async function showHistory() {
  const { body } = await api(root.dataset.historyUrl);
  const rows = document.querySelector("#history tbody");
  rows.replaceChildren();
  for (const version of body.reverse()) {
    const row = rows.insertRow();
    row.dataset.version = version.version;
    const kind = version.kind === "rollback" ? `rollback to v${version.source_version}` : version.kind;
    for (const text of [`v${version.version}`, version.author, kind, version.version ? version.diff : "",
                        new Date(version.created_at * 1000).toISOString().replace("T", " ").slice(0, 19)]) {
      row.insertCell().textContent = text;
    }
    const cell = row.insertCell();
    if (canEdit && version.version !== state.tile.head_version) {
      const button = document.createElement("button");
      button.textContent = `Roll back to v${version.version}`;
      button.className = "rollback";
      button.addEventListener("click", () => rollback(version.version));
      cell.appendChild(button);
    }
  }
}

async function load() {
  const { body: tile } = await api(root.dataset.tileUrl);
  state.tile = tile;
  [state.enface, state.uncertainty, state.mask] = await Promise.all([
    decodePng(tile.images.enface_png), decodePng(tile.images.uncertainty_png),
    decodePng(tile.images.mask_png)]);
  state.mask = Uint8Array.from(state.mask, v => (v ? 1 : 0));
  state.undo = []; state.dirty = false;
  draw();
  if (blind) { status("Blind rating: the model's mask; paint, then save your rating."); return; }
  await showHistory();
  status(`Version ${tile.head_version}${canEdit ? "; paint, then save" : " (view only)"}.`);
}

for (const id of ["show-mask", "mask-opacity", "show-uncertainty", "uncertainty-opacity"]) {
  document.getElementById(id).addEventListener("input", draw);
}
const sizeInput = document.getElementById("brush-size");
sizeInput.addEventListener("input", () => { document.getElementById("brush-size-value").textContent = sizeInput.value; });
document.getElementById("undo").addEventListener("click", undo);
document.getElementById("save").addEventListener("click", save);
document.addEventListener("keydown", event => {
  if (event.target.tagName === "INPUT" && event.target.type !== "range" && event.target.type !== "checkbox" && event.target.type !== "radio") return;
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && key === "z") { event.preventDefault(); undo(); }
  else if ((event.ctrlKey || event.metaKey) && key === "s") { event.preventDefault(); save(); }
  else if (event.ctrlKey || event.metaKey || event.altKey) return;
  else if (key === "b") document.getElementById("tool-brush").checked = true;
  else if (key === "e") document.getElementById("tool-eraser").checked = true;
  else if (key === "m") { const box = document.getElementById("show-mask"); box.checked = !box.checked; draw(); }
  else if (key === "u") { const box = document.getElementById("show-uncertainty"); box.checked = !box.checked; draw(); }
  else if (key === "[" || key === "]") {
    sizeInput.value = Number(sizeInput.value) + (key === "]" ? 1 : -1);
    sizeInput.dispatchEvent(new Event("input"));
  }
});
load().catch(error => status("Could not load the tile: " + error.message));
