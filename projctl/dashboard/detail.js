// The detail panel: a row opens it (a click, or Enter on the focused row) with every
// field of its project, the description included, and its recent events: the journal's
// (fetched when it opens) and then the feed's, live. With a write token (the server says
// so: /api/whoami) it can change the status and the owner: a PATCH with If-Match, the
// ETag of the very version the panel shows; a 412 says the project changed meanwhile and
// shows it as it is now. Without one, no control is shown and nothing is written.

import { journalEvents, projectPath, request } from "./rest.js";
import { PROJECT_FIELDS, STATUSES } from "./contract.js";
import { $, el, setText, visible } from "./dom.js";
import { loadWatchedHistory, model, text, watchedEntries, watchProject } from "./state.js";

/** The events the panel lists at most, newest first. */
const EVENTS_SHOWN = 20;

const nodes = {};
/** What the panel shows: the project's id (null: closed), its record, what is drawn. */
const panel = {
  id: null,
  project: null,
  gone: false,
  drawnProject: null,
  drawnEvents: -1,
  /** The record of the last GET or PATCH and its ETag: If-Match when it is the one shown. */
  tagged: null,
  mayWrite: false,
  /** Whether the form holds edits not saved (live changes then leave it alone). */
  editing: false,
  saving: false,
  opener: null,
};
let frameRequested = false;
let formatTime = function (timestamp) { return timestamp; };

/** Bind the rows and the panel; `timeOf(timestamp)` formats an event's time. */
export function initDetail(timeOf) {
  formatTime = timeOf;
  [
    "projects-body", "detail", "detail-title", "detail-close", "detail-gone", "detail-fields",
    "detail-edit", "edit-status", "edit-owner", "edit-save", "edit-message", "detail-events",
    "detail-events-empty",
  ].forEach(function (id) { nodes[id] = $(id); });
  STATUSES.forEach(function (status) {
    var option = el("option", "", status);
    option.value = status;
    nodes["edit-status"].appendChild(option);
  });
  nodes["projects-body"].addEventListener("click", function (event) {
    var tr = event.target.closest("tr[data-project-id]");
    if (tr) openDetail(tr.getAttribute("data-project-id"), tr);
  });
  nodes["projects-body"].addEventListener("keydown", function (event) {
    if (event.key !== "Enter" && event.key !== " ") return;
    var tr = event.target.closest("tr[data-project-id]");
    if (!tr || event.target !== tr) return;
    event.preventDefault();
    openDetail(tr.getAttribute("data-project-id"), tr);
  });
  nodes["detail-close"].addEventListener("click", closeDetail);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && panel.id !== null && !event.defaultPrevented) closeDetail();
  });
  nodes["detail-edit"].addEventListener("submit", function (event) {
    event.preventDefault();
    save();
  });
  ["edit-status", "edit-owner"].forEach(function (id) {
    nodes[id].addEventListener("input", function () { panel.editing = true; });
  });
}

/** Whether the page's token may write (the server's /api/whoami): the controls follow. */
export function setMayWrite(mayWrite) {
  panel.mayWrite = !!mayWrite;
  panel.drawnProject = null;
  schedule();
}

export function openDetail(id, opener) {
  if (panel.id !== id) {
    panel.id = id;
    panel.project = null;
    panel.gone = false;
    panel.tagged = null;
    panel.editing = false;
    panel.drawnProject = null;
    panel.drawnEvents = -1;
    setText(nodes["edit-message"], "");
    watchProject(id);
    fetchHistory(id);
  }
  panel.opener = opener || null;
  nodes.detail.hidden = false;
  draw();
  nodes["detail-close"].focus();
}

export function closeDetail() {
  if (panel.id === null) return;
  markSelected(null);
  panel.id = null;
  watchProject(null);
  nodes.detail.hidden = true;
  var opener = panel.opener;
  panel.opener = null;
  if (opener && opener.isConnected) opener.focus();
}

