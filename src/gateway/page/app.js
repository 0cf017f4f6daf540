// The Yardmaster admin page. Every figure comes from the admin JSON endpoints (the same ones
// scripts use); the admin key lives in this tab's sessionStorage and is sent as a bearer token.
// No library, no inline script, no inline style: text goes in with textContent, never as HTML.
"use strict";

const KEY = "yardmaster.admin-key";
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
let current = "policy";
let timer = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const opts = { method, headers: { authorization: "Bearer " + sessionStorage.getItem(KEY) } };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!r.ok) {
    const msg = json && json.error ? json.error.message : r.status + " " + r.statusText;
    throw new ApiError(r.status, msg);
  }
  return json;
}

function usd(x) {
  return x === null || x === undefined ? "–" : "$" + Number(x).toFixed(x < 1 ? 4 : 2);
}

function ms(x) {
  return x === null || x === undefined ? "–" : Math.round(x) + " ms";
}

function when(t) {
  return t ? new Date(t).toLocaleString() : "–";
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// A line chart of several series over the same x axis (`series`: [{name, values}]).
function linePlot(target, series, label) {
  const w = 720, h = 180, pad = 30;
  const n = series.length ? series[0].values.length : 0;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const root = svg("svg", { viewBox: `0 0 ${w} ${h + 20}`, role: "img", "aria-label": label, class: "chart" });
  root.append(svg("line", { x1: pad, y1: h, x2: w, y2: h, stroke: "#999" }));
  root.append(svg("line", { x1: pad, y1: 10, x2: pad, y2: h, stroke: "#999" }));
  const top = svg("text", { x: 2, y: 16, "font-size": 11 });
  top.textContent = String(max);
  root.append(top);
  const left = svg("text", { x: pad, y: h + 14, "font-size": 11 });
  left.textContent = "-60 min";
  const right = svg("text", { x: w - 30, y: h + 14, "font-size": 11 });
  right.textContent = "now";
  root.append(left, right);
  series.forEach((s, i) => {
    const pts = s.values.map((v, j) => {
      const x = pad + (j * (w - pad)) / Math.max(1, n - 1);
      const y = h - (v * (h - 10)) / max;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    root.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, "data-series": s.name }));
  });
  const legend = el("ul", { class: "legend" }, ...series.map((s, i) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = COLORS[i % COLORS.length];
    return el("li", {}, swatch, s.name);
  }));
  target.replaceChildren(root, legend);
}

// One horizontal bar per item: `value` against `limit` (a bar without limit is drawn to the
// largest value).
function barPlot(target, items, label) {
  const w = 720, row = 24, labelW = 160;
  const h = Math.max(row, items.length * row);
  const max = Math.max(1e-9, ...items.map((i) => Math.max(i.value, i.limit || 0)));
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": label, class: "chart" });
  items.forEach((it, k) => {
    const y = k * row;
    const name = svg("text", { x: 0, y: y + 16, "font-size": 12 });
    name.textContent = it.name;
    root.append(name);
    const span = w - labelW - 120;
    if (it.limit) root.append(svg("rect", { x: labelW, y: y + 4, width: (span * it.limit) / max, height: 14, fill: "#e5e7eb" }));
    const over = it.limit && it.value >= 0.8 * it.limit;
    root.append(svg("rect", { x: labelW, y: y + 4, width: Math.max(1, (span * it.value) / max), height: 14, fill: over ? "#dc2626" : "#2563eb", "data-key": it.name }));
    const t = svg("text", { x: labelW + span + 6, y: y + 16, "font-size": 12 });
    t.textContent = usd(it.value) + (it.limit ? " / " + usd(it.limit) : "");
    root.append(t);
  });
  target.replaceChildren(root);
}

function sparkline(values) {
  const w = 120, h = 24;
  const max = Math.max(1, ...values);
  const pts = values.map((v, j) => (j * w) / Math.max(1, values.length - 1) + "," + (h - (v * (h - 2)) / max));
  const s = svg("svg", { viewBox: `0 0 ${w} ${h}`, class: "spark", "aria-hidden": "true" });
  s.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: "#2563eb", "stroke-width": 1.5 }));
  return s;
}

async function showPolicy() {
  const p = await api("GET", "/admin/rules");
  $("policy-version").textContent = p.version;
  $("policy-loaded").textContent = when(p.loaded_at);
  $("policy-error").textContent = p.last_error || "none";
  $("policy-error").className = p.last_error ? "error" : "";
  fill($("rules").tBodies[0], p.rules.map((r) => el("tr", { "data-rule": r.name },
    el("td", {}, r.name), el("td", {}, r.line), el("td", { class: "hits" }, r.hits), el("td", {}, r.errors),
    el("td", {}, r.per_minute.toFixed(1)), el("td", {}, sparkline(r.last_hour)))));
  linePlot($("rules-plot"), p.rules.map((r) => ({ name: r.name, values: r.last_hour })), "requests per rule over the last hour");
  const byLine = new Map();
  for (const r of p.rules) if (r.file) byLine.set(r.file + ":" + r.line, r);
  $("policy-source").replaceChildren(...p.files.map((f) => {
    const lines = f.text.split("\n").map((text, i) => {
      const r = byLine.get(f.path + ":" + (i + 1));
      return el("div", { class: r ? "line rule-line" : "line" },
        el("span", { class: "ln" }, i + 1), el("code", {}, text),
        r ? el("span", { class: "badge" }, r.hits + " hits") : null);
    });
    return el("figure", { class: "source" }, el("figcaption", {}, f.path), ...lines);
  }));
}

