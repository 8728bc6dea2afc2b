// Filters and the URL: which rows the table shows (statuses, owner, type, a search),
// kept in the query string so a view can be bookmarked and shared, and the form that
// edits them, with suggestions for owner and type taken from the data.

import { STATUSES } from "./contract.js";
import { $, el } from "./dom.js";
import { model } from "./state.js";

export const filters = { statuses: new Set(), owner: "", type: "", q: "" };

const nodes = {};
const seenStatuses = new Set();
let optionsVersion = -1;
const optionKeys = { owner: "", type: "" };
let onChange = function () {};

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

function writeFiltersToUrl() {
  var params = new URLSearchParams();
  var statuses = Array.from(filters.statuses);
  statuses.sort(function (a, b) {
    var ia = STATUSES.indexOf(a), ib = STATUSES.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || (a < b ? -1 : a > b ? 1 : 0);
  });
  statuses.forEach(function (status) { params.append("status", status); });
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

/** The form, shown as the filters are, and bound; `changed()` runs after every edit. */
export function initFilters(changed) {
  onChange = changed;
  [
    "filters", "filter-status", "filter-owner", "filter-type", "filter-search",
    "clear-filters", "owner-options", "type-options",
  ].forEach(function (id) { nodes[id] = $(id); });
  nodes["filter-status"].size = STATUSES.length;
  STATUSES.forEach(ensureStatusOption);
  showFilters();
  bindFilters();
}

function ensureStatusOption(status) {
  if (seenStatuses.has(status)) return;
  seenStatuses.add(status);
  var option = el("option", "", status);
  option.value = status;
  nodes["filter-status"].appendChild(option);
}

/** Filters -> form controls (on load). */
function showFilters() {
  filters.statuses.forEach(ensureStatusOption);
  Array.prototype.forEach.call(nodes["filter-status"].options, function (option) {
    option.selected = filters.statuses.has(option.value);
  });
  nodes["filter-owner"].value = filters.owner;
  nodes["filter-type"].value = filters.type;
  nodes["filter-search"].value = filters.q;
}

/** Form controls -> filters, URL and screen. */
function takeFilters() {
  var statuses = new Set();
  Array.prototype.forEach.call(nodes["filter-status"].selectedOptions, function (option) {
    statuses.add(option.value);
  });
  filters.statuses = statuses;
  filters.owner = nodes["filter-owner"].value.trim();
  filters.type = nodes["filter-type"].value.trim();
  filters.q = nodes["filter-search"].value;
  writeFiltersToUrl();
  onChange();
}

function bindFilters() {
  nodes.filters.addEventListener("submit", function (event) { event.preventDefault(); });
  nodes["filter-status"].addEventListener("change", takeFilters);
  ["filter-owner", "filter-type", "filter-search"].forEach(function (id) {
    var input = nodes[id];
    input.addEventListener("input", takeFilters);
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && input.value !== "") {
        event.preventDefault();
        input.value = "";
        takeFilters();
      }
    });
  });
  nodes["clear-filters"].addEventListener("click", function () {
    filters.statuses = new Set();
    filters.owner = filters.type = filters.q = "";
    showFilters();
    takeFilters();
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
    if (!seenStatuses.has(project.status) && project.status) ensureStatusOption(project.status);
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
