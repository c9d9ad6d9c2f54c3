// shaper's live dashboard: polls the agent's read-only API (/v1/stats and /v1/health every
// second, slower when a poll takes long; /v1/config at start and after each reload) and
// draws the link, the tenants and one tenant's history.
// Served from the binary; no outside scripts, fonts or styles.
"use strict";

const HISTORY = 120; // points kept for the charts (one a second)
const MAX_ROWS = 500; // rows drawn at once; the filter narrows the rest
const UNITS = { tbit: 1e12, gbit: 1e9, mbit: 1e6, kbit: 1e3, bit: 1 };

let config = null;
let ceilings = new Map();
let capacity = 0;
let tenants = [];
let sortKey = "offered";
let sortDesc = true;
let selected = null;
const linkHistory = { passed: [], offered: [] };
let tenantHistory = null;

function parseRate(s) {
  const m = /^([0-9.]+)\s*(tbit|gbit|mbit|kbit|bit)$/.exec(String(s || "").trim());
  return m ? parseFloat(m[1]) * UNITS[m[2]] : 0;
}

function bits(v) {
  if (v === null || v === undefined || !isFinite(v)) return "-";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(2) + " Gbit/s";
  if (a >= 1e6) return (v / 1e6).toFixed(2) + " Mbit/s";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + " kbit/s";
  return v.toFixed(0) + " bit/s";
}

function text(el, s) { el.textContent = s; return el; }

function kv(el, pairs) {
  el.replaceChildren();
  for (const [k, v] of pairs) {
    el.appendChild(text(document.createElement("span"), k));
    el.appendChild(text(document.createElement("span"), v));
  }
}

// The columns: header, value for sorting, text shown.
const COLUMNS = [
  ["name", "tenant", (t) => t.name, (t) => t.name],
  ["tier", "tier", (t) => t.tier, (t) => t.tier],
  ["rate", "rate", (t) => t.rate_bits, (t) => bits(t.rate_bits)],
  ["ceil", "ceiling", (t) => ceilings.get(t.name) || t.rate_bits, (t) => bits(ceilings.get(t.name) || t.rate_bits)],
  ["fill", "allocated", (t) => fill(t), (t) => bits(fill(t))],
  ["pre", "pre-allocated", (t) => (t.allocation ? t.allocation.pre_bps : 0), (t) => (t.allocation ? bits(t.allocation.pre_bps) : "-")],
  ["forecast", "forecast", (t) => (t.forecast ? t.forecast.mean * 8 : -1), forecastText],
  ["offered", "offered", (t) => t.offered_bps, (t) => bits(t.offered_bps)],
  ["passed", "passed", (t) => t.passed_bps, (t) => bits(t.passed_bps)],
  ["drops", "dropped", (t) => t.drop_ratio, (t) => (100 * t.drop_ratio).toFixed(1) + " %"],
  ["marks", "marked pkts", (t) => t.marked_packets, (t) => String(t.marked_packets)],
  ["override", "override", (t) => overrideOf(t), (t) => overrideOf(t) || "-"],
  ["mase", "MASE", (t) => (t.forecast && t.forecast.mase != null ? t.forecast.mase : Infinity), maseText],
];

function fill(t) { return t.allocation ? t.allocation.fill_bps : t.rate_bits; }
function overrideOf(t) { return t.allocation && t.allocation.override_reason ? t.allocation.override_reason : ""; }
function forecastText(t) {
  if (!t.forecast) return "-";
  const f = t.forecast;
  return bits(f.mean * 8) + " [" + bits(f.lo * 8) + ", " + bits(f.hi * 8) + "]";
}
function maseText(t) {
  if (!t.forecast || t.forecast.mase == null) return "-";
  return t.forecast.mase.toFixed(2) + (t.forecast.inaccurate ? " !" : "");
}

function drawHead() {
  const head = document.getElementById("head");
  head.replaceChildren();
  for (const [key, label] of COLUMNS) {
    const th = text(document.createElement("th"), label + (key === sortKey ? (sortDesc ? " ▼" : " ▲") : ""));
    th.onclick = () => {
      if (sortKey === key) sortDesc = !sortDesc; else { sortKey = key; sortDesc = key !== "name" && key !== "tier"; }
      drawHead();
      drawRows();
    };
    head.appendChild(th);
  }
}

