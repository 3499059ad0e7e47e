// covidflow dashboard: reads the filters from the URL, asks the JSON API, draws the panels.
// Plain script, no build step. All paths are relative, so the page works under any prefix.
"use strict";

const COLORS = ["#fff5eb", "#fdd0a2", "#fdae6b", "#fd8d3c", "#e6550d", "#a63603"];
const LINE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const $ = (id) => document.getElementById(id);
const state = {};
let meta = null, geo = null, seriesPlot = null, variantPlot = null;

async function api(path, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    for (const one of [].concat(v)) if (one !== "" && one != null) qs.append(k, one);
  }
  const resp = await fetch(`api/${path}?${qs}`);  // same origin: the Airflow UI's login cookie goes along
  if (resp.status === 401) throw new Error("not logged in to Airflow (or the login expired): reload the page to log in");
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.detail || resp.statusText);
  return body;
}

function fmt(v) {
  if (v == null) return "–";
  return Math.abs(v) >= 100 ? Math.round(v).toLocaleString("en") : (+v.toFixed(2)).toLocaleString("en");
}

function readUrl() {
  const p = new URLSearchParams(location.search);
  for (const k of ["metric", "source", "date", "level", "places", "start", "end", "interval", "country", "vsource", "alias"]) {
    state[k] = p.get(k) || "";
  }
  state.per100k = p.get("per100k") !== "0";
}

function writeUrl() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) {
    if (k === "per100k") { if (!v) p.set(k, "0"); } else if (v) p.set(k, v);
  }
  history.replaceState(null, "", `?${p}`);
}

function fillForm() {
  const m = meta.metrics.find((x) => x.name === state.metric);
  $("source").innerHTML = '<option value="">all sources</option>' +
    m.sources.map((s) => `<option>${s}</option>`).join("");
  for (const k of ["metric", "source", "date", "level", "places", "start", "end", "interval", "country"]) $(k).value = state[k];
  $("per100k").checked = state.per100k;
}

function defaults() {
  const names = meta.metrics.map((m) => m.name);
  if (!names.includes(state.metric)) state.metric = names.includes("hospital_occupancy") ? "hospital_occupancy" : names[0];
  const m = meta.metrics.find((x) => x.name === state.metric);
  if (state.source && !m.sources.includes(state.source)) state.source = "";
  state.date = state.date || m.last_date;
  state.end = state.end || m.last_date;
  if (!state.start) {
    const d = new Date(state.end); d.setUTCDate(d.getUTCDate() - 60);
    state.start = d.toISOString().slice(0, 10) < m.first_date ? m.first_date : d.toISOString().slice(0, 10);
  }
  state.level = state.level || "department";
  state.places = state.places || "FR-D75,FR-D13,FR-D69";
  state.interval = state.interval || "day";
  state.country = state.country || "FR";
}

function drawMapShapes() {
  const svg = $("map");
  svg.setAttribute("viewBox", geo.viewBox);
  svg.innerHTML = geo.departments.map((d) =>
    `<path id="dep-${d.key}" data-key="${d.key}" data-region="${d.region_key}" d="${d.path}"><title>${d.name}</title></path>`
  ).join("");
  svg.addEventListener("click", (ev) => {
    const key = ev.target.dataset && ev.target.dataset.key;
    if (!key) return;
    const k = state.level === "region" ? ev.target.dataset.region : key;
    const list = state.places.split(",").filter(Boolean);
    state.places = [k, ...list.filter((x) => x !== k)].slice(0, 5).join(",");
    $("places").value = state.places; writeUrl(); loadSeries();
  });
}

