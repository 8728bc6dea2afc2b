// The state: the fold of the feed's messages into the projects, the rows the table
// shows (with their highlights), the counts by status and the recent events. No DOM,
// no I/O: the connection feeds it, the render reads it.

import {
  DELETED_LINGER_MS, EVENTS, EVENT_TYPES, HIGHLIGHT_MS, PROJECT_FIELDS, isEmittedType,
} from "./contract.js";

/** The feed entries the page shows at most. */
export const FEED_LENGTH = 20;
/** The events kept for the project the detail panel shows. */
const WATCHED_LENGTH = 50;
/** The longest summary of an emitted event's data, in characters. */
const SUMMARY_LENGTH = 80;
const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$/;

export const model = {
  /** project id -> record as stored (live projects only). */
  projects: new Map(),
  /** project id -> row; Map order is change order, the newest change last. */
  rows: new Map(),
  /** status -> number of live projects. */
  counts: new Map(),
  /** The most recent events, newest last. */
  feed: [],
  feedVersion: 0,
  /** The seq of the last message applied; null until the first snapshot. */
  lastSeq: null,
  /** Whether a snapshot or resync has been loaded (then reconnects resume with since). */
  loaded: false,
  events: 0,
  projectsVersion: 0,
  /** The project the detail panel shows: {id, entries (its events, newest last)}, or null. */
  watched: null,
};
/** Ids of rows still highlighted or lingering deleted: the only rows a tick looks at. */
const active = new Set();
let rowVersion = 0;

export function text(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : String(value);
}

/** A record with string fields, or null when it has no usable project_id. */
function normalizeProject(raw) {
  if (!raw || typeof raw !== "object") return null;
  var id = text(raw.project_id);
  if (!id) return null;
  var project = {};
  for (var i = 0; i < PROJECT_FIELDS.length; i++) {
    project[PROJECT_FIELDS[i]] = text(raw[PROJECT_FIELDS[i]]);
  }
  project.project_id = id;
  return project;
}

/** Epoch milliseconds of a contract timestamp (UTC, no zone suffix); NaN otherwise. */
export function parseTimestamp(value) {
  var match = TIMESTAMP.exec(text(value));
  if (!match) return NaN;
  var millis = match[7] ? Number((match[7] + "000").slice(0, 3)) : 0;
  return Date.UTC(+match[1], +match[2] - 1, +match[3], +match[4], +match[5], +match[6], millis);
}

function makeRow(project, change, at, fields, fresh) {
  return {
    id: project.project_id,
    project: project,
    /** "loaded" (from a snapshot or resync), "new", "updated", "deleted" or "emitted". */
    change: change,
    at: at,
    fields: fields,
    fresh: fresh,
    version: ++rowVersion,
    idLower: project.project_id.toLowerCase(),
    nameLower: project.name.toLowerCase(),
    ownerLower: project.owner_id.toLowerCase(),
    typeLower: project.type.toLowerCase(),
    updatedMs: parseTimestamp(project.updated_at),
  };
}

function countStatus(status, delta) {
  var next = (model.counts.get(status) || 0) + delta;
  if (next > 0) model.counts.set(status, next);
  else model.counts.delete(status);
}

function putRow(row) {
  // Re-inserted at the end: the newest change is last in the Map.
  model.rows.delete(row.id);
  model.rows.set(row.id, row);
}

function pushFeed(entry) {
  model.feed.push(entry);
  if (model.feed.length > FEED_LENGTH * 2) model.feed.splice(0, model.feed.length - FEED_LENGTH);
  model.feedVersion++;
  var watched = model.watched;
  if (watched && entry.id === watched.id) {
    watched.entries.push(entry);
    if (watched.entries.length > WATCHED_LENGTH) watched.entries.shift();
    watched.version++;
  }
}

/** From now on keep the events of this project (null: of none), for the detail panel. */
export function watchProject(id) {
  model.watched = id === null ? null : { id: id, entries: [], version: 0 };
}

/**
 * A feed entry of a lifecycle or emitted event (null: neither, or no project): what the
 * feed, the detail panel and a row's "last change" show of it.
 */
