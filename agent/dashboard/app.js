// The durable dashboard: polls this node's /api/status (the cluster, as
// `durable status --json` prints it), /api/node (this node's counters) and
// /api/dead, and renders them; a dead letter's button POSTs /api/requeue.
// On a secured node every /api/ call carries the token the operator
// pasted (kept in sessionStorage: this tab only, gone when it closes).
// No framework, no build step.
"use strict";

const POLL_MS = 1000;
const HISTORY_MS = 5 * 60 * 1000;
const TOKEN_KEY = "durable-token";
const samples = []; // {t, rate, late, overdue}
let lastNode = null;
let pollCount = 0;
let deadStale = true; // fetch the dead letters at the next poll
let needToken = false; // the login form is up: polling waits for it
const notes = new Map(); // dead letter key → {text, error}: survives re-renders

const num = (v) => Number(v || 0); // 64-bit integers arrive as strings
const $ = (sel) => document.querySelector(sel);

function ago(ms) {
  ms = num(ms);
  if (!ms) return "-";
  return secs(Date.now() - ms) + " ago";
}

function secs(ms) {
  const s = Math.max(0, Math.round(num(ms) / 1000));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  return Math.round(s / 3600) + "h";
}

// dcState says where a data center stands, as `durable status` does.
function dcState(d) {
  const since = (ms) => (num(ms) ? " " + secs(Date.now() - num(ms)) : "");
  const live = num(d.live_nodes), away = num(d.away);
  if (live === 0 && away > 0 && num(d.adoption_in_ms) === 0) return "down" + since(d.down_since_unix_ms) + "; adopted by " + (d.adopted_by || []).join(",");
  if (live === 0 && num(d.adoption_in_ms) > 0) return "down" + since(d.down_since_unix_ms) + "; adopted in " + secs(d.adoption_in_ms);
  if (live === 0) return "down" + since(d.down_since_unix_ms);
  if (away > 0 && num(d.home_in_ms) > 0) return "back" + since(d.up_since_unix_ms) + "; " + away + " partitions go home in " + secs(d.home_in_ms);
  if (away > 0) return "back" + since(d.up_since_unix_ms) + "; " + away + " partitions going home";
  return "up";
}

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text;
  tr.appendChild(td);
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// A stable color per node id (FNV-1a: ids that differ in one character
// get hues far apart).
function color(id) {
  let h = 0x811c9dc5;
  for (const c of id) h = Math.imul(h ^ c.charCodeAt(0), 16777619);
  return "hsl(" + ((h >>> 0) % 360) + ", 62%, 52%)";
}

