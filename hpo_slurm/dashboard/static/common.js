// hpo-slurm dashboard: what every page shares. Text from the server is set as text, never as HTML; the
// tooltips ECharts renders as HTML escape it with esc().
"use strict";

const hpo = (() => {
  const STATES = ["PENDING", "QUEUED", "RUNNING", "PAUSED", "COMPLETED", "STOPPED_EARLY", "ERRORED"];
  const POLL_MS = 2000;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function api(path) {
    const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
    return body;
  }

  function experimentName() {
    const parts = location.pathname.split("/");
    return parts[1] === "e" ? decodeURIComponent(parts[2]) : null;
  }

  const enc = encodeURIComponent;
  const expUrl = (name) => `/e/${enc(name)}`;
  const apiUrl = (name, rest) => `/api/e/${enc(name)}${rest || ""}`;

  function num(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "-";
    if (typeof value !== "number") return String(value);
    return Number(value.toPrecision(digits || 6)).toString();
  }

  function hours(value) { return value === null || value === undefined ? "-" : value < 10 ? value.toFixed(3) : value.toFixed(1); }

  function when(seconds) {
    if (!seconds) return "-";
    const d = new Date(seconds * 1000);
    return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
  }

  function duration(start, end) {
    if (!start) return "-";
    const s = Math.max(0, (end || Date.now() / 1000) - start);
    if (s < 120) return `${s.toFixed(0)} s`;
    if (s < 7200) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  // For the few strings ECharts renders as HTML (tooltip formatters): everything from the server goes through this.
  function esc(value) {
    return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // A function whose results are kept only if no later call of it started meanwhile (a slow, older
  // answer never overwrites a newer one): latest(work)() resolves to undefined for a superseded call.
  function latest(work) {
    let ticket = 0;
    return async (...args) => {
      const mine = ++ticket;
      const result = await work(...args);
      return mine === ticket ? result : undefined;
    };
  }

  function state(value) { return el("span", { class: `state s-${value}`, text: value }); }

  function flatten(tree, prefix, out) {
    out = out || [];
    for (const [key, value] of Object.entries(tree || {})) {
      if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) flatten(value, `${prefix || ""}${key}.`, out);
      else out.push([`${prefix || ""}${key}`, value]);
    }
    return out;
  }

  function hpText(hparams) {
    return flatten(hparams).map(([k, v]) => `${k}=${typeof v === "number" ? num(v, 4) : typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
  }

  function showError(where, error) {
    const box = document.getElementById("error");
    box.hidden = false;
    box.textContent = `${where}: ${error.message || error}`;
  }

  function clearError() { document.getElementById("error").hidden = true; }

  // Polls the experiment's version; calls onChange(versionInfo) at once and whenever the database changed.
  function watch(name, onChange) {
    let last = null;
    const live = document.getElementById("live");
    async function tick() {
      try {
        const info = await api(apiUrl(name, "/version"));
        live.classList.toggle("on", info.driver.alive);
        live.lastChild.textContent = info.driver.alive ? "live: driver running" : "driver not running";
        if (info.version !== last) { last = info.version; await onChange(info); }
        clearError();
      } catch (error) { showError("update", error); }
      setTimeout(tick, POLL_MS);
    }
    tick();
  }

  // A function that runs `work` now, or once `ms` after its last run if called sooner (never twice at once).
  function throttle(work, ms) {
    let lastRun = 0, timer = null, running = null;
    return function run() {
      const wait = lastRun + ms - Date.now();
      if (running || wait > 0) { if (!timer) timer = setTimeout(() => { timer = null; run(); }, Math.max(wait, 50)); return running; }
      lastRun = Date.now();
      running = Promise.resolve(work()).finally(() => { running = null; });
      return running;
    };
  }

  const charts = {};
  // An ECharts instance per element id, resized with the window; tests read them from hpo.charts.
  function chart(id) {
    if (!charts[id]) {
      charts[id] = echarts.init(document.getElementById(id), null, { renderer: "canvas" });
      window.addEventListener("resize", () => charts[id].resize());
    }
    return charts[id];
  }

  // Viridis stops from light (a short trial) to dark (the longest).
  const VIRIDIS = ["#b5de2b", "#6ece58", "#35b779", "#1f9e89", "#26828e", "#31688e", "#3e4989", "#482878", "#440154"];
  function lengthColours(lengths) {
    const sorted = [...new Set(lengths)].sort((a, b) => a - b);
    const colours = {};
    sorted.forEach((n, i) => { colours[n] = VIRIDIS[sorted.length === 1 ? 4 : Math.round(i * (VIRIDIS.length - 1) / (sorted.length - 1))]; });
    return colours;
  }

  function logWorthy(values, ratio) {
    const v = values.filter((x) => typeof x === "number");
    if (!v.length) return false;
    const lo = Math.min(...v), hi = Math.max(...v);
    return lo > 0 && hi / lo >= ratio;
  }

  function markReady() { document.body.dataset.ready = String(Number(document.body.dataset.ready || 0) + 1); }

  return { STATES, el, esc, latest, api, experimentName, expUrl, apiUrl, num, hours, when, duration, state, flatten, hpText,
           showError, clearError, watch, throttle, chart, charts, lengthColours, logWorthy, markReady, enc };
})();
window.hpo = hpo;