function drawRows() {
  const q = document.getElementById("filter").value.trim().toLowerCase();
  const col = COLUMNS.find((c) => c[0] === sortKey);
  let shown = q ? tenants.filter((t) => t.name.toLowerCase().includes(q) || t.tier.toLowerCase().includes(q)) : tenants.slice();
  shown.sort((a, b) => {
    const x = col[2](a), y = col[2](b);
    const c = typeof x === "string" ? x.localeCompare(y) : x - y;
    return sortDesc ? -c : c;
  });
  text(document.getElementById("count"), "(" + Math.min(shown.length, MAX_ROWS) + " shown of " + shown.length + (q ? " matching, " + tenants.length + " in all" : "") + ")");
  shown = shown.slice(0, MAX_ROWS);
  const body = document.getElementById("rows");
  const frag = document.createDocumentFragment();
  for (const t of shown) {
    const tr = document.createElement("tr");
    tr.dataset.tenant = t.name;
    if (t.name === selected) tr.className = "selected";
    for (const c of COLUMNS) {
      const td = text(document.createElement("td"), c[3](t));
      if ((c[0] === "drops" && t.drop_ratio > 0.01) || (c[0] === "mase" && t.forecast && t.forecast.inaccurate)) td.className = "bad";
      tr.appendChild(td);
    }
    tr.onclick = () => select(t.name);
    frag.appendChild(tr);
  }
  body.replaceChildren(frag);
}

function select(name) {
  selected = name;
  tenantHistory = { offered: [], passed: [], fill: [], mean: [], lo: [], hi: [] };
  drawRows();
  drawTenant();
}

function push(arr, v) { arr.push(v); if (arr.length > HISTORY) arr.shift(); }

// A line chart of `series` ([label, color, values]) with an optional band ([lo, hi]).
function chart(canvas, series, band, legend) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400, h = canvas.clientHeight || 180;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  let max = 1;
  for (const [, , v] of series) for (const x of v) if (isFinite(x)) max = Math.max(max, x);
  if (band) for (const x of band[1]) if (isFinite(x)) max = Math.max(max, x);
  max *= 1.1;
  const left = 4, top = 14, plotH = h - top - 4, plotW = w - left - 4;
  const X = (i) => left + (plotW * i) / (HISTORY - 1);
  const Y = (v) => top + plotH - (plotH * v) / max;
  g.fillStyle = "#5a6478"; g.font = "11px system-ui, sans-serif";
  g.fillText(bits(max), left, 11);
  g.strokeStyle = "#eef0f4"; g.beginPath(); g.moveTo(left, Y(max / 2)); g.lineTo(w, Y(max / 2)); g.stroke();
  if (band && band[0].length > 1) {
    const [lo, hi] = band, off = HISTORY - lo.length;
    g.fillStyle = "rgba(90, 120, 220, 0.15)";
    g.beginPath();
    hi.forEach((v, i) => (i ? g.lineTo(X(off + i), Y(v)) : g.moveTo(X(off + i), Y(v))));
    for (let i = lo.length - 1; i >= 0; i--) g.lineTo(X(off + i), Y(lo[i]));
    g.closePath(); g.fill();
  }
  for (const [, color, v] of series) {
    if (v.length < 2) continue;
    const off = HISTORY - v.length;
    g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath();
    v.forEach((x, i) => (i ? g.lineTo(X(off + i), Y(x)) : g.moveTo(X(off + i), Y(x))));
    g.stroke();
  }
  legend.replaceChildren();
  for (const [label, color] of series) {
    const s = document.createElement("span"), i = document.createElement("i");
    i.style.background = color;
    s.appendChild(i); s.appendChild(document.createTextNode(label));
    legend.appendChild(s);
  }
  if (band) {
    const s = document.createElement("span"), i = document.createElement("i");
    i.style.background = "rgba(90, 120, 220, 0.3)";
    s.appendChild(i); s.appendChild(document.createTextNode("forecast interval"));
    legend.appendChild(s);
  }
}

function drawLink() {
  const passed = tenants.reduce((a, t) => a + t.passed_bps, 0);
  const offered = tenants.reduce((a, t) => a + t.offered_bps, 0);
  push(linkHistory.passed, passed);
  push(linkHistory.offered, offered);
  const pairs = [
    ["capacity", capacity ? bits(capacity) : "-"],
    ["passed", bits(passed)],
    ["offered", bits(offered)],
    ["utilization", capacity ? (100 * passed / capacity).toFixed(1) + " %" : "-"],
  ];
  if (config && config.pools) for (const [k, v] of Object.entries(config.pools)) pairs.push(["pools." + k, String(v)]);
  if (config && config.policy) pairs.push(["policy", config.policy.mode]);
  kv(document.getElementById("link"), pairs);
  const cap = capacity ? [["capacity", "#b3261e", linkHistory.passed.map(() => capacity)]] : [];
  chart(document.getElementById("linkchart"),
    [["offered", "#e8a33d", linkHistory.offered], ["passed", "#2f7d4f", linkHistory.passed]].concat(cap),
    null, document.getElementById("linklegend"));
}

