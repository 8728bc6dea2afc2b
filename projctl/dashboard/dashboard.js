// projctl dashboard: a live view of a project database's lifecycle events.
//
// Plain script, no build step, runs under a strict Content-Security-Policy: nothing
// here writes markup or inline styles; every value from the server is set with
// textContent or setAttribute, so untrusted names can only ever show as text.
//
// Data flow: WebSocket message -> model (applied at once, in seq order, no
// duplicates) -> one render per animation frame (the table, the feed, the counts).
"use strict";

(function () {
  // -- constants ---------------------------------------------------------------

  /** The statuses of the model, in the order the counts show them. */
  var STATUSES = ["created", "in_progress", "on_hold", "completed", "archived"];
  var EVENT_TYPES = { project_created: true, project_updated: true, project_deleted: true };
  var PROJECT_FIELDS = [
    "project_id", "name", "type", "status", "owner_id", "description", "created_at", "updated_at",
  ];
  /** How long a created or updated row (and its changed cells) stays highlighted. */
  var HIGHLIGHT_MS = 10000;
  /** How long a deleted row stays on screen, struck through, before it disappears. */
  var DELETED_LINGER_MS = 5000;
  var FEED_LENGTH = 20;
  /** More events than this in one frame: changed rows are highlighted, not flashed. */
  var FLASH_LIMIT = 20;
  /** Rows rendered at most; the rest are counted ("N more not shown"). */
  var MAX_ROWS = 500;
  var BACKOFF_FIRST_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var TICK_MS = 500;
  /** Ages and filter suggestions refresh every this many ticks. */
  var SLOW_TICKS = 4;
  var TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$/;

  // -- the model ---------------------------------------------------------------

  var model = {
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
  };
  /** Ids of rows still highlighted or lingering deleted: the only rows a tick looks at. */
  var active = new Set();
  var rowVersion = 0;

  function text(value) {
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
  function parseTimestamp(value) {
    var match = TIMESTAMP.exec(text(value));
    if (!match) return NaN;
    var millis = match[7] ? Number((match[7] + "000").slice(0, 3)) : 0;
    return Date.UTC(+match[1], +match[2] - 1, +match[3], +match[4], +match[5], +match[6], millis);
  }

  function makeRow(project, change, at, fields, fresh) {
    return {
      id: project.project_id,
      project: project,
      /** "loaded" (from a snapshot or resync), "new", "updated" or "deleted". */
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
  }

  function compareByUpdated(a, b) {
    if (a.updated_at !== b.updated_at) return a.updated_at < b.updated_at ? -1 : 1;
    if (a.created_at !== b.created_at) return a.created_at < b.created_at ? -1 : 1;
    return a.project_id < b.project_id ? -1 : a.project_id > b.project_id ? 1 : 0;
  }

  /** A snapshot or resync: every project at once, replacing the table. */
  function loadProjects(message, seq) {
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
    if (message.event_type === "resync") {
      var count = model.projects.size;
      pushFeed({
        seq: seq, type: "resync", id: "", name: "",
        fields: [], timestamp: text(message.timestamp),
        detail: count + (count === 1 ? " project" : " projects") + " reloaded",
      });
    }
    model.loaded = true;
    model.projectsVersion++;
  }

  /** One lifecycle event, already known to be next in seq order. */
  function applyEvent(type, message, seq) {
    if (seq !== null) model.lastSeq = seq;
    model.events++;
    var data = message.data;
    if (!data || typeof data !== "object") return;
    var id = text(data.project_id);
    if (!id) return;
    var now = Date.now();
    var before = model.projects.get(id);
    var fields = [];
    if (type === "project_deleted") {
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
      if (type === "project_updated" && Array.isArray(data.updated_fields)) {
        fields = data.updated_fields.map(text);
      }
      putRow(makeRow(project, type === "project_created" ? "new" : "updated", now, fields, true));
    }
    active.add(id);
    model.projectsVersion++;
    pushFeed({
      seq: seq, type: type, id: id, name: text(data.name),
      fields: fields, timestamp: text(message.timestamp), detail: "",
    });
  }

  /** Ends highlights and removes deleted rows whose time is up; true when anything changed. */
  function expireRows(now) {
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
        model.rows.set(id, stale);
        active.delete(id);
        changed = true;
      }
    });
    return changed;
  }

  // -- incoming messages -------------------------------------------------------

  /** The lastSeq at which a gap last made us resume (a gap there again waits to resume). */
  var gapResumedAt = null;

  function handleMessage(raw) {
    var message;
    try {
      message = JSON.parse(raw);
    } catch (error) {
      return;
    }
    if (!message || typeof message !== "object") return;
    var type = message.event_type;
    var seq = Number.isSafeInteger(message.seq) ? message.seq : null;
    if (type === "snapshot" || type === "resync") {
      // Always taken whole, even with a lower seq: the server's database was replaced.
      loadProjects(message, seq);
      gapResumedAt = null;
      scheduleRender();
      return;
    }
    if (!Object.prototype.hasOwnProperty.call(EVENT_TYPES, type)) return;
    if (seq !== null && model.lastSeq !== null) {
      if (seq <= model.lastSeq) return; // seen already (replayed after a reconnect)
      if (seq > model.lastSeq + 1) {
        // Events are numbered without holes: ask the server to replay from what we have,
        // every time. An event after a gap is never applied, or the page would show a
        // hole for good. The same gap again resumes after the usual backoff, so a server
        // that keeps sending it is not hammered.
        if (gapResumedAt !== model.lastSeq) {
          gapResumedAt = model.lastSeq;
          connection.resume();
        } else {
          connection.resumeLater();
        }
        return;
      }
    }
    applyEvent(type, message, seq);
    scheduleRender();
  }

  // -- the connection ----------------------------------------------------------

  var connection = (function () {
    var socket = null;
    var state = "connecting";
    var attempt = 0;
    var retryAt = 0;
    var retryTimer = null;
    var countdownTimer = null;
    var tokenInUse = null;
    var probeNumber = 0;
    // The token lives in this tab only (sessionStorage survives a reload, not the tab),
    // never in the address bar: a bookmarked or shared view must not carry it.
    var TOKEN_KEY = "projctl-token";
    var tokenHeld = storedToken();
    takeTokenFromUrl();

    function storedToken() {
      try {
        return sessionStorage.getItem(TOKEN_KEY) || null;
      } catch (error) {
        return null;
      }
    }

    function holdToken(token) {
      tokenHeld = token || null;
      try {
        if (tokenHeld) sessionStorage.setItem(TOKEN_KEY, tokenHeld);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch (error) {
        // storage refused: the token is kept in memory for this page
      }
    }

    /**
     * Move a `#token=` (a link from `projctl open`) out of the URL into the tab's
     * memory; the fragment's other parts stay. Whether the URL held one.
     */
    function takeTokenFromUrl() {
      var hash = location.hash.replace(/^#/, "");
      var parts = hash ? hash.split("&") : [];
      var kept = [];
      var found = false;
      var token = null;
      for (var i = 0; i < parts.length; i++) {
        var eq = parts[i].indexOf("=");
        var key = eq < 0 ? parts[i] : parts[i].slice(0, eq);
        if (key !== "token") {
          kept.push(parts[i]);
          continue;
        }
        found = true;
        try {
          token = decodeURIComponent(eq < 0 ? "" : parts[i].slice(eq + 1)) || null;
        } catch (error) {
          token = null;
        }
      }
      if (!found) return false;
      var rest = kept.length ? "#" + kept.join("&") : "";
      history.replaceState(history.state, "", location.pathname + location.search + rest);
      holdToken(token);
      return true;
    }

    function socketUrl() {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var query = model.loaded ? "since=" + model.lastSeq : "snapshot=1";
      return scheme + location.host + "/ws?" + query;
    }

    function setState(next) {
      state = next;
      ui.showConnection(state, retryAt);
      if (state === "reconnecting") {
        if (countdownTimer === null) {
          countdownTimer = setInterval(function () { ui.showConnection(state, retryAt); }, 100);
        }
      } else if (countdownTimer !== null) {
        clearInterval(countdownTimer);
        countdownTimer = null;
      }
    }

    function open() {
      clearTimeout(retryTimer);
      retryTimer = null;
      drop();
      tokenInUse = tokenHeld;
      setState("connecting");
      var ws;
      try {
        // The token travels as a subprotocol, never in the URL; without one no
        // subprotocol is offered at all, as plain loopback servers expect.
        ws = tokenInUse
          ? new WebSocket(socketUrl(), ["projctl", "projctl-token." + tokenInUse])
          : new WebSocket(socketUrl());
      } catch (error) {
        // A token with characters a subprotocol cannot carry, or a bad host.
        if (tokenInUse) ui.showTokenForm("That token has characters a token cannot have.");
        retry();
        return;
      }
      var opened = false;
      socket = ws;
      ws.onopen = function () {
        if (socket !== ws) return;
        opened = true;
        attempt = 0;
        ui.hideTokenForm();
        setState("connected");
      };
      ws.onmessage = function (event) {
        if (socket !== ws) return;
        if (typeof event.data === "string") handleMessage(event.data);
      };
      ws.onclose = function () {
        if (socket !== ws) return;
        socket = null;
        if (!opened) probeAuth();
        retry();
      };
    }

    /** Forget the current socket (its late messages are ignored) and close it. */
    function drop() {
      if (socket === null) return;
      var old = socket;
      socket = null;
      old.onopen = old.onmessage = old.onclose = null;
      try {
        old.close(1000);
      } catch (error) {
        // already closed
      }
    }

    function retry() {
      var delay = Math.min(BACKOFF_FIRST_MS * Math.pow(2, attempt), BACKOFF_MAX_MS);
      attempt++;
      retryAt = Date.now() + delay;
      clearTimeout(retryTimer);
      retryTimer = setTimeout(open, delay);
      setState("reconnecting");
    }

    /** After a refused handshake: does the server want a (different) token? */
    function probeAuth() {
      var number = ++probeNumber;
      var token = tokenInUse;
      var headers = token ? { Authorization: "Bearer " + token } : {};
      var request;
      try {
        request = fetch("/api/events?since=0", {
          headers: headers, cache: "no-store", credentials: "omit", redirect: "error",
        });
      } catch (error) {
        return;
      }
      request.then(function (response) {
        if (response.body && response.body.cancel) response.body.cancel().catch(function () {});
        if (number !== probeNumber || state === "connected") return;
        if (response.status === 401) {
          ui.showTokenForm(token
            ? "The server refused this token. Enter the subscriber token:"
            : "This server needs a subscriber token.");
        }
      }, function () { /* unreachable server: keep retrying */ });
    }

    return {
      start: open,
      /** Connect now, ending any wait (the "reconnect now" button, a new token). */
      reconnectNow: function () {
        attempt = 0;
        open();
      },
      /** Resume from model.lastSeq at once (after a gap in seq). */
      resume: function () {
        open();
      },
      /** Resume from model.lastSeq after the backoff (the same gap again). */
      resumeLater: function () {
        drop();
        retry();
      },
      /** A `#token=` newly put in the URL: taken out; whether it differs from the one in use. */
      tokenChanged: function () {
        return takeTokenFromUrl() && tokenHeld !== tokenInUse;
      },
      /** Use this token from now on (the token form). */
      useToken: holdToken,
      get state() { return state; },
    };
  })();

  // -- filters -----------------------------------------------------------------

  var filters = { statuses: new Set(), owner: "", type: "", q: "" };

  function readFiltersFromUrl() {
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

  function rowMatches(row) {
    if (filters.statuses.size && !filters.statuses.has(row.project.status)) return false;
    if (filters.owner && row.ownerLower !== filters.owner.toLowerCase()) return false;
    if (filters.type && row.typeLower !== filters.type.toLowerCase()) return false;
    if (filters.q) {
      var q = filters.q.toLowerCase();
      if (row.idLower.indexOf(q) < 0 && row.nameLower.indexOf(q) < 0) return false;
    }
    return true;
  }

  // -- rendering ---------------------------------------------------------------

  function $(id) {
    return document.getElementById(id);
  }

  /** Every control, format or separator character (Unicode categories Cc, Cf, Zl, Zp). */
  var INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
  var NAMED_ESCAPES = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };

  /**
   * Text as the page shows it: each of those characters as a visible escape (U+202E as
   * "\u202e", ESC as "\x1b"), as the terminal shows them. A bidi override, a direction
   * mark or a zero-width character would otherwise reorder or hide what a name says
   * ("bidi \u202egnp.exe" read as "bidi exe.png"), or make two names look the same.
   */
  function visible(value) {
    return value.replace(INVISIBLE, function (char) {
      if (Object.prototype.hasOwnProperty.call(NAMED_ESCAPES, char)) return NAMED_ESCAPES[char];
      var code = char.codePointAt(0);
      var hex = code.toString(16);
      if (code < 0x100) return "\\x" + ("0" + hex).slice(-2);
      if (code < 0x10000) return "\\u" + ("000" + hex).slice(-4);
      return "\\U" + ("0000000" + hex).slice(-8);
    });
  }

  /** An element; its text content, if given, made visible (see visible()). */
  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined && content !== null) node.textContent = visible(String(content));
    return node;
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

  var ui = (function () {
    var nodes = {};
    var frameRequested = false;
    var modelDirty = true;
    var agesDirty = false;
    var renders = 0;
    /** project id -> {row, tr, time, ageText} for the rows on screen. */
    var rendered = new Map();
    var renderedOrder = [];
    var renderedFeedVersion = -1;
    var eventsAtLastRender = 0;
    var shownState = { matching: 0, total: 0, rows: 0, shown: 0 };
    var seenStatuses = new Set(STATUSES);
    var optionsVersion = -1;
    var optionKeys = { owner: "", type: "" };
    var tokenFormShown = false;

    function init() {
      [
        "connection", "connection-region", "connection-word", "connection-detail",
        "reconnect-now", "last-seq", "database-url",
        "status-counts", "projects-body", "shown-count", "more-not-shown", "empty-state",
        "feed", "feed-empty", "filter-status", "filter-owner", "filter-type", "filter-search",
        "clear-filters", "filters", "token-form", "token-input", "token-message",
        "owner-options", "type-options",
      ].forEach(function (id) { nodes[id] = $(id); });
      nodes["database-url"].textContent = location.host || "(no host)";
      nodes.counts = {};
      Array.prototype.forEach.call(
        nodes["status-counts"].querySelectorAll("li"),
        function (li) {
          nodes.counts[li.getAttribute("data-status") || "total"] = li.querySelector("[data-count]");
        }
      );
      showFilters();
      bindFilters();
      bindConnection();
    }

    // ---- filters UI

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
      modelDirty = true;
      scheduleRender();
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
    function refreshOptions() {
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

    // ---- connection UI

    function bindConnection() {
      nodes["reconnect-now"].addEventListener("click", function () { connection.reconnectNow(); });
      nodes["token-form"].addEventListener("submit", function (event) {
        event.preventDefault();
        var token = nodes["token-input"].value.trim();
        if (!token) {
          nodes["token-input"].focus();
          return;
        }
        nodes["token-input"].value = "";
        // Kept in this tab, never in the URL (nor sent anywhere but in the handshake).
        connection.useToken(token);
        nodes["token-message"].textContent = "Connecting with the new token\u2026";
        connection.reconnectNow();
      });
      window.addEventListener("hashchange", function () {
        if (connection.tokenChanged()) connection.reconnectNow();
      });
      window.addEventListener("online", function () {
        if (connection.state !== "connected") connection.reconnectNow();
      });
    }

    function showConnection(state, retryAt) {
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

    function showTokenForm(message) {
      nodes["token-message"].textContent = message;
      if (!tokenFormShown) {
        tokenFormShown = true;
        nodes["token-form"].hidden = false;
        nodes["token-input"].focus();
      }
    }

    function hideTokenForm() {
      if (!tokenFormShown) return;
      tokenFormShown = false;
      nodes["token-form"].hidden = true;
    }

    // ---- the frame

    function schedule() {
      if (frameRequested) return;
      frameRequested = true;
      requestAnimationFrame(frame);
    }

    function markDirty() {
      modelDirty = true;
      schedule();
    }

    function markAges() {
      agesDirty = true;
      schedule();
    }

    function frame() {
      frameRequested = false;
      var now = Date.now();
      if (modelDirty) {
        modelDirty = false;
        agesDirty = false;
        renders++;
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
      if (row.change === "new") label = "new";
      else if (row.change === "updated") label = "updated " + row.fields.join(", ");
      else if (row.change === "deleted") label = "deleted";
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
          tr.setAttribute("data-project-id", r.id);
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
      shownState = { matching: matchingLive, total: total, rows: shown.length, shown: shownLive };
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

    function setText(node, value) {
      if (node.textContent !== value) node.textContent = value;
    }

    // ---- counts and feed

    function renderCounts() {
      STATUSES.forEach(function (status) {
        setText(nodes.counts[status], String(model.counts.get(status) || 0));
      });
      setText(nodes.counts.total, String(model.projects.size));
    }

    function formatTime(timestamp) {
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
        var kind = entry.type.replace(/^project_/, "");
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

    return {
      init: init,
      schedule: markDirty,
      markAges: markAges,
      refreshOptions: refreshOptions,
      showConnection: showConnection,
      showTokenForm: showTokenForm,
      hideTokenForm: hideTokenForm,
      get renders() { return renders; },
      get shown() { return shownState; },
    };
  })();

  function scheduleRender() {
    ui.schedule();
  }

  // -- start -------------------------------------------------------------------

  function start() {
    readFiltersFromUrl();
    ui.init();
    var ticks = 0;
    setInterval(function () {
      ticks++;
      if (expireRows(Date.now())) scheduleRender();
      if (ticks % SLOW_TICKS === 0) {
        ui.markAges();
        ui.refreshOptions();
      }
    }, TICK_MS);
    scheduleRender();
    connection.start();
  }

  Object.defineProperty(window, "projctlDashboard", {
    enumerable: true,
    value: Object.freeze({
      /** The seq of the last message applied to the model (null before the first snapshot). */
      get lastSeq() { return model.lastSeq; },
      /** Live projects in the model. */
      get projectCount() { return model.projects.size; },
      /** Frames that rendered a model or filter change. */
      get renders() { return ui.renders; },
      /** "connecting", "connected" or "reconnecting". */
      get state() { return connection.state; },
      /** Lifecycle events applied (replayed duplicates are not counted). */
      get events() { return model.events; },
      /** Live projects matching the filters; of them, those on screen; rows on screen. */
      get matching() { return ui.shown.matching; },
      get shown() { return ui.shown.shown; },
      get rowsShown() { return ui.shown.rows; },
      reconnectNow: function () { connection.reconnectNow(); },
    }),
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
