// The live page of `sockscope web`: it holds what the server sent and applies each delta.
// Every text from the host (paths, process names) goes in through textContent, never as HTML.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const KEPT_LOG = 300;
const KEPT_POINTS = 300;
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
const ROW_COLUMNS = [
  ["netid", "Netid"], ["state", "State"], ["recv_q", "Recv-Q", true], ["send_q", "Send-Q", true],
  ["local", "Local"], ["peer", "Peer"], ["process", "Process"], ["tx", "Sent/s", true], ["rx", "Recv/s", true],
];
const GROUP_COLUMNS = [["group", "Group"], ["count", "Sockets", true], ["tx", "Sent/s", true], ["rx", "Recv/s", true]];

const state = {
  view: { filter: "", sort: "state", descending: false, group: "", page: 0, size: 100 },
  rows: new Map(), order: [], mode: "rows",
  listeners: new Map(), listenerOrder: [],
  edges: new Map(), edgeOrder: [],
  points: [], actions: false, pages: 1, socket: null, retry: 500,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function endText(end) {
  if (!end) return "";
  if ("address" in end) {
    const host = end.address.includes(":") ? `[${end.address}]` : end.address;
    return `${host}:${end.port === 0 ? "*" : end.port}`;
  }
  if ("path" in end) return end.path === null ? "*" : end.path;
  return Object.values(end).join(":");
}

function rate(value) {
  if (!value) return "";
  const units = ["B", "kB", "MB", "GB"];
  let shown = value, unit = 0;
  while (shown >= 1000 && unit < units.length - 1) { shown /= 1000; unit += 1; }
  return `${shown.toFixed(shown < 10 && unit ? 1 : 0)} ${units[unit]}`;
}

// A part of a delta: {upsert: [rows], remove: [ids], order: [ids]} applied to a map and its order.
function apply(part, rows, order) {
  for (const id of part.remove || []) rows.delete(id);
  for (const row of part.upsert || []) rows.set(row.id, row);
  return part.order || order.filter((id) => rows.has(id));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  state.socket = socket;
  socket.onopen = () => { state.retry = 500; setStatus("live", "live"); };
  socket.onmessage = (event) => receive(JSON.parse(event.data));
  socket.onclose = () => {
    setStatus("lost", "disconnected: reconnecting…");
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 10000);
  };
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(message));
}

function setStatus(cls, text) {
  const status = $("status");
  status.className = `status ${cls}`;
  status.textContent = text;
}

function receive(message) {
  if (message.hello) {
    state.rows.clear(); state.order = []; state.listeners.clear(); state.listenerOrder = [];
    state.edges.clear(); state.edgeOrder = []; state.points = [];
    state.actions = message.hello.actions;
    const view = state.view;
    if (view.filter || view.group || view.sort !== "state" || view.descending || view.page) send({ view });
  }
  if (message.notes) showNotes(message.notes);
  if (message.hello) showNotes(message.hello.notes || []);
  if (message.error !== undefined) showError(message);
  if (message.accepted) showError(null);
  if (message.done) flash(message.done);
  if (message.table) {
    if (message.table.reset) { state.mode = message.table.reset; state.rows.clear(); state.order = []; }
    state.order = apply(message.table, state.rows, state.order);
    drawTable();
  }
  if (message.listeners) {
    state.listenerOrder = apply(message.listeners, state.listeners, state.listenerOrder);
    drawListeners();
  }
  if (message.map) {
    state.edgeOrder = apply(message.map, state.edges, state.edgeOrder);
    drawMap();
  }
  if (message.counts) drawCounts(message.counts);
  if (message.events) addEvents(message.events);
  if (message.rates) {
    state.points.push(...message.rates);
    if (state.points.length > KEPT_POINTS) state.points.splice(0, state.points.length - KEPT_POINTS);
    drawChart();
  }
}

function showNotes(notes) {
  const box = $("notes");
  box.textContent = notes.join(" · ");
  box.hidden = notes.length === 0;
}

function showError(message) {
  const box = $("error");
  box.hidden = !message;
  box.textContent = message ? message.error : "";
  $("filter").classList.toggle("bad", Boolean(message && message.field === "filter"));
}

function flash(text) {
  const box = $("done");
  box.textContent = text;
  box.hidden = false;
  setTimeout(() => { box.hidden = true; }, 8000);
}

