// Filters and the URL: which rows the table shows (statuses, owner, type, a search),
// kept in the query string so a view can be bookmarked and shared (written as you type,
// debounced), and the controls that edit them: the count chips are the status filter
// (click to toggle; "total" shows every status), the form holds the rest and folds
// behind one button on a narrow screen; suggestions for owner and type come from the data.

import { STATUSES } from "./contract.js";
import { $, setText } from "./dom.js";
import { model } from "./state.js";

export const filters = { statuses: new Set(), owner: "", type: "", q: "" };

/** The URL follows the filters this long after the last keystroke. */
const URL_DEBOUNCE_MS = 250;

const nodes = {};
let optionsVersion = -1;
const optionKeys = { owner: "", type: "" };
let onChange = function () {};
let urlTimer = null;

export function readFiltersFromUrl() {
  var params = new URLSearchParams(location.search);
  filters.statuses = new Set();
  params.getAll("status").forEach(function (value) {
    value.split(",").forEach(function (status) {
      status = status.trim();
      if (status) filters.statuses.add(status);
    });
  });
  filters.owner = (params.get("owner") || "").trim();
  filters.type = (params.get("type") || "").trim();
  filters.q = params.get("q") || "";
}

/** Write the filters to the URL soon (once typing pauses). */
function scheduleUrl() {
  clearTimeout(urlTimer);
  urlTimer = setTimeout(writeFiltersToUrl, URL_DEBOUNCE_MS);
}

function writeFiltersToUrl() {
  clearTimeout(urlTimer);
  urlTimer = null;
  var params = new URLSearchParams();
  sortedStatuses().forEach(function (status) { params.append("status", status); });
  if (filters.owner) params.set("owner", filters.owner);
  if (filters.type) params.set("type", filters.type);
  if (filters.q) params.set("q", filters.q);
  var query = params.toString();
  // The fragment is kept as it is (the token is never in it: see takeTokenFromUrl).
  var url = location.pathname + (query ? "?" + query : "") + location.hash;
  history.replaceState(history.state, "", url);
}

export function rowMatches(row) {
  if (filters.statuses.size && !filters.statuses.has(row.project.status)) return false;
  if (filters.owner && row.ownerLower !== filters.owner.toLowerCase()) return false;
  if (filters.type && row.typeLower !== filters.type.toLowerCase()) return false;
  if (filters.q) {
    var q = filters.q.toLowerCase();
    if (row.idLower.indexOf(q) < 0 && row.nameLower.indexOf(q) < 0) return false;
  }
  return true;
}

/** The controls, shown as the filters are, and bound; `changed()` runs after every edit. */
export function initFilters(changed) {
  onChange = changed;
  [
    "filters", "filters-toggle", "filter-owner", "filter-type", "filter-search",
    "clear-filters", "owner-options", "type-options", "status-counts", "status-label",
  ].forEach(function (id) { nodes[id] = $(id); });
  showFilters();
  bindFilters();
}

/** Filters -> controls (on load, and after "clear"). */
function showFilters() {
  nodes["filter-owner"].value = filters.owner;
  nodes["filter-type"].value = filters.type;
  nodes["filter-search"].value = filters.q;
  showStatuses();
}

/** The chips' pressed state, the status label and the fold button's count. */
function showStatuses() {
  var chips = nodes["status-counts"].querySelectorAll("button[data-status-filter]");
  Array.prototype.forEach.call(chips, function (chip) {
    var status = chip.getAttribute("data-status-filter");
    var pressed = status === "" ? filters.statuses.size === 0 : filters.statuses.has(status);
    chip.setAttribute("aria-pressed", pressed ? "true" : "false");
  });
  var chosen = sortedStatuses();
  nodes["status-counts"].classList.toggle("counts-filtered", chosen.length > 0);
  setText(nodes["status-label"], chosen.length
    ? "Status: " + chosen.join(", ") + " (click a count to change)"
    : "Status: all (click a count to show only that status)");
  var active = [filters.owner, filters.type, filters.q].filter(Boolean).length;
  setText(nodes["filters-toggle"], "Filters" + (active ? " (" + active + " on)" : ""));
}

function sortedStatuses() {
  var statuses = Array.from(filters.statuses);
  statuses.sort(function (a, b) {
    var ia = STATUSES.indexOf(a), ib = STATUSES.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || (a < b ? -1 : a > b ? 1 : 0);
  });
  return statuses;
}

/** The filters changed: the controls, the URL (soon) and the screen follow. */
function filtersChanged() {
  showStatuses();
  scheduleUrl();
  onChange();
}

/** Form controls -> filters. */
function takeFields() {
  filters.owner = nodes["filter-owner"].value.trim();
  filters.type = nodes["filter-type"].value.trim();
  filters.q = nodes["filter-search"].value;
  filtersChanged();
}

function bindFilters() {
  nodes.filters.addEventListener("submit", function (event) { event.preventDefault(); });
  nodes["status-counts"].addEventListener("click", function (event) {
    var chip = event.target.closest("button[data-status-filter]");
    if (!chip) return;
    var status = chip.getAttribute("data-status-filter");
    if (status === "") filters.statuses = new Set();
    else if (filters.statuses.has(status)) filters.statuses.delete(status);
    else filters.statuses.add(status);
    filtersChanged();
  });
  ["filter-owner", "filter-type", "filter-search"].forEach(function (id) {
    var input = nodes[id];
    input.addEventListener("input", takeFields);
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && input.value !== "") {
        event.preventDefault();
        input.value = "";
        takeFields();
      }
    });
  });
  nodes["clear-filters"].addEventListener("click", function () {
    filters.statuses = new Set();
    filters.owner = filters.type = filters.q = "";
    showFilters();
    filtersChanged();
  });
  nodes["filters-toggle"].addEventListener("click", function () {
    var open = !nodes.filters.classList.contains("filters-open");
    nodes.filters.classList.toggle("filters-open", open);
    nodes["filters-toggle"].setAttribute("aria-expanded", open ? "true" : "false");
    if (open) nodes["filter-search"].focus();
  });
  // A reload or a closed tab right after a keystroke keeps it in the URL.
  window.addEventListener("pagehide", function () {
    if (urlTimer !== null) writeFiltersToUrl();
  });
}

/** Suggestions for owner and type, from the data (refreshed on the slow tick). */
export function refreshOptions() {
  if (optionsVersion === model.projectsVersion) return;
  optionsVersion = model.projectsVersion;
  var owners = new Set(), types = new Set();
  model.projects.forEach(function (project) {
    if (owners.size < 1000 && project.owner_id) owners.add(project.owner_id);
    if (types.size < 1000 && project.type) types.add(project.type);
  });
  fillDatalist("owner", nodes["owner-options"], owners);
  fillDatalist("type", nodes["type-options"], types);
}

function fillDatalist(key, datalist, values) {
  var sorted = Array.from(values).sort();
  var joined = sorted.join("\n");
  if (joined === optionKeys[key]) return;
  optionKeys[key] = joined;
  var fragment = document.createDocumentFragment();
  sorted.forEach(function (value) {
    var option = document.createElement("option");
    option.value = value;
    fragment.appendChild(option);
  });
  datalist.replaceChildren(fragment);
}
