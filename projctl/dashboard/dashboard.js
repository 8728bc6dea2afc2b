// projctl dashboard: a live view of a project database's lifecycle (and emitted) events.
//
// ES modules, no build step, served as they are under a strict Content-Security-Policy
// (script-src 'self'); this entry module wires them together:
//   contract.js    what the server embeds in the page: fields, statuses, event names, timings
//   state.js       the fold of the feed's messages into projects, rows, counts and the feed
//   connection.js  the lossless feed: snapshot, then resume from the last seq; gaps; backoff
//   render.js      the state on screen, once per animation frame; the connection's status
//   filters.js     the filters: the count chips, the form, the URL that keeps them
//   detail.js      a project's detail panel: every field, its events; writes with a write token
//   rest.js        the REST routes: who the token is, the database, the journal, PATCH
//   token.js       the token: in the tab's memory, never in the URL; its form
//   dom.js         DOM helpers: every value from the server is shown as text
//
// Data flow: WebSocket message -> state (applied at once, in seq order, no duplicates)
// -> one render per animation frame (the table, the feed, the counts, the panel). Once
// the snapshot is in, the journal's last events fill the feed (history, applied to
// nothing: the snapshot holds their effect); the feed stays the only source of changes.

import { createConnection } from "./connection.js";
import { $ } from "./dom.js";
import { detailChanged, initDetail, setJournalWindow, setMayWrite } from "./detail.js";
import { initFilters, readFiltersFromUrl, refreshOptions } from "./filters.js";
import {
  formatTime, initRender, markAges, markDirty, showConnection, showDatabaseName, stats,
} from "./render.js";
import { getJson, journalEvents } from "./rest.js";
import { FEED_LENGTH, expireRows, loadHistory, model } from "./state.js";
import { bindTokenForm, hideTokenForm, showTokenForm, takeTokenFromUrl } from "./token.js";

const TICK_MS = 500;
/** Ages and filter suggestions refresh every this many ticks. */
const SLOW_TICKS = 4;

// A `#token=` leaves the address bar before anything else runs.
takeTokenFromUrl();

let connectedBefore = false;
/** Whether this connection asked the server its database's name and the token's rights. */
let asked = false;

const connection = createConnection({
  changed: function () {
    markDirty();
    detailChanged();
  },
  loaded: function (type) {
    // After the frame that draws the table: the first paint waits for nothing else.
    afterPaint(function () {
      if (type === "snapshot") loadRecentEvents();
      if (!asked) askServer();
    });
  },
  showConnection: function (state, retryAt, lost) {
    showConnection(state, retryAt, lost);
    var connected = state === "connected";
    // Asked once per connection, never before the first snapshot is in: the page's first
    // paint waits for nothing else.
    if (connected && !connectedBefore) asked = false;
    if (connected && !asked && model.loaded) askServer();
    connectedBefore = connected;
  },
  showTokenForm: showTokenForm,
  hideTokenForm: hideTokenForm,
});

function afterPaint(work) {
  requestAnimationFrame(function () { setTimeout(work, 0); });
}

/** The journal's last events before the snapshot: the feed and "last change" start full. */
function loadRecentEvents() {
  var upTo = model.lastSeq;
  if (!upTo) return;
  journalEvents(Math.max(0, upTo - FEED_LENGTH), upTo).then(function (answer) {
    if (loadHistory(answer.events)) markDirty();
  });
}

/** On each connection: the database's name, the journal's size, what the token may do. */
function askServer() {
  asked = true;
  getJson("/api/info").then(function (info) {
    var database = info && info.database;
    var name = database && typeof database.name === "string" ? database.name : "";
    showDatabaseName(name || location.host);
    if (info && info.journal) setJournalWindow(info.journal.events);
  });
  getJson("/api/whoami").then(function (access) {
    setMayWrite(!!access && access.may_write === true);
  });
}

function bindConnection() {
  $("reconnect-now").addEventListener("click", function () { connection.reconnectNow(); });
  bindTokenForm(function () { connection.reconnectNow(); });
  window.addEventListener("hashchange", function () {
    if (takeTokenFromUrl() && connection.tokenChanged()) connection.reconnectNow();
  });
  window.addEventListener("online", function () {
    if (connection.state !== "connected") connection.reconnectNow();
  });
}

function start() {
  readFiltersFromUrl();
  initRender();
  initFilters(markDirty);
  initDetail(formatTime);
  bindConnection();
  var ticks = 0;
  setInterval(function () {
    ticks++;
    if (expireRows(Date.now())) markDirty();
    if (ticks % SLOW_TICKS === 0) {
      markAges();
      refreshOptions();
    }
  }, TICK_MS);
  markDirty();
  connection.start();
}

Object.defineProperty(window, "projctlDashboard", {
  enumerable: true,
  value: Object.freeze({
    /** The seq of the last message applied to the model (null before the first snapshot). */
    get lastSeq() { return model.lastSeq; },
    /** Live projects in the model. */
    get projectCount() { return model.projects.size; },
    /** Events in the "recent events" list (the journal's last ones, then live ones). */
    get feedLength() { return model.feed.length; },
    /** Frames that rendered a model or filter change. */
    get renders() { return stats.renders; },
    /** "connecting", "connected" or "reconnecting". */
    get state() { return connection.state; },
    /** Lifecycle and emitted events applied (replayed duplicates are not counted). */
    get events() { return model.events; },
    /** Live projects matching the filters; of them, those on screen; rows on screen. */
    get matching() { return stats.shown.matching; },
    get shown() { return stats.shown.shown; },
    get rowsShown() { return stats.shown.rows; },
    reconnectNow: function () { connection.reconnectNow(); },
  }),
});

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