async function loadMap() {
  const data = await api("map", { metric: state.metric, date: state.date, level: state.level, source: state.source, alias: state.alias });
  const usePer = state.per100k && data.places.some((p) => p.per_100k != null);
  const byKey = Object.fromEntries(data.places.map((p) => [p.key, p]));
  const vals = data.places.map((p) => (usePer ? p.per_100k : p.value)).filter((v) => v != null).sort((a, b) => a - b);
  const breaks = COLORS.slice(1).map((_, i) => vals[Math.floor((vals.length * (i + 1)) / COLORS.length)]);
  const color = (v) => COLORS[breaks.filter((b) => v >= b).length];
  for (const path of $("map").querySelectorAll("path")) {
    const key = state.level === "region" ? path.dataset.region : path.dataset.key;
    const p = byKey[key], v = p ? (usePer ? p.per_100k : p.value) : null;
    path.style.fill = v == null ? "#ddd" : color(v);
    path.dataset.value = p ? p.value : "";
    path.dataset.per100k = p && p.per_100k != null ? p.per_100k : "";
    const name = p ? p.name : path.querySelector("title").textContent.split(":")[0];
    path.querySelector("title").textContent = `${name}: ${p ? fmt(p.value) : "no data"}` +
      (p && p.per_100k != null ? ` (${fmt(p.per_100k)} per 100k)` : "");
    path.classList.toggle("selected", state.places.split(",").includes(key));
  }
  $("map-title").textContent = `${state.metric} on ${data.date}` + (usePer ? " per 100k inhabitants" : ` (${data.unit})`) +
    ` by ${data.level}`;
  $("map").dataset.date = data.date;
  $("map").dataset.metric = data.metric;
  $("legend").innerHTML = COLORS.map((c, i) =>
    `<span style="background:${c}">${i === 0 ? "<" + fmt(breaks[0]) : "≥" + fmt(breaks[i - 1])}</span>`).join("");
  $("map-note").textContent = `${data.places.length} places with data` +
    (data.derived_from_departments ? "; regions are the sum of their departments" : "") +
    (state.per100k && !usePer ? "; per-100k not meaningful for this metric" : "");
}

function plot(target, old, title, xs, series) {
  if (old) old.destroy();
  const el = $(target);
  el.innerHTML = "";
  const opts = {
    title, width: Math.max(el.clientWidth, 380), height: 300,
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: s.color || LINE[i % LINE.length], width: s.width || 1.5,
      dash: s.dash, spanGaps: true }))],
    axes: [{}, { size: 60 }],
  };
  return new uPlot(opts, [xs, ...series.map((s) => s.values)], el);
}

async function loadSeries() {
  const places = state.places.split(",").map((s) => s.trim()).filter(Boolean);
  const data = await api("series", { metric: state.metric, place: places, start: state.start, end: state.end,
    interval: state.interval, source: state.source, alias: state.alias });
  const days = [...new Set(data.series.flatMap((s) => s.points.map((p) => p.date)))].sort();
  const xs = days.map((d) => Date.parse(d) / 1000);
  const lines = [];
  data.series.forEach((s, i) => {
    const byDay = Object.fromEntries(s.points.map((p) => [p.date, p]));
    const color = LINE[i % LINE.length];
    lines.push({ label: s.name, color, width: 1, dash: state.interval === "day" ? [4, 3] : undefined,
      values: days.map((d) => (byDay[d] ? byDay[d].value : null)) });
    if (state.interval === "day" && s.points.some((p) => p.smoothed != null)) {
      lines.push({ label: `${s.name} (7-day mean)`, color, width: 2.5, values: days.map((d) => (byDay[d] ? byDay[d].smoothed : null)) });
    }
  });
  $("series-title").textContent = `${data.metric} (${data.unit}), ${data.interval === "week" ? "weekly" : "daily"}`;
  seriesPlot = plot("series", seriesPlot, "", xs, lines);
}

// A source that published one week only is a snapshot: ranked bars instead of a chart with a single x.
function shareBars(target, src) {
  const rows = src.variants.map((v) => ({ v, share: v.share[0] })).filter((r) => r.share != null)
    .sort((a, b) => b.share - a.share);
  $(target).innerHTML = `<p class="note">One week published by this source: ${escapeHtml(src.dates[0])}</p>` +
    '<table class="bars">' + rows.map((r) => `<tr class="${r.v.bf7_family ? "bf7" : ""}" data-variant="${escapeHtml(r.v.variant)}">` +
      `<td>${escapeHtml(r.v.variant)}</td><td class="num">${fmt(r.share)} %</td>` +
      `<td class="bar"><span style="width:${Math.max(0, Math.min(100, r.share))}%"></span></td></tr>`).join("") + "</table>";
}

async function loadVariants() {
  const data = await api("variants", { country: state.country, alias: state.alias });
  // Sources that name the BF.7 family come first (API order); the choice is kept in the URL.
  $("vsource").innerHTML = data.sources.map((s) => `<option value="${escapeHtml(s.source_id)}">` +
    `${escapeHtml(s.source_id)} (${s.dates.length} week${s.dates.length === 1 ? "" : "s"})</option>`).join("");
  const src = data.sources.find((s) => s.source_id === state.vsource) || data.sources[0];
  if (variantPlot) { variantPlot.destroy(); variantPlot = null; }
  if (state.vsource && (!src || src.source_id !== state.vsource)) { state.vsource = ""; writeUrl(); }  // not offered here
  if (!src) {
    $("variants-title").textContent = `Variant share in ${data.country}`;
    $("variants").textContent = "no variant data for this country";
    return;
  }
  $("vsource").value = src.source_id;
  $("variants-title").textContent = `Variant share in ${data.country} (% of sequences, ${src.source_id}); BF.7 family in bold`;
  if (src.dates.length === 1) { shareBars("variants", src); return; }
  const top = src.variants.filter((v, i) => i < 8 || v.bf7_family);
  variantPlot = plot("variants", null, "", src.dates.map((d) => Date.parse(d) / 1000),
    top.map((v, i) => ({ label: v.variant, values: v.share, width: v.bf7_family ? 4 : 1.5,
      color: v.bf7_family ? "#000" : LINE[i % LINE.length] })));
}