export function feedEntry(message) {
  if (!message || typeof message !== "object") return null;
  var type = message.event_type;
  var emitted = isEmittedType(type);
  if (!EVENT_TYPES.has(type) && !emitted) return null;
  var data = message.data;
  if (!data || typeof data !== "object" || Array.isArray(data)) return null;
  var id = text(data.project_id);
  if (!id) return null;
  var fields = type === EVENTS.updated && Array.isArray(data.updated_fields)
    ? data.updated_fields.map(text) : [];
  var entry = {
    seq: Number.isSafeInteger(message.seq) ? message.seq : null,
    type: type, id: id, name: text(data.name),
    fields: fields, timestamp: text(message.timestamp),
    detail: emitted ? dataSummary(data) : "",
  };
  if (emitted) entry.emitted = true;
  return entry;
}

/** The row change a feed entry stands for: "new", "updated", "deleted" or "emitted". */
function changeOf(entry) {
  if (entry.emitted) return "emitted";
  return entry.type === EVENTS.created ? "new" : entry.type === EVENTS.updated ? "updated" : "deleted";
}

/**
 * The journal's last events up to the snapshot the page loaded (oldest first): they go in
 * the feed, before what came live, and each row unchanged since the snapshot shows its
 * last one as its last change (not highlighted: it is history). Nothing is applied to the
 * projects, the seq or the event count: the snapshot holds them already.
 */
export function loadHistory(messages) {
  var seen = new Set();
  model.feed.forEach(function (entry) { if (entry.seq !== null) seen.add(entry.seq); });
  var older = [];
  var last = new Map();
  for (var i = 0; i < messages.length; i++) {
    var entry = feedEntry(messages[i]);
    if (!entry || entry.seq === null || entry.seq > model.lastSeq || seen.has(entry.seq)) continue;
    seen.add(entry.seq);
    older.push(entry);
    last.set(entry.id, entry);
  }
  if (!older.length) return false;
  older.sort(function (a, b) { return a.seq - b.seq; });
  var first = model.feed.length ? model.feed[0].seq : null;
  var before = older.filter(function (entry) { return first === null || entry.seq < first; });
  model.feed = before.concat(model.feed).slice(-FEED_LENGTH * 2);
  model.feedVersion++;
  last.forEach(function (entry, id) {
    var row = model.rows.get(id);
    var change = changeOf(entry);
    if (!row || row.change !== "loaded" || change === "deleted") return;
    var labelled = makeRow(row.project, change, row.at, entry.fields, false);
    labelled.eventType = entry.type;
    labelled.summary = entry.detail;
    model.rows.set(id, labelled); // its place stays: this is no new change
  });
  model.projectsVersion++;
  return true;
}

function compareByUpdated(a, b) {
  if (a.updated_at !== b.updated_at) return a.updated_at < b.updated_at ? -1 : 1;
  if (a.created_at !== b.created_at) return a.created_at < b.created_at ? -1 : 1;
  return a.project_id < b.project_id ? -1 : a.project_id > b.project_id ? 1 : 0;
}

/** A snapshot or resync: every project at once, replacing the table. */
export function loadProjects(message, seq) {
  var data = message.data;
  var list = data && Array.isArray(data.projects) ? data.projects : null;
  if (!list) return;
  var projects = [];
  for (var i = 0; i < list.length; i++) {
    var project = normalizeProject(list[i]);
    if (project) projects.push(project);
  }
  // Oldest first into the Map: the most recently updated ends up on top.
  projects.sort(compareByUpdated);
  model.projects.clear();
  model.rows.clear();
  model.counts.clear();
  active.clear();
  var now = Date.now();
  for (var j = 0; j < projects.length; j++) {
    var p = projects[j];
    if (model.projects.has(p.project_id)) countStatus(model.projects.get(p.project_id).status, -1);
    model.projects.set(p.project_id, p);
    countStatus(p.status, 1);
    putRow(makeRow(p, "loaded", now, [], false));
  }
  if (seq !== null) model.lastSeq = seq;
  if (model.lastSeq === null) model.lastSeq = 0;
  // A snapshot answers the page's own request; a resync (any other projects message)
  // replaced what the page had, and the feed says so.
  if (message.event_type !== "snapshot") {
    var count = model.projects.size;
    pushFeed({
      seq: seq, type: text(message.event_type), id: "", name: "",
      fields: [], timestamp: text(message.timestamp),
      detail: count + (count === 1 ? " project" : " projects") + " reloaded",
    });
  }
  model.loaded = true;
  model.projectsVersion++;
}