async function showModels() {
  const m = await api("GET", "/admin/models");
  fill($("models").tBodies[0], m.data.map((x) => el("tr", { "data-model": x.name },
    el("td", {}, x.name), el("td", {}, x.provider),
    el("td", { class: x.healthy ? "ok health" : "bad health" }, x.healthy ? "healthy" : "unhealthy"),
    el("td", { class: "breaker" }, x.breaker), el("td", {}, ms(x.ttfb_ms)), el("td", {}, ms(x.mean_latency_ms)),
    el("td", {}, x.requests), el("td", {}, (100 * x.error_rate).toFixed(1) + "%"))));
}

function limitsText(l) {
  if (!l) return "–";
  return [l.rpm ? l.rpm + " rpm" : null, l.tpm ? l.tpm + " tpm" : null].filter(Boolean).join(", ") || "–";
}

async function showKeys() {
  const k = await api("GET", "/admin/keys");
  fill($("keys").tBodies[0], k.data.map((x) => {
    const actions = el("td", {});
    if (x.source === "runtime" && x.state !== "revoked") {
      actions.append(el("button", { type: "button", class: "edit", onclick: () => editKey(x) }, "Edit"),
        el("button", { type: "button", class: "revoke", onclick: () => revokeKey(x) }, "Revoke"));
    }
    return el("tr", { "data-key": x.name },
      el("td", {}, x.name), el("td", {}, x.source), el("td", { class: "state" }, x.state), el("td", {}, x.tier || "–"),
      el("td", {}, usd(x.spend_usd)), el("td", {}, x.budget ? usd(x.budget.usd) + " / " + x.budget.per : "–"),
      el("td", {}, limitsText(x.limits)), el("td", {}, x.models ? x.models.join(", ") : "all"),
      el("td", {}, when(x.expires_at)), actions);
  }));
  barPlot($("keys-plot"), k.data.filter((x) => x.state !== "revoked")
    .map((x) => ({ name: x.name, value: x.spend_usd || 0, limit: x.budget ? x.budget.usd : null })), "spend per key");
}

async function showReloads() {
  const r = await api("GET", "/admin/reloads");
  fill($("reloads").tBodies[0], r.data.map((x) => el("tr", {},
    el("td", {}, when(x.at)), el("td", {}, x.action), el("td", { class: x.ok ? "ok" : "bad" }, x.ok ? "ok" : "rejected"),
    el("td", {}, x.version), el("td", {}, x.error || ""))));
}

const views = { policy: showPolicy, models: showModels, keys: showKeys, reloads: showReloads, explain: async () => {} };

async function show(view) {
  if (view !== current) forgetSecret();
  current = views[view] ? view : "policy";
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + current;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === current);
  try {
    await views[current]();
  } catch (e) {
    if (e.status === 401) return signOut("The admin key was refused: " + e.message);
    const where = $("view-" + current).querySelector(".error") || $("policy-message");
    where.textContent = e.message;
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  $("nav").hidden = true;
  for (const s of document.querySelectorAll(".view")) s.hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
}

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    await api("GET", "/admin/policy");
  } catch (e) {
    return signOut(e.status === 401 || e.status === 403 ? "That key was refused: " + e.message : e.message);
  }
  $("signin").hidden = true;
  $("nav").hidden = false;
  await show((location.hash || "#policy").slice(1));
  clearInterval(timer);
  timer = setInterval(() => { if (current !== "explain") show(current); }, 5000);
}

async function policyAction(path, done) {
  $("policy-message").textContent = "…";
  try {
    const r = await api("POST", path);
    $("policy-message").textContent = done(r);
  } catch (e) {
    $("policy-message").textContent = e.message;
  }
  await show("policy");
}

function keyBody() {
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  const budget = num("key-budget");
  const rpm = num("key-rpm"), tpm = num("key-tpm");
  const models = $("key-models").value.split(",").map((s) => s.trim()).filter(Boolean);
  return {
    name: $("key-name").value.trim(),
    tier: $("key-tier").value.trim() || null,
    budget: budget === null ? null : { usd: budget, per: $("key-per").value },
    limits: rpm === null && tpm === null ? null : { rpm, tpm },
    models: models.length ? models : null,
    expires_at: $("key-expires").value.trim() || null,
  };
}