/** The state changed: the panel follows in the next frame (when open). */
export function detailChanged() {
  if (panel.id !== null) schedule();
}

function schedule() {
  if (frameRequested || panel.id === null) return;
  frameRequested = true;
  requestAnimationFrame(function () {
    frameRequested = false;
    if (panel.id !== null) draw();
  });
}

/** The journal's events of the project, as far back as the journal keeps. */
function fetchHistory(id) {
  var upTo = model.lastSeq === null ? 0 : model.lastSeq;
  var since = Math.max(0, upTo - journalWindow);
  journalEvents(since, upTo).then(function (answer) {
    loadWatchedHistory(id, answer.events);
    if (panel.id === id) schedule();
  });
}

/** How many events the journal keeps (the server's /api/info; a guess until then). */
let journalWindow = 1000;
export function setJournalWindow(events) {
  if (Number.isSafeInteger(events) && events > 0) journalWindow = events;
}

function currentProject() {
  var live = model.projects.get(panel.id);
  if (live) {
    panel.project = live;
    panel.gone = false;
  } else {
    var row = model.rows.get(panel.id);
    if (row) panel.project = row.project;
    panel.gone = true;
  }
  return panel.project;
}

function draw() {
  var project = currentProject();
  markSelected(panel.id);
  if (panel.drawnProject !== project || !project) {
    panel.drawnProject = project;
    drawFields(project);
    drawForm(project);
  }
  var watched = model.watched;
  var version = watched ? watched.version : -1;
  if (panel.drawnEvents !== version) {
    panel.drawnEvents = version;
    drawEvents();
  }
}

function drawFields(project) {
  setText(nodes["detail-title"], project ? visible(project.name || project.project_id) : visible(panel.id));
  nodes["detail-gone"].hidden = !panel.gone;
  if (panel.gone) {
    setText(nodes["detail-gone"], project ? "This project was deleted." : "No such project here.");
  }
  var fragment = document.createDocumentFragment();
  if (project) {
    PROJECT_FIELDS.forEach(function (field) {
      var div = el("div", "detail-field");
      div.setAttribute("data-field", field);
      var dd = el("dd", field === "description" ? "detail-description" : "");
      var value = text(project[field]);
      if (field === "description") {
        // Its lines as lines; every character inside a line made visible, as elsewhere.
        value.split(/\r\n|\n/).forEach(function (line, i) {
          if (i) dd.appendChild(document.createElement("br"));
          dd.appendChild(document.createTextNode(visible(line)));
        });
        if (!value) dd.appendChild(el("span", "detail-none", "(none)"));
      } else if (/_at$/.test(field) && /^\d{4}-\d\d-\d\dT/.test(value)) {
        dd.textContent = visible(value.replace("T", " ") + " UTC");
      } else {
        dd.textContent = visible(value);
      }
      div.append(el("dt", "", field), dd);
      fragment.appendChild(div);
    });
  }
  nodes["detail-fields"].replaceChildren(fragment);
}

function drawForm(project) {
  var show = panel.mayWrite && !!project && !panel.gone;
  nodes["detail-edit"].hidden = !show;
  if (!show || panel.editing || panel.saving) return;
  fillForm(project);
}

function fillForm(project) {
  var select = nodes["edit-status"];
  if (STATUSES.indexOf(project.status) < 0) {
    var option = el("option", "", project.status);
    option.value = project.status;
    select.appendChild(option);
  }
  select.value = project.status;
  nodes["edit-owner"].value = project.owner_id;
}

