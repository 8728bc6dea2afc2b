// Rendering: the state on screen, at most once per animation frame (the table, the
// counts, the feed, the seq), and the connection's status line. Reads the state and
// the filters, changes neither.

import { STATUSES } from "./contract.js";
import { $, el, setText, visible } from "./dom.js";
import { rowMatches } from "./filters.js";
import { FEED_LENGTH, model, parseTimestamp } from "./state.js";

/** More events than this in one frame: changed rows are highlighted, not flashed. */
const FLASH_LIMIT = 20;
/** Rows rendered at most; the rest are counted ("N more not shown"). */
const MAX_ROWS = 500;

const nodes = {};
let frameRequested = false;
let modelDirty = true;
let agesDirty = false;
/** project id -> {row, tr, time, ageText} for the rows on screen. */
let rendered = new Map();
let renderedOrder = [];
let renderedFeedVersion = -1;
let eventsAtLastRender = 0;

/** Frames that rendered a change, and what the table shows (read by the page's probe). */
export const stats = {
  renders: 0,
  shown: { matching: 0, total: 0, rows: 0, shown: 0 },
};

export function initRender() {
  [
    "connection", "connection-region", "connection-word", "connection-detail",
    "reconnect-now", "last-seq", "database-name", "lost-hint",
    "status-counts", "projects-body", "shown-count", "more-not-shown", "empty-state",
    "feed", "feed-empty",
  ].forEach(function (id) { nodes[id] = $(id); });
  // One count per status, in the model's order, before the total; each a button that
  // toggles its status in the filter (filters.js listens).
  nodes.counts = { total: nodes["status-counts"].querySelector("[data-count]") };
  var total = nodes["status-counts"].firstElementChild;
  STATUSES.forEach(function (status) {
    var li = el("li", "count " + statusClass(status));
    li.setAttribute("data-status", status);
    var chip = el("button", "count-chip");
    chip.type = "button";
    chip.setAttribute("data-status-filter", status);
    chip.setAttribute("aria-pressed", "false");
    var value = el("span", "count-value", "0");
    value.setAttribute("data-count", "");
    chip.append(el("span", "count-label", status), " ", value);
    li.appendChild(chip);
    nodes["status-counts"].insertBefore(li, total);
    nodes.counts[status] = value;
  });
}

/** The database's name in the header (its file's name), the server's address beside it. */
export function showDatabaseName(name) {
  setText(nodes["database-name"], name);
  nodes["database-name"].title = "served at " + (location.host || "this page's server");
}

function relativeTime(ms) {
  if (!(ms >= 1000)) return "just now";
  var seconds = ms / 1000;
  if (seconds >= 86400) return Math.floor(seconds / 86400) + "d ago";
  if (seconds >= 3600) return Math.floor(seconds / 3600) + "h ago";
  if (seconds >= 60) return Math.floor(seconds / 60) + "m ago";
  return Math.floor(seconds) + "s ago";
}

function statusClass(status) {
  return STATUSES.indexOf(status) >= 0 ? "status-" + status : "status-other";
}

function pad(number) {
  return number < 10 ? "0" + number : String(number);
}

// ---- the connection

/**
 * The connection's state; `lost`: no server has answered here for a while (one that
 * restarted elsewhere is found with `projctl open`, which the hint says).
 */
export function showConnection(state, retryAt, lost) {
  if (nodes["lost-hint"].hidden === !!lost) nodes["lost-hint"].hidden = !lost;
  var word = state === "connecting" ? "connecting\u2026" : state;
  var detail = "";
  if (state === "reconnecting") {
    detail = " in " + (Math.max(0, retryAt - Date.now()) / 1000).toFixed(1) + " s";
  }
  if (nodes["connection-region"].getAttribute("data-state") !== state) {
    nodes["connection-region"].setAttribute("data-state", state);
  }
  // The live region announces the state word when it changes; the countdown
  // beside it is hidden from assistive technology so it is not read every tick.
  setText(nodes["connection-word"], word);
  setText(nodes["connection-detail"], detail);
  nodes["reconnect-now"].hidden = state === "connected";
}

// ---- the frame

function schedule() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(frame);
}

/** The state or the filters changed: render them in the next frame. */
export function markDirty() {
  modelDirty = true;
  schedule();
}

