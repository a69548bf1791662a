// The fleet dashboard's page: the live feed (server-sent events) into a
// model, the model into cards, a table and a detail view. Staleness is
// judged here, every second, against this browser's clock: an outlet that
// stops publishing must turn stale on screen without any message arriving.
"use strict";

const outlets = new Map(); // id -> view from the feed
let broker = null;
let selected = null;
let sortKey = "health";
let sortDir = 1;
let show = "all";
let filterText = "";
let renderQueued = false;
let feed = null;
let lastRows = null;
let renderCost = 0; // ms, the last render with its layout

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

// --- What an outlet's health is -------------------------------------------
// offline: its last will or a clean shutdown said so; stale: its snapshot
// outlived valid_until (the agent stopped refreshing it); connected; and
// everything else needs attention.
function health(view, now) {
  const s = view.state;
  if (view.availability === "offline") return "offline";
  if (!s) return view.availability === "online" ? "attention" : "offline";
  const until = Date.parse(s.valid_until);
  if (!(until > now)) return "stale";
  return s.state === "connected" ? "connected" : "attention";
}
const HEALTH_ORDER = { offline: 0, stale: 1, attention: 2, connected: 3 };

function ago(iso, now) {
  const t = Date.parse(iso);
  if (!t) return "";
  let s = Math.round((now - t) / 1000);
  const future = s < 0;
  s = Math.abs(s);
  const text = s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min` : s < 86400 ? `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min` : `${Math.floor(s / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}
function duration(secs) {
  if (secs == null) return "";
  const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600), m = Math.floor((secs % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min`;
}
function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// The table's columns: the value to sort by, and the cell.
function row(id, view, now) {
  const s = view.state || {}, t = view.telemetry || {}, m = s.messages || {};
  const h = health(view, now);
  const a = view.audit, gaps = a ? a.missing + a.lost : -1;
  return {
    id, h,
    sort: {
      id, name: s.push_name || "", phone: s.phone || "", health: HEALTH_ORDER[h], state: s.state || "",
      attempt: s.attempt ?? -1, last_in: Date.parse(m.last_message_in_at) || 0, last_out: Date.parse(m.last_message_out_at) || 0,
      uptime: t.uptime_secs ?? -1, memory: t.rss_bytes ?? -1, temp: t.cpu_temp_c ?? -999, disk: t.disk_free_bytes ?? -1,
      version: s.version || "", mqtt: s.mqtt || "", records: gaps,
    },
    cells: [
      `<td>${esc(id)}</td>`,
      `<td>${esc(s.push_name)}</td>`,
      `<td>${esc(s.phone)}</td>`,
      `<td><span class="pill ${h}" data-health="${h}">${h === "attention" ? "attention" : h}</span></td>`,
      `<td><span data-state="${esc(s.state)}">${esc(s.state || "—")}</span> <span class="muted" title="${esc(s.since)}">${esc(ago(s.since, now))}</span></td>`,
      `<td class="num">${s.attempt ? esc(s.attempt) : ""} <span class="muted">${s.next_retry_at ? esc(ago(s.next_retry_at, now)) : ""}</span></td>`,
      `<td title="${esc(m.last_message_in_at)}">${esc(ago(m.last_message_in_at, now))}</td>`,
      `<td title="${esc(m.last_message_out_at)}">${esc(ago(m.last_message_out_at, now))}</td>`,
      `<td class="num">${esc(duration(t.uptime_secs))}</td>`,
      `<td class="num">${esc(bytes(t.rss_bytes))}</td>`,
      `<td class="num">${t.cpu_temp_c != null ? esc(t.cpu_temp_c.toFixed(1)) : ""}</td>`,
      `<td class="num">${esc(bytes(t.disk_free_bytes))}</td>`,
      `<td>${esc(s.version)}</td>`,
      `<td>${esc(s.mqtt)}</td>`,
      `<td data-records="${a ? (gaps ? "gap" : "ok") : ""}" class="${gaps > 0 ? "bad" : ""}" title="${a ? esc(`seq ${a.last_seq}: ${a.received} received, ${a.replayed} replayed`) : ""}">${esc(records(a))}</td>`,
    ],
  };
}

// What HQ's audit (`fleet audit`) says of the outlet's numbered records.
function records(a) {
  if (!a) return "";
  if (!a.missing && !a.lost) return "all had";
  return [a.missing ? `${a.missing} missing` : "", a.lost ? `${a.lost} lost` : ""].filter(Boolean).join(", ");
}

function matches(r, view) {
  if (show === "connected" && r.h !== "connected") return false;
  if (show === "attention" && r.h !== "attention") return false;
  if (show === "offline" && r.h !== "offline" && r.h !== "stale") return false;
  if (!filterText) return true;
  const s = view.state || {};
  const hay = [r.id, s.push_name, s.phone, s.state, s.version, r.h, s.last_error, r.sort.records > 0 ? "gap missing lost" : ""].join(" ").toLowerCase();
  return filterText.split(/\s+/).every((w) => hay.includes(w));
}

function render() {
  renderQueued = false;
  const started = performance.now();
  const now = Date.now();
  const counts = { all: 0, connected: 0, attention: 0, offline: 0 };
  const rows = [];
  for (const [id, view] of outlets) {
    const r = row(id, view, now);
    counts.all++;
    counts[r.h === "stale" ? "offline" : r.h]++;
    if (matches(r, view)) rows.push(r);
  }
  rows.sort((a, b) => {
    const x = a.sort[sortKey], y = b.sort[sortKey];
    const c = x < y ? -1 : x > y ? 1 : 0;
    return c * sortDir || (a.id < b.id ? -1 : 1);
  });
  for (const k of Object.keys(counts)) $(`count-${k}`).textContent = counts[k];
  $("shown").textContent = rows.length === counts.all ? "" : `${rows.length} of ${counts.all} shown`;
  $("empty").hidden = counts.all > 0;
  const html = rows
    .map((r) => `<tr data-outlet="${esc(r.id)}" class="health-${r.h}${r.id === selected ? " selected" : ""}">${r.cells.join("")}</tr>`)
    .join("");
  if (html !== lastRows) { document.querySelector("#outlets tbody").innerHTML = html; lastRows = html; }
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.className = th.dataset.sort === sortKey ? (sortDir > 0 ? "asc" : "desc") : "";
  }
  for (const c of document.querySelectorAll(".card")) c.classList.toggle("selected", c.dataset.show === show);
  renderBroker();
  renderDetail(now);
  // The layout the new rows need, counted here rather than after: with a
  // thousand outlets it costs more than the script.
  void document.body.offsetHeight;
  renderCost = performance.now() - started;
}
// A change renders within 100 ms, or twice the last render's cost when that
// is more: however busy the fleet, rendering takes at most about a third of
// the page's time, and clicks and scrolling stay responsive.
function queueRender() {
  if (!renderQueued) { renderQueued = true; setTimeout(render, Math.max(100, 2 * renderCost)); }
}

function renderBroker() {
  const b = $("broker");
  if (!broker) return;
  b.textContent = broker.connected ? `broker: ${broker.broker}` : `broker down: ${broker.broker}`;
  b.title = broker.last_error ? `last error: ${broker.last_error}` : `since ${broker.since}`;
  b.classList.toggle("bad", !broker.connected);
}

function renderDetail(now) {
  const panel = $("detail");
  const view = selected && outlets.get(selected);
  if (!view) { panel.hidden = true; return; }
  panel.hidden = false;
  panel.dataset.outlet = selected;
  const s = view.state || {}, t = view.telemetry || {}, m = s.messages || {};
  $("detail-title").textContent = selected;
  const fields = [
    ["health", health(view, now)], ["availability", view.availability], ["state", s.state], ["since", s.since],
    ["name", s.push_name], ["number", s.phone], ["attempt", s.attempt], ["next retry", s.next_retry_at],
    ["last error", s.last_error], ["last connected", s.last_connected_at],
    ["last disconnect", s.last_disconnect ? `${s.last_disconnect.at}: ${s.last_disconnect.reason}` : null],
    ["QR round", s.qr ? `${s.qr.index} of ${s.qr.count}, expires ${s.qr.expires_at}` : null],
    ["pairing code", s.pair_code ? `${s.pair_code.code} for ${s.pair_code.phone}, expires ${s.pair_code.expires_at}` : null],
    ["fault", s.fault ? `${s.fault.kind}: ${s.fault.what}` : null], ["screen", s.display], ["MQTT", s.mqtt],
    ["inbox", m.inbox_pending != null ? `${m.inbox_pending} waiting${m.inbox_full ? " (full)" : ""}` : null],
    ["outbox", m.outbox_pending != null ? `${m.outbox_pending} waiting` : null],
    ["last in", m.last_message_in_at], ["last out", m.last_message_out_at],
    ["uptime", duration(t.uptime_secs)], ["memory", bytes(t.rss_bytes)], ["CPU", t.cpu_temp_c != null ? `${t.cpu_temp_c} °C` : null],
    ["throttled", t.throttled_flags && t.throttled_flags.length ? t.throttled_flags.join(", ") : null],
    ["disk free", bytes(t.disk_free_bytes)], ["database", bytes(t.db_bytes)], ["reconnects", t.reconnects],
    ["version", s.version], ["valid until", s.valid_until],
    ["records (audit)", view.audit ? `${records(view.audit)}: up to seq ${view.audit.last_seq}, ${view.audit.received} received, ${view.audit.replayed} replayed (${view.audit.at || ""})` : null],
  ];
  $("detail-fields").innerHTML = fields
    .filter(([, v]) => v != null && v !== "")
    .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
  $("transitions").innerHTML = [...(view.events || [])].reverse()
    .map((e) => `<li><span class="muted">${esc(e.at)}</span> ${esc(e.from)} → <b>${esc(e.to)}</b> <span class="muted">${esc(e.reason)}</span></li>`)
    .join("") || `<li class="muted none">none since this dashboard started</li>`;
}

// --- The feed ------------------------------------------------------------
function connect() {
  if (feed) feed.close();
  feed = new EventSource("/events");
  feed.addEventListener("open", () => { setFeed(true); });
  feed.addEventListener("error", async () => {
    setFeed(false);
    // A 401 closes the stream for good: ask for the token.
    if (feed.readyState === EventSource.CLOSED) { feed = null; await checkSession(); }
  });
  feed.addEventListener("snapshot", (e) => {
    const doc = JSON.parse(e.data);
    outlets.clear();
    for (const view of doc.outlets) outlets.set(view.id, view);
    broker = doc.broker;
    queueRender();
  });
  feed.addEventListener("outlet", (e) => { const view = JSON.parse(e.data); outlets.set(view.id, view); queueRender(); });
  feed.addEventListener("removed", (e) => { outlets.delete(JSON.parse(e.data).id); queueRender(); });
  feed.addEventListener("broker", (e) => { broker = JSON.parse(e.data); queueRender(); });
}
function setFeed(live) {
  const f = $("feed");
  f.textContent = live ? "live" : "reconnecting…";
  f.classList.toggle("bad", !live);
}

async function checkSession() {
  const r = await fetch("/api/session", { credentials: "same-origin" }).catch(() => null);
  if (!r) { setTimeout(checkSession, 2000); return; }
  const s = await r.json();
  if (s.token_required && !s.authenticated) { $("login").hidden = false; $("login-token").focus(); return; }
  $("login").hidden = true;
  if (!feed) connect();
}

// --- Actions -------------------------------------------------------------
const ACTION_NAMES = { reconnect: "Reconnect", refresh_qr: "New QR round", pause: "Pause", resume: "Resume", status: "Republish status", pair_code: "Pair by code", logout: "Log out" };

async function act(command, args) {
  const id = selected;
  if (!id) return;
  const box = $("response");
  box.hidden = false;
  box.className = "";
  box.dataset.command = command;
  box.dataset.status = "pending";
  $("response-title").textContent = `${ACTION_NAMES[command]} → ${id}: waiting for the outlet…`;
  $("response-body").textContent = "";
  $("pair-code").hidden = true;
  let status, body;
  try {
    const r = await fetch(`/api/outlets/${encodeURIComponent(id)}/${command}`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Outlet-Dashboard": "1" },
      body: JSON.stringify(args || {}),
    });
    body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    status = r.ok ? body.status || "ok" : "error";
    if (r.status === 401) checkSession();
  } catch (e) {
    status = "error"; body = { error: String(e) };
  }
  box.dataset.status = status;
  box.className = status === "ok" ? "ok" : "error";
  $("response-title").textContent = `${ACTION_NAMES[command]} → ${id}: ${status === "ok" ? "done" : body.error || "refused"}`;
  if (command === "pair_code" && status === "ok" && body.data && body.data.code) {
    $("pair-code").textContent = body.data.code;
    $("pair-code").hidden = false;
  }
  $("response-body").textContent = JSON.stringify(body.data ?? body, null, 2);
}

// --- Wiring --------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  document.querySelector("#outlets thead").addEventListener("click", (e) => {
    const th = e.target.closest("th[data-sort]");
    if (!th) return;
    if (sortKey === th.dataset.sort) sortDir = -sortDir; else { sortKey = th.dataset.sort; sortDir = 1; }
    render();
  });
  // mousedown, not click: the rows are rebuilt every second, and a click
  // whose row was replaced between press and release never fires.
  document.querySelector("#outlets tbody").addEventListener("mousedown", (e) => {
    if (e.button !== 0) return;
    const tr = e.target.closest("tr[data-outlet]");
    if (!tr) return;
    if (selected !== tr.dataset.outlet) $("response").hidden = true;
    selected = tr.dataset.outlet;
    render();
  });
  $("detail-close").addEventListener("click", () => { selected = null; render(); });
  $("filter").addEventListener("input", (e) => { filterText = e.target.value.trim().toLowerCase(); render(); });
  $("show").addEventListener("change", (e) => { show = e.target.value; render(); });
  for (const c of document.querySelectorAll(".card")) {
    c.addEventListener("click", () => { show = c.dataset.show; $("show").value = show; render(); });
  }
  $("actions").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-action]");
    if (!b || b.closest("form")) return; // pair by code: its form's submit
    const command = b.dataset.action;
    if (command === "logout") {
      if (!confirm(`Log ${selected} out of WhatsApp? The outlet must scan a new QR code to link again.`)) return;
      act("logout", { confirm: true });
      return;
    }
    act(command, {});
  });
  $("pair-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const phone = $("pair-phone").value.trim();
    if (!phone) { $("pair-phone").focus(); return; }
    act("pair_code", { phone });
  });
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await fetch("/api/login", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: $("login-token").value }),
    }).catch(() => null);
    if (r && r.ok) { $("login-error").textContent = ""; $("login-token").value = ""; checkSession(); }
    else if (r && r.status === 429) $("login-error").textContent = `Too many wrong tokens; try again in ${r.headers.get("Retry-After") || "a few"} s.`;
    else $("login-error").textContent = "That is not the token.";
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") { selected = null; render(); } });
  // The clocks ("5 s ago", staleness) move even when nothing arrives.
  setInterval(queueRender, 1000);
  checkSession();
});