function render(st) {
  $("#summary").textContent = st.cluster_prefix + " · " + st.partition_count + " partitions · " +
    num(st.pending_alarms) + " pending alarms · " + num(st.dead_letters) + " dead letters · answered by " + st.answered_by;
  $("#answering").textContent = st.answered_by;

  fill($("#dcs tbody"), (st.data_centers || []).map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.dc = d.dc;
    const state = dcState(d);
    tr.className = state.startsWith("down") ? "down" : "";
    [d.dc, d.leader || "(none)", d.leader && num(d.term_number) ? String(num(d.term_number)) : "-", ago(d.elected_unix_ms),
      String(num(d.live_nodes)), String(num(d.partitions)), String(num(d.adopted)), state].forEach((v) => cell(tr, v));
    return tr;
  }));

  const pending = {};
  let unowned = 0;
  for (const p of st.partitions || []) {
    pending[p.owner] = (pending[p.owner] || 0) + num(p.pending_alarms);
    if (!p.owner) unowned++;
  }
  const rows = (st.nodes || []).map((n) => {
    const tr = document.createElement("tr");
    tr.dataset.node = n.id;
    tr.className = n.draining ? "draining" : "up";
    [n.id, n.dc, n.address, n.draining ? "draining" : "up", String((n.partitions || []).length), String(pending[n.id] || 0)].forEach((v) => cell(tr, v));
    return tr;
  });
  for (const l of st.lost_nodes || []) {
    const tr = document.createElement("tr");
    tr.dataset.node = l.id;
    tr.className = "lost";
    let state = num(l.lost_unix_ms) ? "lost " + ago(l.lost_unix_ms) : "lost";
    const moved = Object.entries(l.moved_to || {}).sort().map(([n, c]) => n + " (" + c + ")").join(", ");
    if (moved) state += ", partitions moved to " + moved;
    if (num(l.waiting)) state += ", " + num(l.waiting) + " partitions wait for adoption";
    [l.id, l.dc, "-", state, "-", "-"].forEach((v) => cell(tr, v));
    rows.push(tr);
  }
  fill($("#nodes tbody"), rows);

  const grid = $("#partitions");
  const owners = new Set();
  grid.replaceChildren(...(st.partitions || []).map((p) => {
    const div = document.createElement("div");
    const moving = !p.owner || p.owner !== p.assigned_node;
    div.className = (moving ? "moving" : "") + (p.managed_by_dc && p.managed_by_dc !== p.home_dc ? " adopted" : "");
    if (p.owner) {
      div.style.background = color(p.owner);
      owners.add(p.owner);
    }
    div.dataset.owner = p.owner || "";
    div.title = "partition " + p.partition + ": owner " + (p.owner || "none") + ", assigned " + (p.assigned_node || "-") +
      ", home " + p.home_dc + ", managed by " + (p.managed_by_dc || "-") + ", token " + num(p.token) + ", " + num(p.pending_alarms) + " alarms";
    return div;
  }));
  $("#legend").replaceChildren(...[...owners].sort().map((o) => {
    const s = document.createElement("span");
    const i = document.createElement("i");
    i.style.background = color(o);
    s.append(i, o);
    return s;
  }), Object.assign(document.createElement("span"), { textContent: unowned ? unowned + " moving (striped)" : "outlined: adopted" }));

  const changes = [];
  for (const l of st.lost_nodes || []) {
    const moved = Object.entries(l.moved_to || {}).sort().map(([n, c]) => c + " to " + n).join(", ");
    changes.push([num(l.lost_unix_ms), l.id + " (" + l.dc + ") lost " + ago(l.lost_unix_ms) + (moved ? ": partitions moved, " + moved : "")]);
  }
  for (const d of st.data_centers || []) {
    if (num(d.last_reassignment_unix_ms)) changes.push([num(d.last_reassignment_unix_ms), d.dc + "'s leader last reassigned a partition " + ago(d.last_reassignment_unix_ms)]);
    if (num(d.elected_unix_ms)) changes.push([num(d.elected_unix_ms), d.leader + " elected leader of " + d.dc + " (term " + num(d.term_number) + ") " + ago(d.elected_unix_ms)]);
  }
  changes.sort((a, b) => b[0] - a[0]);
  $("#changes").replaceChildren(...changes.slice(0, 12).map(([, text]) => Object.assign(document.createElement("li"), { textContent: text })));
}