/** Time passed: refresh the rows' ages in the next frame. */
export function markAges() {
  agesDirty = true;
  schedule();
}

function frame() {
  frameRequested = false;
  var now = Date.now();
  if (modelDirty) {
    modelDirty = false;
    agesDirty = false;
    stats.renders++;
    renderTable(now);
    renderCounts();
    renderFeed();
    if (model.lastSeq !== null) {
      nodes["last-seq"].textContent = String(model.lastSeq);
    }
  } else if (agesDirty) {
    agesDirty = false;
    refreshAges(now);
  }
  // Only now, with the DOM showing it, does the seq count as on screen.
  if (model.lastSeq !== null && document.body.dataset.lastSeq !== String(model.lastSeq)) {
    document.body.dataset.lastSeq = String(model.lastSeq);
  }
}

// ---- the table

function buildCells(tr, row, now, calm) {
  var project = row.project;
  var changed = {};
  if (row.fresh && row.change === "updated") {
    row.fields.forEach(function (field) { changed[field] = true; });
  }
  function cell(field, className, value) {
    var td = el("td", className + (changed[field] ? (calm ? " cell-changed flash" : " cell-changed") : ""));
    td.setAttribute("role", "cell");  // the grid rows' CSS drops the implicit one
    td.setAttribute("data-field", field);
    if (value !== undefined) td.textContent = visible(value);
    return td;
  }
  var idCell = cell("project_id", "col-id", project.project_id);
  var nameCell = cell("name", "col-name", project.name);
  var typeCell = cell("type", "col-type", project.type);
  var statusCell = cell("status", "col-status");
  statusCell.appendChild(el("span", "pill " + statusClass(project.status), project.status));
  var ownerCell = cell("owner_id", "col-owner", project.owner_id);
  var ageCell = cell("updated_at", "col-updated");
  var time = el("time", "", relativeTime(now - row.updatedMs));
  if (project.updated_at) {
    time.setAttribute("datetime", project.updated_at + "Z");
    time.setAttribute("title", project.updated_at.replace("T", " ") + " UTC");
  }
  ageCell.appendChild(time);
  var changeCell = cell("last_change", "col-change");
  var label = "";
  if (row.change === "new") label = row.fresh ? "new" : "created";
  else if (row.change === "updated") label = "updated " + row.fields.join(", ");
  else if (row.change === "deleted") label = "deleted";
  else if (row.change === "emitted") label = row.eventType + (row.summary ? " " + row.summary : "");
  if (label) {
    changeCell.appendChild(el(
      "span", "change change-" + row.change + (row.fresh ? " badge badge-" + row.change : ""), label
    ));
  }
  tr.replaceChildren(idCell, nameCell, typeCell, statusCell, ownerCell, ageCell, changeCell);
  var classes = "row";
  if (row.change === "deleted") classes += " row-deleted";
  else if (row.fresh && row.change === "new") classes += calm ? " row-new flash" : " row-new";
  else if (row.fresh && row.change === "updated") classes += " row-updated";
  else if (row.fresh && row.change === "emitted") classes += " row-emitted";
  tr.className = classes;
  return { time: time, ageText: time.textContent };
}