function resetKeyForm() {
  $("key-form").reset();
  $("key-id").value = "";
  $("key-form-title").textContent = "New key";
  $("key-save").textContent = "Create";
  $("key-cancel").hidden = true;
}

function editKey(x) {
  $("key-id").value = x.id;
  $("key-name").value = x.name;
  $("key-tier").value = x.tier || "";
  $("key-budget").value = x.budget ? x.budget.usd : "";
  $("key-per").value = x.budget ? x.budget.per : "month";
  $("key-rpm").value = x.limits && x.limits.rpm ? x.limits.rpm : "";
  $("key-tpm").value = x.limits && x.limits.tpm ? x.limits.tpm : "";
  $("key-models").value = x.models ? x.models.join(", ") : "";
  $("key-expires").value = x.expires_at || "";
  $("key-form-title").textContent = "Edit " + x.name;
  $("key-save").textContent = "Save";
  $("key-cancel").hidden = false;
  forgetSecret();
}

async function saveKey() {
  $("key-message").textContent = "";
  const id = $("key-id").value;
  try {
    if (id) {
      await api("PATCH", "/admin/keys/" + encodeURIComponent(id), keyBody());
      forgetSecret();
    } else {
      const made = await api("POST", "/admin/keys", keyBody());
      $("key-secret").replaceChildren("The key for " + made.name + " (shown once, copy it now): ", el("code", { id: "new-secret" }, made.key));
      $("key-secret").hidden = false;
    }
    resetKeyForm();
  } catch (e) {
    $("key-message").textContent = e.message;
  }
  await show("keys");
}

function forgetSecret() {
  $("key-secret").replaceChildren();
  $("key-secret").hidden = true;
}

async function revokeKey(x) {
  $("key-message").textContent = "";
  forgetSecret();
  try {
    await api("DELETE", "/admin/keys/" + encodeURIComponent(x.id));
  } catch (e) {
    $("key-message").textContent = e.message;
  }
  await show("keys");
}

async function explain() {
  $("explain-error").textContent = "";
  let body;
  try {
    body = JSON.parse($("explain-request").value);
  } catch (e) {
    $("explain-error").textContent = "The request is not valid JSON: " + e.message;
    return;
  }
  const headers = { authorization: "Bearer " + sessionStorage.getItem(KEY), "content-type": "application/json" };
  const as = $("explain-key").value.trim();
  if (as) headers["x-yardmaster-key"] = as;
  const r = await fetch("/admin/explain", { method: "POST", headers, body: JSON.stringify(body) });
  const t = await r.json().catch(() => null);
  if (!r.ok) {
    $("explain-error").textContent = t && t.error ? t.error.message : String(r.status);
    return;
  }
  const condition = (c) =>
    el("div", { class: c.value ? "ok" : "bad" }, (c.value ? "✓ " : "✗ ") + c.condition + (c.fact ? "  (" + c.fact + ")" : ""));
  const row = (r) =>
    el("tr", { class: r.matched ? "matched" : "" }, el("td", {}, r.name), el("td", {}, r.holds ? "yes" : "no"),
      el("td", {}, ...r.conditions.map(condition)));
  const head = el("thead", {}, el("tr", {}, el("th", {}, "Rule"), el("th", {}, "Holds"), el("th", {}, "Conditions")));
  const rules = el("table", { class: "trace" }, head, el("tbody", {}, ...t.rules.map(row)));
  const plan = el("ol", { class: "plan" }, ...t.plan.map((s) => el("li", { class: s.taken ? "ok" : "bad" }, s.model + ": " + s.reason)));
  $("explain-result").replaceChildren(
    el("p", {}, "Matched rule: ", el("strong", { id: "explain-rule" }, t.rule), " (version " + t.version + ")"),
    el("h3", {}, "Plan"), plan, el("h3", {}, "Rules"), rules,
    ...(t.notes.length ? [el("h3", {}, "Notes"), el("ul", {}, ...t.notes.map((n) => el("li", {}, n)))] : []));
}

function start() {
  $("signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("admin-key").value); });
  $("signout").addEventListener("click", () => signOut(""));
  $("reload").addEventListener("click", () => policyAction("/admin/reload", (r) => "Reloaded: version " + r.version));
  $("rollback").addEventListener("click", () => policyAction("/admin/rollback", (r) => r.rolled_back ? "Rolled back to " + r.version : r.message));
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); saveKey(); });
  $("key-cancel").addEventListener("click", resetKeyForm);
  $("explain-form").addEventListener("submit", (e) => { e.preventDefault(); explain(); });
  window.addEventListener("hashchange", () => { if (sessionStorage.getItem(KEY)) show(location.hash.slice(1)); });
  const saved = sessionStorage.getItem(KEY);
  if (saved) signIn(saved);
}

document.addEventListener("DOMContentLoaded", start);