function chart(id, key) {
  const svg = $(id);
  const now = Date.now();
  const pts = samples.filter((s) => s[key] !== null);
  const max = Math.max(1, ...pts.map((s) => s[key]));
  const coords = pts.map((s) => {
    const x = 300 - ((now - s.t) / HISTORY_MS) * 300;
    const y = 78 - (s[key] / max) * 74;
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", coords.join(" "));
  svg.replaceChildren(line);
  const last = pts.length ? pts[pts.length - 1][key] : null;
  $(id.replace("chart", "now")).textContent = last === null ? "-" : (Math.round(last * 10) / 10) + " (max " + Math.round(max * 10) / 10 + ")";
}

function addSample(n) {
  if (lastNode) {
    const dt = (n.time_unix_ms - lastNode.time_unix_ms) / 1000;
    const runs = n.alarm_runs - lastNode.alarm_runs;
    const count = n.alarm_lateness_count - lastNode.alarm_lateness_count;
    samples.push({
      t: n.time_unix_ms,
      rate: dt > 0 ? runs / dt : 0,
      late: count > 0 ? ((n.alarm_lateness_seconds_sum - lastNode.alarm_lateness_seconds_sum) / count) * 1000 : null,
      overdue: n.alarms_overdue,
    });
    while (samples.length && samples[0].t < n.time_unix_ms - HISTORY_MS) samples.shift();
  }
  lastNode = n;
  chart("#chart-rate", "rate");
  chart("#chart-late", "late");
  chart("#chart-overdue", "overdue");
}

const deadKey = (a) => a.class + "/" + a.id + "/" + a.scheduled_unix_ms;

function renderDead(resp) {
  fill($("#dead tbody"), (resp.dead_letters || []).map((d) => {
    const tr = document.createElement("tr");
    const a = d.alarm || {};
    tr.dataset.class = a.class;
    tr.dataset.object = a.name || a.id;
    [a.class, a.name || a.id, new Date(num(a.scheduled_unix_ms)).toISOString(), ago(d.abandoned_unix_ms), String(a.retry_count || 0), a.last_error || ""].forEach((v) => cell(tr, v));
    const td = document.createElement("td");
    td.className = "act";
    const button = Object.assign(document.createElement("button"), { type: "button", textContent: "requeue" });
    button.title = "set this alarm again, due now, from retry 0";
    const note = Object.assign(document.createElement("span"), { className: "note" });
    const n = notes.get(deadKey(a));
    if (n) {
      note.textContent = n.text;
      note.classList.toggle("error", n.error);
    }
    button.addEventListener("click", () => requeue(a, tr, button, note));
    td.append(button, note);
    tr.appendChild(td);
    return tr;
  }));
}

// requeue asks the node to requeue one dead letter (Admin.RequeueDeadLetter
// behind /api/requeue): its row goes on success; a refusal (an alarm
// pending, the dead letter already gone, a token without the admin role)
// is shown next to it.
async function requeue(a, tr, button, note) {
  const key = deadKey(a);
  const show = (text, error) => {
    notes.set(key, { text, error });
    note.textContent = text;
    note.classList.toggle("error", error);
  };
  button.disabled = true;
  show("requeueing…", false);
  try {
    const resp = await api("api/requeue", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      // By name when it has one: the alarm set again keeps it (the
      // object's State.Name), as the dead letter did.
      body: JSON.stringify({ class: a.class, object: a.name ? { name: a.name } : { id: a.id }, scheduled_unix_ms: a.scheduled_unix_ms }),
    });
    if (resp.ok) {
      notes.delete(key);
      tr.remove();
      deadStale = true;
      return;
    }
    // The handler answers {"error", "reason"}; the auth check in front of
    // it answers plain text.
    const text = (await resp.text()).trim();
    let out;
    try {
      out = JSON.parse(text);
    } catch (_) {
      out = null;
    }
    if (resp.status === 403 && out === null) {
      show("this token may not requeue dead letters: it needs the admin role (" + text + ")", true);
    } else if (out === null) {
      show("requeue failed: " + resp.status + " " + text, true);
    } else {
      show((out.reason ? out.reason + ": " : "") + (out.error || resp.status + " " + resp.statusText), true);
    }
  } catch (e) {
    show(e instanceof NeedToken ? "paste a token above, then requeue again" : "requeue failed: " + (e.message || e), true);
  }
  button.disabled = false;
}

// NeedToken: the node answered 401; the login form is up.
class NeedToken extends Error {}

// api fetches path with the stored token, if any, as a bearer token. A
// 401 puts up the login form and throws NeedToken (unless the token was
// replaced meanwhile: then the caller just tries again later).
async function api(path, init = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = new Headers(init.headers);
  if (token) headers.set("Authorization", "Bearer " + token);
  const resp = await fetch(path, { cache: "no-store", ...init, headers });
  if (resp.status === 401) {
    const why = (await resp.text()).trim();
    if (token === sessionStorage.getItem(TOKEN_KEY)) {
      askToken(token ? "this token was refused: " + why : "");
    }
    throw new NeedToken(path + ": 401 " + why);
  }
  return resp;
}

async function getJSON(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const resp = await api(path);
  if (resp.status === 403) {
    const why = (await resp.text()).trim();
    if (token === sessionStorage.getItem(TOKEN_KEY)) {
      askToken("this token may not read this node's status: it needs the read role (" + why + ")");
    }
    throw new NeedToken(path + ": 403 " + why);
  }
  if (!resp.ok) throw new Error(path + ": " + resp.status + " " + (await resp.text()));
  return resp.json();
}

function askToken(note) {
  needToken = true;
  $("#login").hidden = false;
  $("#login-note").textContent = note;
  $("#summary").textContent = "waiting for a token";
  $("#error").hidden = true;
  $("#token").focus();
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("#token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token").value = "";
  $("#login").hidden = true;
  $("#forget").hidden = false;
  needToken = false;
  deadStale = true;
  poll();
});

$("#forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  $("#forget").hidden = true;
});
$("#forget").hidden = !sessionStorage.getItem(TOKEN_KEY);

let timer = 0;
let polling = false;

async function poll() {
  clearTimeout(timer);
  if (polling) return; // the poll in flight schedules the next
  polling = true;
  try {
    if (!needToken) {
      const [st, n] = await Promise.all([getJSON("api/status"), getJSON("api/node")]);
      render(st);
      addSample(n);
      if (deadStale || pollCount % 5 === 0) {
        renderDead(await getJSON("api/dead"));
        deadStale = false;
      }
      $("#error").hidden = true;
      document.body.dataset.polls = String(++pollCount);
    }
  } catch (e) {
    if (!(e instanceof NeedToken)) {
      $("#error").hidden = false;
      $("#error").textContent = String(e.message || e);
    }
  } finally {
    polling = false;
  }
  timer = setTimeout(poll, POLL_MS);
}

poll();