function drawCounts(counts) {
  state.pages = counts.pages;
  $("counts").textContent = `${counts.sockets} sockets · ${counts.shown} match · ${counts.listeners} listening`;
  $("page").textContent = `${counts.page + 1} / ${counts.pages}`;
  $("listener-count").textContent = counts.listeners > state.listeners.size ? `(${state.listeners.size} of ${counts.listeners})` : "";
}

function drawHead() {
  const grouped = state.mode !== "rows";
  const row = document.querySelector("#connections thead tr");
  row.replaceChildren();
  for (const [key, title, numeric] of grouped ? GROUP_COLUMNS : ROW_COLUMNS) {
    const cell = el("th", title, "sortable");
    const sortKey = key === "group" || key === "count" ? "state" : key;
    if (state.view.sort === sortKey && (!grouped || key !== "group")) cell.classList.add("sorted");
    if (state.view.descending) cell.classList.add("down");
    if (numeric) cell.classList.add("num");
    cell.dataset.sort = sortKey;
    row.append(cell);
  }
  if (state.actions && !grouped) row.append(el("th", ""));
}

function drawTable() {
  drawHead();
  const body = document.querySelector("#connections tbody");
  const fresh = document.createDocumentFragment();
  const grouped = state.mode !== "rows";
  for (const id of state.order) {
    const row = state.rows.get(id);
    if (!row) continue;
    const line = el("tr");
    line.dataset.id = id;
    if (grouped) {
      line.append(el("td", row.group), el("td", row.count, "num"), el("td", rate(row.tx_bps), "num"), el("td", rate(row.rx_bps), "num"));
    } else {
      line.append(el("td", row.netid), el("td", row.state), el("td", row.recv_q, "num"), el("td", row.send_q, "num"),
        el("td", endText(row.local), "local"), el("td", endText(row.peer), "peer"), el("td", row.process),
        el("td", rate(row.tx_bps), "num"), el("td", rate(row.rx_bps), "num"));
      if (state.actions) line.append(actionCell(row, "close", `close ${row.netid} ${endText(row.local)} → ${endText(row.peer)}?`));
    }
    fresh.append(line);
  }
  body.replaceChildren(fresh);
}

function actionCell(row, action, question) {
  const cell = el("td");
  if (action === "close" && !["tcp", "udp"].includes(row.netid)) return cell;
  const button = el("button", action, "act");
  button.type = "button";
  button.addEventListener("click", () => { if (confirm(question)) send({ action, id: row.id }); });
  cell.append(button);
  return cell;
}

function drawListeners() {
  const body = document.querySelector("#listeners tbody");
  const fresh = document.createDocumentFragment();
  for (const id of state.listenerOrder) {
    const row = state.listeners.get(id);
    const line = el("tr");
    line.dataset.id = id;
    const bar = el("span", null, "bar");
    const fill = el("i");
    const share = row.send_q > 0 ? Math.min(row.recv_q / row.send_q, 1) : 0;
    fill.style.width = `${Math.round(share * 100)}%`;
    if (share >= 1) bar.classList.add("full");
    bar.append(fill);
    bar.title = `${row.recv_q} waiting of ${row.send_q}`;
    const queue = el("td");
    queue.append(bar, document.createTextNode(` ${row.recv_q}/${row.send_q}`));
    line.append(el("td", row.netid), el("td", endText(row.local), "local"), el("td", row.process), queue);
    line.append(state.actions ? actionCell(row, "kill", `stop ${row.process}, listening on ${endText(row.local)}?`) : el("td"));
    fresh.append(line);
  }
  body.replaceChildren(fresh);
}

function addEvents(events) {
  const log = $("log");
  for (const event of events) {
    const sock = event.socket;
    const when = new Date(event.time * 1000).toLocaleTimeString();
    if (event.kind === "lost") {
      log.prepend(el("li", `${when} ${event.lost} close event(s) lost: the kernel dropped them (those closes show at the next refresh)`, "lost"));
      continue;
    }
    const held = event.kind === "close" && event.seconds !== null ? ` after ${event.seconds.toFixed(1)} s` : "";
    const moved = event.bytes ? ` ${event.bytes[0]} B sent, ${event.bytes[1]} B received` : "";
    const text = `${when} ${event.kind} ${sock.netid} ${endText(sock.local)} → ${endText(sock.peer)} ${event.process}${held}${moved}`;
    log.prepend(el("li", text, event.kind));
  }
  while (log.children.length > KEPT_LOG) log.lastElementChild.remove();
}

