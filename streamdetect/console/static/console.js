// The console page. Everything from a verdict is put on the page with textContent or as an
// attribute value, never as markup; images come only from /evidence/<key> on this server.
"use strict";

const revealed = new Set();  // upload ids whose input this moderator has uncovered
const shown = new Map();  // upload id -> {key, node}: the card on the page and what it was drawn from
let reloadTimer = null;
let histTimer = null;

async function api(path, body) {
  const options = body === undefined ? {credentials: "same-origin"} : {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-Streamdetect-Console": "1"},
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw Object.assign(new Error(data.error || response.statusText), {data});
  return data;
}

function filterQuery() {
  const form = document.getElementById("filters");
  const params = new URLSearchParams();
  for (const name of ["since", "until"]) {
    const value = form.elements[name].value;
    if (value) params.set(name, new Date(value).toISOString());
  }
  for (const name of ["min_score", "max_score", "state"]) {
    const value = form.elements[name].value;
    if (value !== "") params.set(name, value);
  }
  return params.toString();
}

function text(parent, selector, value) {
  parent.querySelector(selector).textContent = value === null || value === undefined ? "" : String(value);
}

// Why the cascade's first stage did not clear the upload (it went on to regeneration).
function firstStage(c) {
  const kind = c.first_stage || "agreement";
  if (c.unchecked) return `${kind}: not checked (${c.unchecked})`;
  const score = kind === "agreement" ? c.agreement : c.margin;
  return `${kind} ${Number(score).toFixed(4)}, exit at ${Number(c.exit_threshold).toFixed(4)}: ${c.exited ? "exited" : "regenerated"}`;
}

function detail(list, name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function evidenceUrl(stored) {
  return stored && stored.key ? "/evidence/" + stored.key.split("/").map(encodeURIComponent).join("/") : "";
}

function render(view) {
  const v = view.verdict;
  const node = document.getElementById("alert-template").content.firstElementChild.cloneNode(true);
  node.dataset.uploadId = v.upload_id;
  node.dataset.state = view.state;
  node.classList.add(view.state);
  const evidence = v.evidence || {};
  const input = node.querySelector(".input-img");
  const regen = node.querySelector(".regen-img");
  if (evidenceUrl(evidence.input)) input.src = evidenceUrl(evidence.input);
  if (evidenceUrl(evidence.regenerated)) regen.src = evidenceUrl(evidence.regenerated);
  if (revealed.has(v.upload_id)) input.classList.remove("blurred");
  node.querySelector(".reveal").addEventListener("click", () => reveal(v.upload_id, input));
  text(node, ".state", view.state);
  text(node, ".upload-id", v.upload_id);
  text(node, ".caption", `“${v.caption}” (caption from ${v.caption_source === "upload" ? "the platform" : "the captioner"})`);
  // The bar spans scores -1..1 as 0..100%; the mark is the threshold.
  node.querySelector(".fill").style.width = `${Math.max(0, Math.min(100, (v.score + 1) * 50))}%`;
  node.querySelector(".mark").style.left = `${Math.max(0, Math.min(100, (v.threshold + 1) * 50))}%`;
  text(node, ".score-line", `score ${v.score.toFixed(4)} < threshold ${v.threshold.toFixed(4)} (${v.threshold_source || "?"})`);
  const tbody = node.querySelector(".scores tbody");
  for (const [encoder, score] of Object.entries(v.scores || {})) {
    const row = tbody.insertRow();
    row.insertCell().textContent = encoder;
    row.insertCell().textContent = Number(score).toFixed(4);
  }
  const details = node.querySelector(".details");
  const models = v.models || {};
  detail(details, "decided", v.decided_at);
  detail(details, "submitted", v.submitted_at || "-");
  detail(details, "captioner", models.captioner || "(platform caption)");
  detail(details, "generator", models.generator);
  detail(details, "encoders", (models.encoders || []).join(", "));
  detail(details, "seed", v.seed);
  if (v.stochastic) detail(details, "draw", `seed ${v.stochastic.seed}, noise ${v.stochastic.noise_scale}`);
  if (v.cascade) detail(details, "first stage", firstStage(v.cascade));
  detail(details, "image", v.image ? (v.image.reference || `inline, ${v.image.size} bytes, sha256 ${v.image.sha256.slice(0, 16)}…`) : "-");
  detail(details, "worker", v.worker);
  if (evidence.error) detail(details, "evidence", evidence.error);
  text(node, ".metadata", JSON.stringify(v.metadata || {}, null, 2));
  const claim = view.claim;
  const label = view.label;
  text(node, ".claim-line", label ? `${label.decision} by ${label.moderator} at ${label.decided_at}${label.note ? ": " + label.note : ""}`
    : claim ? `claimed by ${claim.mine ? "you" : claim.moderator} until ${claim.expires_at}` : "");
  const blocked = Boolean(label) || Boolean(claim && !claim.mine);
  for (const [selector, decision] of [[".confirm", "confirmed"], [".dismiss", "dismissed"]]) {
    const button = node.querySelector(selector);
    button.disabled = blocked;
    button.addEventListener("click", () => decide(node, v.upload_id, decision));
  }
  return node;
}

async function reveal(uploadId, img) {
  img.classList.remove("blurred");
  revealed.add(uploadId);
  try {
    await api("/api/claim", {upload_id: uploadId});
  } catch (error) {
    showError(uploadId, error.message);
  }
  scheduleReload(0);
}

async function decide(node, uploadId, decision) {
  const note = node.querySelector(".note").value;
  try {
    await api("/api/decision", {upload_id: uploadId, decision, note});
  } catch (error) {
    showError(uploadId, error.message);
    return;
  }
  scheduleReload(0);
}

function showError(uploadId, message) {
  for (const node of document.querySelectorAll("article.alert")) {
    if (node.dataset.uploadId === uploadId) node.querySelector(".error").textContent = message;
  }
}

// A reload keeps every card whose alert did not change, so a note being typed, a loaded image
// and the moderator's place on the page survive the periodic refresh; a changed card is drawn
// anew with the note carried over.
function place(view) {
  const id = view.verdict.upload_id;
  const key = JSON.stringify([view.state, view.claim, view.label, revealed.has(id)]);
  const old = shown.get(id);
  if (old && old.key === key) return old.node;
  const node = render(view);
  if (old) node.querySelector(".note").value = old.node.querySelector(".note").value;
  shown.set(id, {key, node});
  return node;
}

async function reload() {
  try {
    const data = await api("/api/alerts?" + filterQuery());
    const list = document.getElementById("alerts");
    list.replaceChildren(...data.alerts.map(place));
    const ids = new Set(data.alerts.map((view) => view.verdict.upload_id));
    for (const id of [...shown.keys()]) if (!ids.has(id)) shown.delete(id);
    list.dataset.count = String(data.alerts.length);
    list.dataset.reloads = String(Number(list.dataset.reloads || 0) + 1);
  } catch (error) {
    setStatus("down", error.message);
  }
}

function scheduleReload(delay = 200) {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(reload, delay);
}

async function drawHistogram() {
  const h = await api("/api/histogram").catch(() => null);
  if (!h) return;
  const svg = document.getElementById("histogram");
  const ns = "http://www.w3.org/2000/svg";
  const width = 420, height = 100, bins = h.clean.length;
  const top = Math.max(1, ...h.clean.map((c, i) => c + h.flagged[i]));
  const shapes = [];
  const x = (score) => ((score - h.low) / (h.high - h.low)) * width;
  for (let i = 0; i < bins; i++) {
    let y = height;
    for (const [count, cls] of [[h.clean[i], "#9e9e9e"], [h.flagged[i], "#d32f2f"]]) {
      if (!count) continue;
      const rect = document.createElementNS(ns, "rect");
      const barHeight = (count / top) * (height - 4);
      y -= barHeight;
      rect.setAttribute("x", String((i * width) / bins));
      rect.setAttribute("y", String(y));
      rect.setAttribute("width", String(width / bins - 1));
      rect.setAttribute("height", String(barHeight));
      rect.setAttribute("fill", cls);
      shapes.push(rect);
    }
  }
  if (h.threshold !== null) {
    const line = document.createElementNS(ns, "line");
    for (const [k, value] of [["x1", x(h.threshold)], ["x2", x(h.threshold)], ["y1", 0], ["y2", height]]) {
      line.setAttribute(k, String(value));
    }
    line.setAttribute("stroke", "#111");
    line.setAttribute("stroke-width", "2");
    line.setAttribute("class", "threshold");
    shapes.push(line);
  }
  for (const [value, anchor] of [[h.low, "start"], [h.high, "end"]]) {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", anchor === "start" ? "0" : String(width));
    label.setAttribute("y", String(height + 14));
    label.setAttribute("text-anchor", anchor);
    label.setAttribute("font-size", "11");
    label.textContent = value.toFixed(2);
    shapes.push(label);
  }
  svg.replaceChildren(...shapes);
  svg.dataset.verdicts = String(h.verdicts);
  document.getElementById("histogram-caption").textContent =
    `${h.verdicts} recent verdicts: clean (grey) and flagged (red); threshold ${h.threshold === null ? "unknown" : h.threshold.toFixed(3)}`;
}

function scheduleHistogram() {
  clearTimeout(histTimer);
  histTimer = setTimeout(drawHistogram, 300);
}

function setStatus(kind, message) {
  const status = document.getElementById("status");
  status.className = "status " + kind;
  status.textContent = message;
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => setStatus("live", "live"));
  source.addEventListener("error", () => setStatus("down", "reconnecting…"));
  source.addEventListener("alert", () => { scheduleReload(); scheduleHistogram(); });
  source.addEventListener("verdict", scheduleHistogram);
}

async function start() {
  const me = await api("/api/me").catch(() => null);
  if (me) text(document, "#whoami", `moderator ${me.moderator}`);
  const form = document.getElementById("filters");
  form.addEventListener("input", () => {
    document.body.classList.toggle("greyscale", form.elements.greyscale.checked);
    scheduleReload(100);
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  connect();
  await reload();
  await drawHistogram();
  setInterval(reload, 5000);  // claims expire without an event
}

start();