function drawTenant() {
  const t = tenants.find((x) => x.name === selected);
  if (!t || !tenantHistory) return;
  text(document.getElementById("seltitle"), t.name + " (" + t.tier + ")");
  const pairs = COLUMNS.slice(2).map((c) => [c[1], c[3](t)]);
  pairs.push(["active flows", String(t.active_flows)]);
  if (t.forecast && t.forecast.model) pairs.push(["model", t.forecast.model]);
  if (t.forecast && t.forecast.coverage != null) pairs.push(["interval coverage", (100 * t.forecast.coverage).toFixed(1) + " %"]);
  if (t.allocation && t.allocation.decision) pairs.push(["decision", JSON.stringify(t.allocation.decision)]);
  kv(document.getElementById("tenantkv"), pairs);
  chart(document.getElementById("tenantchart"), [
    ["offered", "#e8a33d", tenantHistory.offered],
    ["passed", "#2f7d4f", tenantHistory.passed],
    ["allocated", "#5b3cc4", tenantHistory.fill],
    ["forecast", "#3a6fd8", tenantHistory.mean],
  ], [tenantHistory.lo, tenantHistory.hi], document.getElementById("tenantlegend"));
}

function recordTenant() {
  const t = tenants.find((x) => x.name === selected);
  if (!t || !tenantHistory) return;
  push(tenantHistory.offered, t.offered_bps);
  push(tenantHistory.passed, t.passed_bps);
  push(tenantHistory.fill, fill(t));
  push(tenantHistory.mean, t.forecast ? t.forecast.mean * 8 : NaN);
  push(tenantHistory.lo, t.forecast ? t.forecast.lo * 8 : NaN);
  push(tenantHistory.hi, t.forecast ? t.forecast.hi * 8 : NaN);
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

async function refreshConfig() {
  try {
    config = (await getJson("/v1/config")).config;
    capacity = parseRate(config.link && config.link.capacity);
    const borrows = new Map(Object.entries(config.tiers || {}).map(([name, t]) => [name, !!t.borrow]));
    ceilings = new Map(config.tenants.map((t) => [t.name, t.ceil && borrows.get(t.tier) !== false ? parseRate(t.ceil) : parseRate(t.rate)]));
  } catch (e) {
    text(document.getElementById("error"), String(e));
  }
}

// Polls pace themselves: at least a second apart, and at least three times as long as the
// last one took, so a page open on 100,000 tenants does not keep the agent rendering.
let pollMs = 1000;
let reloadsSeen = 0;

async function refresh() {
  const started = performance.now();
  try {
    const [stats, health] = await Promise.all([getJson("/v1/stats"), getJson("/v1/health")]);
    tenants = stats.tenants || [];
    const h = health.health;
    // The config (ceilings, capacity, pools) is fetched again only after a reload.
    if (h.reloads_ok !== reloadsSeen) {
      reloadsSeen = h.reloads_ok;
      await refreshConfig();
    }
    text(document.getElementById("iface"), "interface " + stats.iface);
    text(document.getElementById("mode"), "mode " + h.mode);
    text(document.getElementById("cycle"), "cycle " + h.cycles + " (" + h.last_cycle_ms.toFixed(1) + " ms)");
    const alerts = Object.entries(h.alerts || {}).map(([k, v]) => k + " " + v).join(", ");
    text(document.getElementById("alerts"), alerts ? "alerts: " + alerts : "no alerts");
    text(document.getElementById("error"), h.last_error ? "last error: " + h.last_error : "");
    kv(document.getElementById("classes"), (stats.classes || []).map(([n, p, b]) => [n, p + " packets, " + b + " bytes"]));
    if (selected === null && tenants.length) select(tenants[0].name);
    recordTenant();
    drawRows();
    drawLink();
    drawTenant();
  } catch (e) {
    text(document.getElementById("error"), "cannot reach the agent: " + e.message);
  }
  pollMs = Math.max(1000, 3 * (performance.now() - started));
}

async function poll() {
  await refresh();
  setTimeout(poll, pollMs);
}

document.getElementById("filter").oninput = drawRows;
drawHead();
refreshConfig().then(poll);
