// The dpq console: polls the gateway's JSON API (dpq/console/api.py) and draws the page.
// Plain JavaScript, no library, no build step. Server text is only ever set as textContent.
"use strict";

const TOKEN_KEY = "dpq.console.token";
const WINDOW_MS = 5 * 60 * 1000;  // the rates chart shows the last five minutes
const PRIORITIES = [1, 2, 3, 4, 5];

const state = {
  pollMs: 1500,
  tokenRequired: false,
  lastOk: null,          // Date of the last complete refresh
  history: new Map(),    // queue -> {last: counters sample, rates: [{t, enq, del, ack}]}
  cards: new Map(),      // queue -> its DOM parts
  pending: null,         // an action waiting for the token: () => Promise
};

// ------------------------------------------------------------------ the API

class GatewayDown extends Error {}
class ApiFailure extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, body) {
  const options = { headers: {}, cache: "no-store", signal: AbortSignal.timeout(5000) };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) options.headers.Authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new GatewayDown(String(err && err.message || err));
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    throw new ApiFailure(response.status, (data && data.error) || response.statusText);
  }
  return data;
}

// ------------------------------------------------------------------ helpers

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function age(ms) {
  if (!ms) return "—";
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function rate(value) {
  return value >= 100 ? Math.round(value).toString() : value.toFixed(1);
}

function sum(values) { return values.reduce((a, b) => a + b, 0); }

function clock(date) { return date.toLocaleTimeString(); }

function show(node, text, kind) {
  node.hidden = !text;
  node.textContent = text || "";
  node.className = kind || "";
}

function notice(text, isError) {
  show(document.getElementById("notice"), text, isError ? "error" : "");
}

// ------------------------------------------------------------------ cluster

function drawCluster(info) {
  const leader = info.nodes.find((n) => n.id === info.leader_id);
  document.getElementById("leader").textContent = info.leader_id
    ? "leader: node " + info.leader_id + (leader && leader.address ? " (" + leader.address + ")" : "")
    : "no leader";
  document.getElementById("fingerprint").textContent =
    info.fingerprint ? "cluster " + info.fingerprint : "";
  const rows = info.nodes.map((n) => {
    const healthClass = n.health === "ok" ? "health-ok"
      : n.health === "unreachable" ? "health-unreachable" : "health-catching";
    return el("tr", { class: n.id === info.leader_id ? "leader" : "", "data-node": n.id },
      el("td", { text: String(n.id) }),
      el("td", { text: n.address || "?" }),
      el("td", { text: n.role }),
      el("td", { class: healthClass, text: n.health }),
      el("td", { class: "num", text: String(n.balancer_weight) }),
      el("td", { class: "num", text: n.reachable ? n.cpu_percent.toFixed(0) + " %" : "—" }),
      el("td", { class: "num", text: String(n.ready_depth) }),
      el("td", { class: "num", text: String(n.waiting_consumers) }),
      el("td", { class: "num", text: String(n.behind) }),
      el("td", { class: "num", text: String(n.applied_index) }));
  });
  document.querySelector("#nodes tbody").replaceChildren(...rows);
}

// ------------------------------------------------------------------- queues

function card(name) {
  let parts = state.cards.get(name);
  if (parts) return parts;
  const toggle = el("button", { type: "button", class: "pause-toggle", text: "Pause" });
  toggle.addEventListener("click", () => {
    const paused = parts.root.classList.contains("paused");
    act(paused ? "/api/queues/resume" : "/api/queues/pause", { queue: name },
      paused ? "Resumed " + name : "Paused " + name + " (until resumed)");
  });
  const retryAll = el("button", { type: "button", class: "retry-all", text: "Retry dead" });
  retryAll.addEventListener("click", () =>
    act("/api/dead/retry", { queue: name }, "Retried the dead jobs of " + name));
  const badge = el("span", { class: "paused-badge", text: "paused", hidden: true });
  const empty = el("span", { class: "muted empty", text: "no job left", hidden: true });
  const depth = el("tbody");
  const totals = el("p", { class: "totals" });
  const canvas = el("canvas", { width: 320, height: 130 });
  const legend = el("div", { class: "legend" });
  const root = el("section", { class: "queue", "data-queue": name },
    el("h3", {}, el("span", { class: "name", text: name }), badge, empty,
      el("span", { class: "spacer" }), retryAll, toggle),
    el("div", { class: "queue-body" },
      el("div", {},
        el("table", {},
          el("thead", {}, el("tr", {}, el("th", { text: "priority" }),
            el("th", { class: "num", text: "ready" }), el("th", {}),
            el("th", { class: "num", text: "oldest waiting" }))),
          depth),
        totals),
      el("div", { class: "chart" }, el("span", { class: "muted", text: "jobs/s, last 5 min" }),
        canvas, legend)));
  parts = { root, toggle, retryAll, badge, empty, depth, totals, canvas, legend };
  state.cards.set(name, parts);
  return parts;
}

function sample(q, timeMs) {
  return { t: timeMs, enq: sum(q.enqueued_by_priority), del: sum(q.delivered_by_priority),
           ack: sum(q.acked_by_priority) };
}

function record(q, timeMs) {
  const now = sample(q, timeMs);
  let h = state.history.get(q.queue);
  if (!h) { h = { last: null, rates: [], seen: 0 }; state.history.set(q.queue, h); }
  h.seen = timeMs;
  const prev = h.last;
  h.last = now;
  if (!prev || now.t <= prev.t) return;
  const dt = (now.t - prev.t) / 1000;
  const d = { enq: now.enq - prev.enq, del: now.del - prev.del, ack: now.ack - prev.ack };
  if (d.enq < 0 || d.del < 0 || d.ack < 0) return;  // the answering node restarted: rebase
  h.rates.push({ t: now.t, enq: d.enq / dt, del: d.del / dt, ack: d.ack / dt });
  trim(h.rates, now.t);
}

function trim(rates, nowMs) {
  while (rates.length && rates[0].t < nowMs - WINDOW_MS) rates.shift();
}

function drawChart(parts, rates, nowMs) {
  const canvas = parts.canvas;
  const ratio = window.devicePixelRatio || 1;
  const w = 320, h = 130, pad = { l: 34, r: 6, t: 8, b: 16 };
  if (canvas.width !== w * ratio) { canvas.width = w * ratio; canvas.height = h * ratio; }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const top = Math.max(1, ...rates.map((r) => Math.max(r.enq, r.del, r.ack)));
  const x = (t) => pad.l + (w - pad.l - pad.r) * (1 - (nowMs - t) / WINDOW_MS);
  const y = (v) => h - pad.b - (h - pad.t - pad.b) * (v / top);
  g.strokeStyle = "#dde1e6"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(pad.l, y(0)); g.lineTo(w - pad.r, y(0));
  g.moveTo(pad.l, y(top)); g.lineTo(w - pad.r, y(top)); g.stroke();
  g.fillStyle = "#6b7480"; g.font = "10px system-ui, sans-serif";
  g.textAlign = "right";
  g.fillText(rate(top), pad.l - 4, y(top) + 3);
  g.fillText("0", pad.l - 4, y(0) + 3);
  g.textAlign = "left"; g.fillText("-5 min", pad.l, h - 3);
  g.textAlign = "right"; g.fillText("now", w - pad.r, h - 3);
  const styles = getComputedStyle(document.documentElement);
  for (const key of ["enq", "del", "ack"]) {
    g.strokeStyle = styles.getPropertyValue("--" + key).trim() || "#000";
    g.lineWidth = 1.5;
    g.beginPath();
    rates.forEach((r, i) => (i ? g.lineTo(x(r.t), y(r[key])) : g.moveTo(x(r.t), y(r[key]))));
    g.stroke();
  }
  const last = rates[rates.length - 1] || { enq: 0, del: 0, ack: 0 };
  parts.legend.replaceChildren(
    el("span", { class: "enq", text: "enqueued " + rate(last.enq) }),
    el("span", { class: "del", text: "delivered " + rate(last.del) }),
    el("span", { class: "ack", text: "acked " + rate(last.ack) }));
}

// A queue with no job left drops out of Stats; its card stays (at zero, its chart
// running on) for the chart's window, so a drained queue is seen to drain.
function emptied(name) {
  const zeros = [0, 0, 0, 0, 0];
  return { queue: name, gone: true, ready_by_priority: zeros, oldest_ready_age_ms: zeros,
           delayed: 0, leased: 0, dead: 0, cancelled: 0, paused: false, paused_until_us: 0,
           nacked: 0, expired: 0 };
}

function drawQueues(data) {
  const container = document.getElementById("queues");
  const listed = new Set(data.queues.map((q) => q.queue));
  const queues = [...data.queues];
  for (const [name, h] of state.history) {
    if (!listed.has(name) && h.seen > data.time_ms - WINDOW_MS) queues.push(emptied(name));
  }
  const seen = new Set();
  for (const q of queues) {
    seen.add(q.queue);
    if (q.gone) {
      const h = state.history.get(q.queue);
      h.last = null;  // its counters start over if it comes back
      h.rates.push({ t: data.time_ms, enq: 0, del: 0, ack: 0 });
      trim(h.rates, data.time_ms);
    } else {
      record(q, data.time_ms);
    }
    const parts = card(q.queue);
    parts.root.classList.toggle("paused", q.paused);
    parts.root.classList.toggle("gone", Boolean(q.gone));
    parts.empty.hidden = !q.gone;
    parts.badge.hidden = !q.paused;
    parts.badge.textContent = q.paused_until_us
      ? "paused until " + new Date(q.paused_until_us / 1000).toLocaleTimeString() : "paused";
    parts.toggle.textContent = q.paused ? "Resume" : "Pause";
    parts.retryAll.hidden = !q.dead;
    const ready = sum(q.ready_by_priority);
    const most = Math.max(1, ...q.ready_by_priority);
    parts.depth.replaceChildren(
      ...PRIORITIES.map((p) => {
        const fill = el("span", { class: "bar-fill p" + p });
        fill.style.width = Math.round(100 * q.ready_by_priority[p - 1] / most) + "%";
        return el("tr", { "data-priority": p },
          el("td", { text: String(p) }),
          el("td", { class: "num depth", text: String(q.ready_by_priority[p - 1]) }),
          el("td", { class: "bar" }, fill),
          el("td", { class: "num age", text: age(q.oldest_ready_age_ms[p - 1]) }));
      }),
      el("tr", {}, el("th", { text: "all" }),
        el("th", { class: "num total-ready", text: String(ready) }), el("th", {}),
        el("th", {})));
    parts.totals.textContent = "delayed " + q.delayed + " · leased " + q.leased +
      " · dead " + q.dead + " · cancelled " + q.cancelled + " · nacked " + q.nacked +
      " · expired " + q.expired;
    drawChart(parts, state.history.get(q.queue).rates, data.time_ms);
  }
  for (const [name, parts] of state.cards) {
    if (!seen.has(name)) { parts.root.remove(); state.cards.delete(name); state.history.delete(name); }
  }
  const ordered = [...seen].sort().map((name) => state.cards.get(name).root);
  const current = [...container.children];
  if (ordered.length !== current.length || ordered.some((node, i) => node !== current[i])) {
    container.replaceChildren(...ordered);
  }
  document.getElementById("no-queues").hidden = queues.length > 0;
}

// ---------------------------------------------------------------- dead jobs

function drawDead(data) {
  const rows = data.jobs.map((j) => {
    const retry = el("button", { type: "button", class: "retry", text: "Retry" });
    retry.addEventListener("click", () => act("/api/dead/retry",
      { queue: j.queue, job_ids: [j.job_id] }, "Retried job " + j.job_id));
    const cancel = el("button", { type: "button", class: "cancel", text: "Cancel" });
    cancel.addEventListener("click", () => act("/api/dead/cancel",
      { queue: j.queue, job_ids: [j.job_id] }, "Cancelled job " + j.job_id));
    return el("tr", { class: "dead-job", "data-job-id": j.job_id },
      el("td", { class: "num", text: String(j.job_id) }),
      el("td", { text: j.queue }),
      el("td", { class: "num", text: String(j.priority) }),
      el("td", { class: "num", text: String(j.attempt) }),
      el("td", { class: "error", text: j.last_error || "—" }),
      el("td", {}, retry, " ", cancel));
  });
  document.querySelector("#dead tbody").replaceChildren(...rows);
  document.getElementById("dead").hidden = rows.length === 0;
  document.getElementById("no-dead").hidden = rows.length > 0;
  document.getElementById("dead-count").textContent =
    rows.length ? "(" + rows.length + (data.next_page_token ? "+" : "") + ")" : "";
}

// ------------------------------------------------------------------ actions

async function act(path, body, done) {
  try {
    const result = await api(path, body);
    const detail = result && result.count !== undefined ? " (" + result.count + " job" +
      (result.count === 1 ? "" : "s") + ")" : "";
    notice(done + detail + ".", false);
    refresh();
  } catch (err) {
    if (err instanceof ApiFailure && err.status === 401) {
      state.pending = () => act(path, body, done);
      askToken(err.message);
      return;
    }
    notice((err instanceof GatewayDown ? "The gateway cannot be reached: " : "Refused: ") +
      err.message, true);
  }
}

function askToken(why) {
  const form = document.getElementById("token-form");
  form.hidden = false;
  if (why) notice(why, true);
  document.getElementById("token-input").focus();
}

function setupToken() {
  const form = document.getElementById("token-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    form.hidden = true;
    notice("", false);
    const pending = state.pending;
    state.pending = null;
    if (pending) pending();
    else refresh();
  });
  document.getElementById("token-cancel").addEventListener("click", () => {
    form.hidden = true;
    state.pending = null;
  });
  document.getElementById("token-button").addEventListener("click", () => askToken(""));
}

