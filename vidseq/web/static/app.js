// vidseq monitor dashboard: camera tiles (MJPEG), score charts (canvas), events with clips and feedback.
// Updates arrive by Server-Sent Events from /api/updates; no build step, no external libraries.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
// the server has set the token as an HttpOnly cookie; keep it out of the address bar, history and bookmarks
if (TOKEN) history.replaceState(null, "", location.pathname);
const CHART_SECONDS = 60;
const tiles = new Map();   // camera name -> {el, scores: [[t, s, anomalous]], threshold}
const events = new Map();  // event id -> li element
let eventsVersion = -1;

function url(path) {
  if (!TOKEN) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

function fmt(v, digits = 1, unit = "") {
  return v === null || v === undefined || Number.isNaN(v) ? "-" : Number(v).toFixed(digits) + unit;
}

function tile(cam) {
  let t = tiles.get(cam.name);
  if (t) return t;
  const el = document.getElementById("tile-template").content.firstElementChild.cloneNode(true);
  el.dataset.camera = cam.name;
  el.querySelector(".cam-name").textContent = cam.name;
  el.querySelector(".live").src = url(`/stream/${encodeURIComponent(cam.name)}.mjpg`);
  document.getElementById("cameras").appendChild(el);
  t = {el, scores: [], threshold: null};
  tiles.set(cam.name, t);
  return t;
}

function updateTile(cam, newScores) {
  const t = tile(cam);
  const q = (sel) => t.el.querySelector(sel);
  const state = q(".state");
  state.textContent = cam.state;
  state.className = "badge state " + cam.state;
  q(".detail").textContent = cam.error || cam.detail || "";
  q(".fps").textContent = fmt(cam.fps, 1);
  q(".dropped").textContent = cam.dropped;
  q(".reconnects").textContent = cam.reconnects;
  q(".latency").textContent = fmt(cam.latency_ms, 0, " ms");
  q(".score").textContent = fmt(cam.score, 2);
  q(".alerts").textContent = cam.alerts;
  t.threshold = cam.threshold;
  for (const s of newScores || []) t.scores.push(s);
  const cutoff = Date.now() / 1000 - CHART_SECONDS - 5;
  while (t.scores.length && t.scores[0][0] < cutoff) t.scores.shift();
  drawChart(q(".chart"), t.scores, t.threshold);
}

function drawChart(canvas, scores, threshold) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const now = Date.now() / 1000, t0 = now - CHART_SECONDS;
  const values = scores.map((s) => s[1]);
  if (threshold !== null && threshold !== undefined) values.push(threshold);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (!values.length) { lo = 0; hi = 1; }
  if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.1; lo -= pad; hi += pad;
  const x = (t) => ((t - t0) / CHART_SECONDS) * (w - 40) + 36;
  const y = (v) => h - 14 - ((v - lo) / (hi - lo)) * (h - 22);
  g.font = "10px system-ui, sans-serif";
  g.fillStyle = "#8b95a3";
  g.fillText(hi.toFixed(2), 2, 12);
  g.fillText(lo.toFixed(2), 2, h - 16);
  g.fillText(`-${CHART_SECONDS} s`, 36, h - 2);
  g.fillText("now", w - 24, h - 2);
  // anomalous stretches shaded
  g.fillStyle = "rgba(229, 72, 77, 0.25)";
  for (let i = 0; i < scores.length; i++) {
    if (!scores[i][2] || scores[i][0] < t0) continue;
    const x0 = x(scores[i][0]), x1 = i + 1 < scores.length ? x(scores[i + 1][0]) : x0 + 2;
    g.fillRect(x0, 4, Math.max(1, x1 - x0), h - 18);
  }
  if (threshold !== null && threshold !== undefined) {
    g.strokeStyle = "#e5484d"; g.setLineDash([5, 4]); g.lineWidth = 1;
    g.beginPath(); g.moveTo(36, y(threshold)); g.lineTo(w - 4, y(threshold)); g.stroke();
    g.setLineDash([]);
    g.fillStyle = "#e5484d"; g.fillText("threshold", w - 56, y(threshold) - 3);
  }
  g.strokeStyle = "#4fa3ff"; g.lineWidth = 1.5;
  g.beginPath();
  let started = false;
  for (const [t, v] of scores) {
    if (t < t0) continue;
    if (!started) { g.moveTo(x(t), y(v)); started = true; } else g.lineTo(x(t), y(v));
  }
  g.stroke();
}

