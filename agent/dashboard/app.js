// The durable dashboard: polls this node's /api/status (the cluster, as
// `durable status --json` prints it), /api/node (this node's counters) and
// /api/dead, and renders them. No framework, no build step.
"use strict";

const POLL_MS = 1000;
const HISTORY_MS = 5 * 60 * 1000;
const samples = []; // {t, rate, late, overdue}
let lastNode = null;
let pollCount = 0;

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

function renderDead(resp) {
  fill($("#dead tbody"), (resp.dead_letters || []).map((d) => {
    const tr = document.createElement("tr");
    const a = d.alarm || {};
    [a.class, a.name || a.id, new Date(num(a.scheduled_unix_ms)).toISOString(), ago(d.abandoned_unix_ms), String(a.retry_count || 0), a.last_error || ""].forEach((v) => cell(tr, v));
    return tr;
  }));
}

async function getJSON(path) {
  const resp = await fetch(path, { cache: "no-store" });
  if (!resp.ok) throw new Error(path + ": " + resp.status + " " + (await resp.text()));
  return resp.json();
}

async function poll() {
  try {
    const [st, n] = await Promise.all([getJSON("api/status"), getJSON("api/node")]);
    render(st);
    addSample(n);
    if (pollCount % 5 === 0) renderDead(await getJSON("api/dead"));
    $("#error").hidden = true;
    document.body.dataset.polls = String(++pollCount);
  } catch (e) {
    $("#error").hidden = false;
    $("#error").textContent = String(e.message || e);
  }
  setTimeout(poll, POLL_MS);
}

poll();