function renderTable(now) {
  // Rows changed in a burst are highlighted without the animated flash.
  var calm = model.events - eventsAtLastRender <= FLASH_LIMIT;
  eventsAtLastRender = model.events;
  var rows = Array.from(model.rows.values());
  var shown = [];
  var matchingLive = 0;
  var hidden = 0;
  for (var i = rows.length - 1; i >= 0; i--) {
    var row = rows[i];
    if (!rowMatches(row)) continue;
    if (row.change !== "deleted") matchingLive++;
    if (shown.length < MAX_ROWS) shown.push(row);
    else hidden++;
  }
  var next = new Map();
  var order = [];
  var shownLive = 0;
  for (var j = 0; j < shown.length; j++) {
    var r = shown[j];
    if (r.change !== "deleted") shownLive++;
    var entry = rendered.get(r.id);
    if (!entry) {
      var tr = document.createElement("tr");
      tr.setAttribute("role", "row");
      tr.setAttribute("data-project-id", r.id);
      tr.tabIndex = 0; // a row opens its detail panel (detail.js), by keyboard too
      entry = { row: null, tr: tr, time: null, ageText: "" };
    }
    if (entry.row !== r) {
      var built = buildCells(entry.tr, r, now, calm);
      entry.row = r;
      entry.time = built.time;
      entry.ageText = built.ageText;
    } else {
      updateAge(entry, now);
    }
    next.set(r.id, entry);
    order.push(entry.tr);
  }
  placeRows(order, next);
  rendered = next;
  renderedOrder = order;

  var total = model.projects.size;
  stats.shown = { matching: matchingLive, total: total, rows: shown.length, shown: shownLive };
  setText(nodes["shown-count"], shownLive + " of " + total + " shown");
  var more = nodes["more-not-shown"];
  if (hidden) {
    setText(more, hidden + " more not shown (the least recently changed" +
      (matchingLive < total ? " of those matching" : "") + "); narrow the filters to see them");
    more.hidden = false;
  } else more.hidden = true;
  var empty = nodes["empty-state"];
  if (shown.length) empty.hidden = true;
  else {
    empty.hidden = false;
    setText(empty, !model.loaded ? "Waiting for the server\u2026"
      : total ? "No project matches the filters." : "No projects yet.");
  }
}

/**
 * Puts the rows in order with as few DOM moves as possible: a burst usually
 * moves a few rows to the top, and only those are reinserted (and restyled).
 */
function placeRows(order, next) {
  var body = nodes["projects-body"];
  for (var i = 0; i < renderedOrder.length; i++) {
    var old = renderedOrder[i];
    var kept = next.get(old.getAttribute("data-project-id"));
    if (!kept || kept.tr !== old) body.removeChild(old);
  }
  var cursor = body.firstChild;
  for (var k = 0; k < order.length; k++) {
    var tr = order[k];
    if (tr === cursor) cursor = cursor.nextSibling;
    else body.insertBefore(tr, cursor);
  }
  while (cursor) {
    var after = cursor.nextSibling;
    body.removeChild(cursor);
    cursor = after;
  }
}

function updateAge(entry, now) {
  var age = relativeTime(now - entry.row.updatedMs);
  if (age !== entry.ageText) {
    entry.ageText = age;
    entry.time.textContent = age;
  }
}

function refreshAges(now) {
  rendered.forEach(function (entry) { updateAge(entry, now); });
}

// ---- counts and feed

function renderCounts() {
  STATUSES.forEach(function (status) {
    setText(nodes.counts[status], String(model.counts.get(status) || 0));
  });
  setText(nodes.counts.total, String(model.projects.size));
}

export function formatTime(timestamp) {
  var ms = parseTimestamp(timestamp);
  if (isNaN(ms)) return "";
  var date = new Date(ms);
  return pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
}

function renderFeed() {
  if (renderedFeedVersion === model.feedVersion) return;
  renderedFeedVersion = model.feedVersion;
  var fragment = document.createDocumentFragment();
  var feed = model.feed;
  for (var i = feed.length - 1, n = 0; i >= 0 && n < FEED_LENGTH; i--, n++) {
    var entry = feed[i];
    var kind = entry.emitted ? "emitted" : entry.type.replace(/^project_/, "");
    var li = el("li", "feed-item feed-" + kind);
    if (entry.seq !== null) li.setAttribute("data-seq", String(entry.seq));
    li.setAttribute("data-event-type", entry.type);
    li.appendChild(el("span", "feed-seq", entry.seq === null ? "" : "#" + entry.seq));
    li.appendChild(el("span", "feed-type", entry.type));
    var what = el("span", "feed-project");
    if (entry.id) what.appendChild(el("span", "feed-id", entry.id));
    if (entry.name) what.appendChild(el("span", "feed-name", entry.name));
    if (entry.fields.length) what.appendChild(el("span", "feed-fields", entry.fields.join(", ")));
    if (entry.detail) what.appendChild(el("span", "feed-detail", entry.detail));
    li.appendChild(what);
    var when = formatTime(entry.timestamp);
    if (when) {
      var time = el("time", "feed-time", when);
      time.setAttribute("datetime", entry.timestamp + "Z");
      li.appendChild(time);
    }
    fragment.appendChild(li);
  }
  nodes.feed.replaceChildren(fragment);
  nodes["feed-empty"].hidden = feed.length > 0;
}