function renderEvent(ev) {
  let li = events.get(ev.id);
  const fresh = !li;
  if (fresh) {
    li = document.getElementById("event-template").content.firstElementChild.cloneNode(true);
    li.dataset.id = ev.id;
    li.classList.add("new");
    setTimeout(() => li.classList.remove("new"), 5000);
    for (const b of li.querySelectorAll("button.fb")) b.addEventListener("click", () => sendFeedback(ev.id, b.dataset.label, li));
    events.set(ev.id, li);
  }
  const q = (sel) => li.querySelector(sel);
  q(".ev-camera").textContent = ev.camera;
  q(".ev-when").textContent = ev.wall_time ? new Date(ev.wall_time.replace(/([+-]\d\d)(\d\d)$/, "$1:$2")).toLocaleTimeString() : "";
  q(".ev-start").textContent = "at " + fmt(ev.start_s, 1, " s");
  q(".ev-duration").textContent = ev.duration_s === null ? "ongoing" : fmt(ev.duration_s, 1, " s");
  q(".ev-peak").textContent = fmt(ev.peak_score, 2);
  q(".ev-cause").textContent = ev.cause ? "· " + ev.cause : "";
  const fb = q(".ev-feedback");
  fb.textContent = ev.feedback ? ev.feedback.replace("_", " ") : "";
  fb.className = "ev-feedback badge " + (ev.feedback || "");
  const img = q(".thumb"), video = q(".clip");
  if (ev.thumbnail_url && !img.getAttribute("src")) img.src = url(ev.thumbnail_url);
  q(".recording").hidden = !ev.recording;
  if (ev.clip_url && !video.getAttribute("src")) {
    if (ev.thumbnail_url) video.poster = url(ev.thumbnail_url);
    video.preload = "auto";
    video.src = url(ev.clip_url);
    video.hidden = false;
    img.hidden = true;
    video.play().catch(() => {});  // muted autoplay; a browser that refuses still shows the controls
  }
  return li;
}

async function refreshEvents() {
  const resp = await fetch(url("/api/events"), {cache: "no-store"});
  if (!resp.ok) return;
  const data = await resp.json();
  const list = document.getElementById("events");
  data.events.forEach((ev, i) => {
    const li = renderEvent(ev);
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  document.getElementById("no-events").hidden = data.events.length > 0;
  document.getElementById("event-count").textContent = data.events.length ? `(${data.events.length})` : "";
}

async function sendFeedback(id, label, li) {
  for (const b of li.querySelectorAll("button.fb")) b.disabled = true;
  try {
    const resp = await fetch(url(`/api/events/${encodeURIComponent(id)}/feedback`), {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({label}),
    });
    if (resp.ok) renderEvent((await resp.json()).event);
  } finally {
    for (const b of li.querySelectorAll("button.fb")) b.disabled = false;
  }
}

function connect() {
  const link = document.getElementById("link");
  const es = new EventSource(url("/api/updates"));
  es.addEventListener("open", () => { link.textContent = "live"; link.className = "badge on"; });
  es.addEventListener("error", () => { link.textContent = "reconnecting"; link.className = "badge off"; });
  es.addEventListener("update", (msg) => {
    const data = JSON.parse(msg.data);
    for (const cam of data.cameras) updateTile(cam, data.scores[cam.name]);
    document.getElementById("clock").textContent = new Date(data.time * 1000).toLocaleTimeString();
    if (data.events_version !== eventsVersion) {
      eventsVersion = data.events_version;
      refreshEvents();
    }
  });
}

async function start() {
  const resp = await fetch(url("/api/status"), {cache: "no-store"});
  if (resp.ok) for (const cam of (await resp.json()).cameras) updateTile(cam, []);
  await refreshEvents();
  connect();
}

start();
