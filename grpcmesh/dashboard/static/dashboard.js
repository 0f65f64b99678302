// grpcmesh dashboard: polls /api/summary every second, keeps the last minutes for the charts.
// Every string from the network goes into the page through textContent (never innerHTML).
"use strict";

const HISTORY_S = 300;  // seconds of points kept for the charts
const COLOURS = ["#58a6ff", "#3fb950", "#d29922", "#bc8cff", "#ff7b72", "#39c5cf", "#f778ba"];
const history = [];  // {t: ms, series: {service: {rps, p99}}}
const colourOf = new Map();
let updates = 0;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function cell(row, text, className) {
  const td = el("td", className, text);
  row.appendChild(td);
  return td;
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "-";
  return Number(value).toLocaleString("en-US", {maximumFractionDigits: digits});
}

function rateClass(success) {
  if (success === null || success === undefined) return "none";
  if (success >= 0.99) return "good";
  if (success >= 0.95) return "warn";
  return "bad";
}

function colour(service) {
  if (!colourOf.has(service)) colourOf.set(service, COLOURS[colourOf.size % COLOURS.length]);
  return colourOf.get(service);
}

function pill(id, text, state) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.className = "pill" + (state ? " " + state : "");
}

function renderHeader(data) {
  const config = data.config;
  pill("config", config ? "config v" + config.version : "config unknown", config ? "" : "bad");
  document.getElementById("config").title = config && config.applied_at
    ? "mesh config version " + config.version + ", applied " + config.applied_at
    : "the mesh config version in force (from the registry)";
  document.body.dataset.configVersion = config ? String(config.version) : "";
  const registry = data.registry || {ok: false, error: "unknown"};
  pill("registry", registry.ok ? "registry up" : "registry unreachable", registry.ok ? "ok" : "bad");
  document.getElementById("registry").title = (registry.addresses || []).join(", ") +
    (registry.error ? ": " + registry.error : "");
  const up = data.sidecars.filter((s) => s.ok).length;
  const all = data.sidecars.length;
  pill("sidecars", up + "/" + all + " sidecars answering", up === all && all > 0 ? "ok" : "bad");
}