function drawEvents() {
  var entries = watchedEntries(EVENTS_SHOWN);
  var fragment = document.createDocumentFragment();
  entries.forEach(function (entry) {
    var kind = entry.emitted ? "emitted" : entry.type.replace(/^project_/, "");
    var li = el("li", "feed-item feed-" + kind);
    if (entry.seq !== null) li.setAttribute("data-seq", String(entry.seq));
    li.setAttribute("data-event-type", entry.type);
    li.appendChild(el("span", "feed-seq", entry.seq === null ? "" : "#" + entry.seq));
    li.appendChild(el("span", "feed-type", entry.type));
    var what = el("span", "feed-project");
    if (entry.fields.length) what.appendChild(el("span", "feed-fields", entry.fields.join(", ")));
    if (entry.detail) what.appendChild(el("span", "feed-detail", entry.detail));
    li.appendChild(what);
    var when = formatTime(entry.timestamp);
    if (when) li.appendChild(el("time", "feed-time", when));
    fragment.appendChild(li);
  });
  nodes["detail-events"].replaceChildren(fragment);
  nodes["detail-events-empty"].hidden = entries.length > 0;
}

function markSelected(id) {
  var previous = nodes["projects-body"].querySelector("tr[aria-current]");
  if (previous && previous.getAttribute("data-project-id") !== id) {
    previous.removeAttribute("aria-current");
  }
  if (id === null) return;
  var tr = nodes["projects-body"].querySelector('tr[data-project-id="' + CSS.escape(id) + '"]');
  if (tr && !tr.hasAttribute("aria-current")) tr.setAttribute("aria-current", "true");
}

function sameRecord(a, b) {
  return !!a && !!b && PROJECT_FIELDS.every(function (field) {
    return text(a[field]) === text(b[field]);
  });
}

/** The ETag of exactly `project` (the version shown), or null when the server has another. */
function tagOf(project) {
  if (panel.tagged && sameRecord(panel.tagged.record, project)) {
    return Promise.resolve(panel.tagged.etag);
  }
  return request("GET", projectPath(project.project_id)).then(function (answer) {
    if (answer.status !== 200 || !answer.etag) return null;
    panel.tagged = { record: answer.body, etag: answer.etag };
    return sameRecord(answer.body, project) ? answer.etag : null;
  });
}

function say(message) {
  setText(nodes["edit-message"], message);
}

function changedMeanwhile(id) {
  if (panel.id !== id) return;
  panel.editing = false;
  say("Not saved: this project changed meanwhile; it is shown as it is now. " +
    "Make the change again if it still applies.");
  panel.drawnProject = null;
  schedule();
}

function save() {
  var project = currentProject();
  if (!project || panel.gone || !panel.mayWrite || panel.saving) return;
  var id = project.project_id;
  var changes = {};
  var status = nodes["edit-status"].value;
  var owner = nodes["edit-owner"].value.trim();
  if (status !== project.status) changes.status = status;
  if (owner !== project.owner_id) changes.owner_id = owner;
  if (!Object.keys(changes).length) {
    say("Nothing to save: the status and owner are as shown.");
    return;
  }
  panel.saving = true;
  nodes["edit-save"].disabled = true;
  say("Saving\u2026");
  tagOf(project).then(function (etag) {
    if (etag === null) return { status: 412 };
    return request("PATCH", projectPath(id), changes, { "If-Match": etag });
  }).then(function (answer) {
    if (panel.id !== id) return;
    if (answer.status === 200 && answer.body && answer.body.project) {
      panel.tagged = { record: answer.body.project, etag: answer.etag };
      panel.editing = false;
      var fields = Array.isArray(answer.body.updated_fields) ? answer.body.updated_fields : [];
      say(fields.length ? "Saved: " + fields.map(text).join(", ") + "." : "Saved (nothing changed).");
    } else if (answer.status === 412) {
      panel.tagged = null;
      changedMeanwhile(id);
    } else if (answer.status === 401 || answer.status === 403) {
      setMayWrite(false);
      say("Not saved: the server says this page's token may not write.");
    } else {
      var why = answer.body && typeof answer.body.message === "string" ? answer.body.message : "";
      say("Not saved: the server answered " + answer.status + (why ? " (" + visible(why) + ")" : "") + ".");
    }
  }, function () {
    if (panel.id === id) say("Not saved: the server did not answer. Try again.");
  }).finally(function () {
    panel.saving = false;
    nodes["edit-save"].disabled = false;
    if (panel.id === id) schedule();
  });
}