function drawChart() {
  const canvas = $("chart");
  const draw = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, points = state.points;
  draw.clearRect(0, 0, width, height);
  const totals = new Map();
  for (const point of points) {
    for (const [name, [sent, received]] of Object.entries(point.p)) totals.set(name, (totals.get(name) || 0) + sent + received);
  }
  const names = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, COLOURS.length).map(([name]) => name);
  let top = 1;
  for (const point of points) for (const name of names) { const pair = point.p[name]; if (pair) top = Math.max(top, pair[0] + pair[1]); }
  draw.fillStyle = "#6b7280";
  draw.font = "11px monospace";
  draw.fillText(`${rate(top) || "0 B"}/s`, 4, 12);
  const step = width / Math.max(points.length - 1, 60);  // a fresh page fills from the right
  const start = width - step * (points.length - 1);
  names.forEach((name, index) => {
    draw.strokeStyle = COLOURS[index];
    draw.beginPath();
    points.forEach((point, at) => {
      const pair = point.p[name];
      const y = height - 4 - ((pair ? pair[0] + pair[1] : 0) / top) * (height - 20);
      if (at === 0) draw.moveTo(start, y); else draw.lineTo(start + at * step, y);
    });
    draw.stroke();
  });
  const legend = $("legend");
  legend.replaceChildren(...names.map((name, index) => {
    const item = el("li", name);
    const swatch = el("i");
    swatch.style.background = COLOURS[index];
    item.prepend(swatch);
    return item;
  }));
}

function drawMap() {
  const svg = $("map");
  const ns = "http://www.w3.org/2000/svg";
  const edges = state.edgeOrder.map((id) => state.edges.get(id));
  const left = [...new Set(edges.map((edge) => edge.process))];
  const right = [...new Set(edges.map((edge) => edge.remote))];
  const rowHeight = 16, height = Math.max(left.length, right.length, 1) * rowHeight + 8, width = svg.clientWidth || 640;
  svg.setAttribute("height", String(height));
  const y = (index) => 12 + index * rowHeight;
  const parts = [];
  for (const edge of edges) {
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", String(width * 0.38)); line.setAttribute("y1", String(y(left.indexOf(edge.process)) - 4));
    line.setAttribute("x2", String(width * 0.62)); line.setAttribute("y2", String(y(right.indexOf(edge.remote)) - 4));
    line.setAttribute("stroke-width", String(1 + Math.log2(edge.count)));
    const title = document.createElementNS(ns, "title");
    title.textContent = `${edge.process} → ${edge.remote}: ${edge.count} connection(s)`;
    line.append(title);
    parts.push(line);
  }
  const label = (text, x, index, anchor) => {
    const node = document.createElementNS(ns, "text");
    node.setAttribute("x", String(x)); node.setAttribute("y", String(y(index)));
    node.setAttribute("text-anchor", anchor);
    node.textContent = text;
    return node;
  };
  left.forEach((name, index) => parts.push(label(name, width * 0.37, index, "end")));
  right.forEach((name, index) => parts.push(label(name, width * 0.63, index, "start")));
  svg.replaceChildren(...parts);
}

function ask(change) {
  Object.assign(state.view, change);
  send({ view: state.view });
}

function setUp() {
  let waiting = null;
  const filter = $("filter");
  filter.addEventListener("input", () => {
    clearTimeout(waiting);
    waiting = setTimeout(() => ask({ filter: filter.value, page: 0 }), 400);
  });
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(waiting);
    ask({ filter: filter.value, page: 0 });
  });
  $("group").addEventListener("change", (event) => ask({ group: event.target.value, page: 0 }));
  $("prev").addEventListener("click", () => { if (state.view.page > 0) ask({ page: state.view.page - 1 }); });
  $("next").addEventListener("click", () => { if (state.view.page + 1 < state.pages) ask({ page: state.view.page + 1 }); });
  document.querySelector("#connections thead").addEventListener("click", (event) => {
    const sort = event.target.dataset && event.target.dataset.sort;
    if (!sort) return;
    const descending = state.view.sort === sort ? !state.view.descending : ["tx", "rx", "recv_q", "send_q"].includes(sort);
    ask({ sort, descending, page: 0 });
  });
  drawHead();
  connect();
}

document.addEventListener("DOMContentLoaded", setUp);