async function loadGrowth() {
  const data = await api("growth", { metric: state.metric, date: state.date, level: state.level, source: state.source, alias: state.alias });
  $("growth").innerHTML = `<tr><th>Place</th><th class="num">Week to ${data.week_end}</th><th class="num">Week before</th>` +
    `<th class="num">Change</th></tr>` + (data.places.length ? "" :
    '<tr><td colspan="4">no place has two full weeks of data up to this date</td></tr>') + data.places.map((p) =>
      `<tr><td>${p.name}</td><td class="num">${fmt(p.this_week)}</td><td class="num">${fmt(p.previous_week)}</td>` +
      `<td class="num">${p.change_pct == null ? "new" : (p.change_pct > 0 ? "+" : "") + fmt(p.change_pct) + " %"}</td></tr>`).join("");
}

function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// The last freshness verdict / quality summary of the ops DAGs; the full message is in the tooltip.
function checkCell(check) {
  if (!check) return '<td class="check">not checked</td>';
  return `<td class="check ${escapeHtml(check.status)}" title="${escapeHtml(check.message)} (${escapeHtml(check.checked_at)})">` +
    `${escapeHtml(check.status)}</td>`;
}

async function loadFreshness() {
  const data = await api("freshness", { alias: state.alias });
  $("freshness").innerHTML = '<tr><th>Source</th><th>Last vintage</th><th>Last ingestion</th><th>Newest date</th>' +
    '<th class="num">Docs</th><th>Freshness</th><th>Quality</th></tr>' +
    data.sources.map((s) => `<tr><td>${escapeHtml(s.source_id)}</td><td>${(s.last_vintage || "").replace(".000Z", "Z")}</td>` +
      `<td>${(s.last_ingested_at || "").replace(".000Z", "Z")}</td><td>${s.last_date || ""}</td><td class="num">${s.documents}</td>` +
      checkCell(s.freshness) + checkCell(s.quality) + "</tr>").join("");
}

async function run(tasks) {
  $("status").textContent = "";
  document.body.dataset.loading = "1";
  const results = await Promise.allSettled(tasks.map((t) => t()));
  const errors = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
  $("status").textContent = errors.join(" · ");
  document.body.dataset.loading = "0";
}

function onChange(ev) {
  const k = ev.target.name;
  state[k] = k === "per100k" ? ev.target.checked : ev.target.value.trim();
  if (k === "metric") {
    const m = meta.metrics.find((x) => x.name === state.metric);
    // Keep the source and date when the new metric has them; otherwise fall back to its own.
    if (!m.sources.includes(state.source)) state.source = "";
    if (state.date < m.first_date || state.date > m.last_date) { state.date = ""; state.start = ""; state.end = ""; }
    defaults(); fillForm();
  }
  writeUrl();
  const all = [loadMap, loadSeries, loadGrowth];
  const which = { metric: all, source: all, date: [loadMap, loadGrowth], level: [loadMap, loadGrowth], per100k: [loadMap],
    places: [loadSeries], start: [loadSeries], end: [loadSeries], interval: [loadSeries], country: [loadVariants], vsource: [loadVariants] }[k] || all;
  run(which);
}

async function main() {
  readUrl();
  try {
    [meta, geo] = await Promise.all([api("meta", { alias: state.alias }), api("geo")]);
  } catch (err) {
    $("status").textContent = err.message;
    return;
  }
  $("metric").innerHTML = meta.metrics.map((m) => `<option value="${m.name}">${m.name} (${m.unit})</option>`).join("");
  $("place-list").innerHTML = meta.places.filter((p) => p.level !== "country" || p.key.length === 2)
    .map((p) => `<option value="${p.key}">${p.name}</option>`).join("");
  defaults(); fillForm(); writeUrl(); drawMapShapes();
  $("filters").addEventListener("change", onChange);
  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  await run([loadMap, loadSeries, loadVariants, loadGrowth, loadFreshness]);
  document.body.dataset.ready = "1";
}

main();