/** One lifecycle event, already known to be next in seq order. */
export function applyEvent(type, message, seq) {
  if (seq !== null) model.lastSeq = seq;
  model.events++;
  var data = message.data;
  if (!data || typeof data !== "object") return;
  var id = text(data.project_id);
  if (!id) return;
  var now = Date.now();
  var before = model.projects.get(id);
  var fields = [];
  if (type === EVENTS.deleted) {
    if (before) {
      model.projects.delete(id);
      countStatus(before.status, -1);
    }
    putRow(makeRow(before || normalizeProject({ project_id: id, name: data.name }), "deleted", now, [], true));
  } else {
    var project = normalizeProject(data);
    if (before) countStatus(before.status, -1);
    model.projects.set(id, project);
    countStatus(project.status, 1);
    if (type === EVENTS.updated && Array.isArray(data.updated_fields)) {
      fields = data.updated_fields.map(text);
    }
    putRow(makeRow(project, type === EVENTS.created ? "new" : "updated", now, fields, true));
  }
  active.add(id);
  model.projectsVersion++;
  pushFeed({
    seq: seq, type: type, id: id, name: text(data.name),
    fields: fields, timestamp: text(message.timestamp), detail: "",
  });
}

/**
 * The journal's events (any order) for the project the detail panel shows: those of it
 * join what came live since it was opened, each once, in seq order.
 */
export function loadWatchedHistory(id, messages) {
  var watched = model.watched;
  if (!watched || watched.id !== id) return;
  var seen = new Set(watched.entries.map(function (entry) { return entry.seq; }));
  var added = false;
  messages.forEach(function (message) {
    var entry = feedEntry(message);
    if (!entry || entry.id !== id || entry.seq === null || seen.has(entry.seq)) return;
    seen.add(entry.seq);
    watched.entries.push(entry);
    added = true;
  });
  if (!added) return;
  watched.entries.sort(function (a, b) { return (a.seq || 0) - (b.seq || 0); });
  if (watched.entries.length > WATCHED_LENGTH) watched.entries.splice(0, watched.entries.length - WATCHED_LENGTH);
  watched.version++;
}

/** The events of the project the detail panel shows, newest first (at most `limit`). */
export function watchedEntries(limit) {
  var watched = model.watched;
  if (!watched) return [];
  return watched.entries.slice(-limit).reverse();
}

/** The data an emitted event adds to the project's id and name, in one short line. */
export function dataSummary(data) {
  var parts = [];
  Object.keys(data).forEach(function (key) {
    if (key === "project_id" || key === "name") return;
    var value = data[key];
    var shown;
    if (Array.isArray(value)) shown = "[" + value.length + (value.length === 1 ? " item]" : " items]");
    else if (value !== null && typeof value === "object") shown = "{\u2026}";
    else shown = String(value).split(/\s+/).filter(Boolean).join(" ");
    parts.push(key + "=" + shown);
  });
  var summary = parts.join(" ");
  return summary.length <= SUMMARY_LENGTH ? summary : summary.slice(0, SUMMARY_LENGTH - 1) + "\u2026";
}

/**
 * An emitted event (projctl emit), already known to be next in seq order: it changes no
 * project, but it is the project's last change (its row moves up, highlighted) and it
 * goes in the feed with a summary of its data.
 */
export function applyEmitted(type, message, seq) {
  if (seq !== null) model.lastSeq = seq;
  model.events++;
  var data = message.data;
  if (!data || typeof data !== "object" || Array.isArray(data)) return;
  var id = text(data.project_id);
  if (!id) return;
  var summary = dataSummary(data);
  var project = model.projects.get(id);
  if (project) {
    var row = makeRow(project, "emitted", Date.now(), [], true);
    row.eventType = type;
    row.summary = summary;
    putRow(row);
    active.add(id);
    model.projectsVersion++;
  }
  pushFeed({
    seq: seq, type: type, id: id, name: text(data.name),
    fields: [], timestamp: text(message.timestamp), detail: summary, emitted: true,
  });
}

/** Ends highlights and removes deleted rows whose time is up; true when anything changed. */
export function expireRows(now) {
  var changed = false;
  active.forEach(function (id) {
    var row = model.rows.get(id);
    if (!row || !row.fresh) {
      active.delete(id);
      return;
    }
    if (row.change === "deleted") {
      if (now - row.at >= DELETED_LINGER_MS) {
        model.rows.delete(id);
        active.delete(id);
        changed = true;
      }
    } else if (now - row.at >= HIGHLIGHT_MS) {
      // Same place in the Map, no longer highlighted.
      var stale = makeRow(row.project, row.change, row.at, row.fields, false);
      stale.eventType = row.eventType;
      stale.summary = row.summary;
      model.rows.set(id, stale);
      active.delete(id);
      changed = true;
    }
  });
  return changed;
}