// ------------------------------------------------------------------ polling

function connection(problem, warning) {
  const banner = document.getElementById("banner");
  const live = document.getElementById("live");
  document.body.classList.toggle("stale", Boolean(problem));
  if (problem) {
    const since = state.lastOk ? " Showing the data of " + clock(state.lastOk) + "." : "";
    show(banner, problem + since, "");
    live.textContent = "unreachable";
    live.className = "pill down";
  } else {
    show(banner, warning || "", "warn");
    live.textContent = "live · " + clock(state.lastOk);
    live.className = "pill live";
  }
}

let refreshing = null;

async function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      const [info, queues, dead] = await Promise.all(
        [api("/api/cluster"), api("/api/queues"), api("/api/dead")]);
      drawCluster(info);
      drawQueues(queues);
      drawDead(dead);
      state.lastOk = new Date();
      connection(null, info.leader_id ? "" : "The cluster has no leader right now: it takes " +
        "no writes until one is elected.");
    } catch (err) {
      if (err instanceof GatewayDown) {
        connection("The gateway at " + location.host + " cannot be reached, so the cluster " +
          "cannot be reached from this page (" + err.message + "). Retrying.");
      } else if (err instanceof ApiFailure && err.status === 401) {
        connection("This console needs the cluster's token to show anything from here.");
        askToken("");
      } else if (err instanceof ApiFailure && err.status === 503) {
        connection("The cluster cannot be reached: " + err.message);
      } else {
        connection("The console's request failed: " + err.message);
      }
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function loop() {
  await refresh();
  setTimeout(loop, state.pollMs);
}

async function start() {
  setupToken();
  try {
    const config = await api("/api/console");
    state.pollMs = config.poll_ms;
    state.tokenRequired = config.token_required;
    document.getElementById("poll-s").textContent = String(config.poll_ms / 1000);
    document.getElementById("token-button").hidden = !config.token_required;
  } catch (err) {
    // the first refresh says what is wrong
  }
  loop();
}

start();