function renderServices(data) {
  const body = document.querySelector("#services tbody");
  const rows = [];
  for (const r of data.services) {
    const tr = el("tr");
    tr.dataset.service = r.service;
    tr.dataset.direction = r.direction;
    tr.dataset.calls = String(r.calls);
    tr.dataset.success = r.success === null ? "" : String(r.success);
    tr.dataset.rps = String(r.rps);
    for (const q of ["p50", "p95", "p99"]) {
      tr.dataset[q] = r[q + "_ms"] === null ? "" : String(r[q + "_ms"]);
    }
    const name = cell(tr, "", "name");
    const swatch = el("i", "swatch");
    name.appendChild(swatch);
    name.appendChild(document.createTextNode(r.service));
    const dir = cell(tr, "");
    dir.appendChild(el("span", "tag" + (r.direction === "outbound" ? " out" : ""), r.direction));
    const success = cell(tr, "", "num");
    success.appendChild(el("span", "rate " + rateClass(r.success),
      r.success === null ? "-" : (r.success * 100).toFixed(2) + "%"));
    cell(tr, fmt(r.rps, 2), "num");
    cell(tr, fmt(r.p50_ms, 2), "num");
    cell(tr, fmt(r.p95_ms, 2), "num");
    cell(tr, fmt(r.p99_ms, 2), "num");
    cell(tr, fmt(r.calls, 0), "num");
    cell(tr, r.serving === null ? "-" : r.serving, "num");
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  document.getElementById("services-empty").classList.toggle("hidden", rows.length > 0);
  document.getElementById("services-hint").textContent =
    "last " + data.window_s + " s, added up across the sidecars";
}

function renderEndpoints(data) {
  const section = document.getElementById("endpoints");
  const cards = [];
  for (const [service, info] of Object.entries(data.endpoints)) {
    const card = el("div", "card");
    card.dataset.service = service;
    const h2 = el("h2", "", service);
    h2.appendChild(el("span", "hint", "endpoints · " + (info.balancer || "?") + " · " +
      fmt(info.calls, 0) + " outbound calls in the last " + data.window_s + " s"));
    card.appendChild(h2);
    const table = el("table");
    const head = el("tr");
    for (const [title, cls] of [["endpoint", ""], ["instance", ""], ["health", ""],
      ["state", ""], ["EWMA ms", "num"], ["cost ms", "num"], ["in flight", "num"],
      ["calls", "num"], ["share of calls", ""]]) {
      head.appendChild(el("th", cls, title));
    }
    const thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    const tbody = el("tbody");
    for (const e of info.endpoints) {
      const tr = el("tr", "endpoint");
      tr.dataset.address = e.address;
      tr.dataset.calls = String(e.calls);
      tr.dataset.share = String(e.share);
      tr.dataset.estimate = e.estimate_ms === null ? "" : String(e.estimate_ms);
      tr.dataset.cost = e.cost_ms === null ? "" : String(e.cost_ms);
      tr.dataset.ejected = e.ejected ? "true" : "false";
      cell(tr, e.address, "mono");
      cell(tr, e.instance_id || "-", "mono");
      const health = cell(tr, "");
      health.appendChild(el("span", "tag " + (e.health === "SERVING" ? "ok" : "warn"), e.health));
      const state = cell(tr, "");
      state.appendChild(el("span", "tag " + (e.ejected ? "bad" : "ok"), e.ejected ? "ejected" : "ok"));
      cell(tr, fmt(e.estimate_ms, 2), "num");
      cell(tr, fmt(e.cost_ms, 2), "num");
      cell(tr, fmt(e.in_flight, 0), "num");
      cell(tr, fmt(e.calls, 0), "num");
      const share = cell(tr, "");
      const wrap = el("div", "share");
      const bar = el("div", "bar");
      const fill = el("div");
      fill.style.width = Math.max(0, Math.min(100, e.share * 100)).toFixed(1) + "%";
      bar.appendChild(fill);
      wrap.appendChild(bar);
      wrap.appendChild(el("span", "pct", (e.share * 100).toFixed(1) + "%"));
      share.appendChild(wrap);
      tbody.appendChild(tr);
    }
    table.appendChild(tbody);
    card.appendChild(table);
    cards.push(card);
  }
  section.replaceChildren(...cards);
}

function renderSidecars(data) {
  const list = document.getElementById("sidecar-list");
  const items = data.sidecars.map((s) => {
    const li = el("li", s.ok ? "" : "down");
    li.dataset.admin = s.admin;
    li.dataset.ok = s.ok ? "true" : "false";
    li.appendChild(el("span", "mono", s.admin));
    if (s.ok) li.appendChild(el("span", "hint", s.service || ""));
    else li.appendChild(el("span", "why", "unreachable: " + s.error));
    return li;
  });
  if (items.length === 0) items.push(el("li", "down", "no sidecar to ask"));
  list.replaceChildren(...items);
  document.getElementById("sidecars-hint").textContent = data.not_asked
    ? data.not_asked + " more not asked (--max-sidecars)" : "asked every second";
}

function record(data) {
  const series = {};
  for (const r of data.services) {
    if (r.direction === "outbound") series[r.service] = {rps: r.rps, p99: r.p99_ms};
  }
  const now = Date.now();
  history.push({t: now, series});
  while (history.length && history[0].t < now - HISTORY_S * 1000) history.shift();
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function drawChart(canvas, key) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 46, right = 10, top = 8, bottom = 22;
  const plotW = width - left - right, plotH = height - top - bottom;
  const now = Date.now();
  const services = new Set();
  let max = 0;
  for (const point of history) {
    for (const [service, v] of Object.entries(point.series)) {
      services.add(service);
      if (v[key] !== null && v[key] > max) max = v[key];
    }
  }
  const top_ = niceMax(max * 1.1);
  ctx.font = "11px 'DejaVu Sans', system-ui, sans-serif";
  ctx.fillStyle = "#8b949e";
  ctx.strokeStyle = "#21262d";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath();
    ctx.moveTo(left, Math.round(y) + 0.5);
    ctx.lineTo(left + plotW, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillText(fmt((top_ * i) / 4, 2), left - 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let m = 0; m <= HISTORY_S / 60; m++) {
    const x = left + plotW - (plotW * m * 60) / HISTORY_S;
    ctx.fillText(m === 0 ? "now" : "-" + m + " min", x, top + plotH + 6);
  }
  const xOf = (t) => left + plotW - (plotW * (now - t)) / (HISTORY_S * 1000);
  const yOf = (v) => top + plotH - (plotH * v) / top_;
  for (const service of services) {
    ctx.strokeStyle = colour(service);
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.beginPath();
    let drawing = false;
    for (const point of history) {
      const v = point.series[service];
      const value = v ? v[key] : (key === "rps" ? 0 : null);
      if (value === null || value === undefined) { drawing = false; continue; }
      const x = xOf(point.t), y = yOf(value);
      if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      drawing = true;
    }
    ctx.stroke();
  }
  if (history.length < 2 || services.size === 0) {
    ctx.fillStyle = "#8b949e";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(history.length < 2 ? "collecting..." : "no outbound calls in the last 5 min",
      left + plotW / 2, top + plotH / 2);
  }
}

function renderCharts() {
  drawChart(document.getElementById("chart-rps"), "rps");
  drawChart(document.getElementById("chart-p99"), "p99");
  const legend = document.getElementById("legend");
  const names = new Set();
  for (const point of history) for (const s of Object.keys(point.series)) names.add(s);
  legend.replaceChildren(...[...names].sort().map((s) => {
    const item = el("span");
    const swatch = el("i");
    swatch.style.background = colour(s);
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(s));
    return item;
  }));
  for (const swatch of document.querySelectorAll("#services tr[data-service] i.swatch")) {
    const service = swatch.closest("tr").dataset.service;
    const charted = names.has(service) && swatch.closest("tr").dataset.direction === "outbound";
    swatch.style.background = charted ? colour(service) : "transparent";
  }
}

function render(data) {
  renderHeader(data);
  renderServices(data);
  renderEndpoints(data);
  renderSidecars(data);
  record(data);
  renderCharts();
  document.getElementById("banner").classList.add("hidden");
  document.querySelector("#updated .dot").className = "dot live";
  document.getElementById("updated-text").textContent =
    "updated " + new Date().toLocaleTimeString("en-GB");
  updates += 1;
  document.body.dataset.updates = String(updates);
}

function failed(why) {
  const banner = document.getElementById("banner");
  banner.textContent = "The dashboard server does not answer: " + why;
  banner.classList.remove("hidden");
  document.querySelector("#updated .dot").className = "dot down";
}

async function poll() {
  try {
    const response = await fetch("/api/summary", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (err) {
    failed(err && err.message ? err.message : String(err));
  } finally {
    setTimeout(poll, 1000);
  }
}

window.addEventListener("resize", renderCharts);
document.addEventListener("DOMContentLoaded", poll);
