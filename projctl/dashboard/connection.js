// The connection: the lossless feed. One WebSocket to /ws at a time; the first asks
// for a snapshot, every later one resumes with `since` = the last seq applied, so a
// reconnect misses nothing and repeats nothing. Events are numbered without holes: an
// event past a gap is never applied, the page resumes from what it has instead.
// Failed connections are retried with a doubling backoff; a refused handshake asks
// the server whether it wants a (different) token.

import {
  BACKOFF_FIRST_MS, BACKOFF_MAX_MS, EVENT_TYPES, LOST_HINT_MS, PROJECTS_MESSAGES, isEmittedType,
} from "./contract.js";
import { applyEmitted, applyEvent, loadProjects, model } from "./state.js";
import { heldToken } from "./token.js";

/**
 * The page's connection. `view` is told what to show: `changed()` after the state
 * changed, `loaded(type)` after a snapshot or resync was loaded, `showConnection(state,
 * retryAt, lost)` (`lost`: no connection for LOST_HINT_MS), `showTokenForm(message)`,
 * `hideTokenForm()`.
 */
export function createConnection(view) {
  var socket = null;
  var state = "connecting";
  var attempt = 0;
  var retryAt = 0;
  var retryTimer = null;
  var countdownTimer = null;
  var tokenInUse = null;
  var probeNumber = 0;
  /** The lastSeq at which a gap last made us resume (a gap there again waits to resume). */
  var gapResumedAt = null;
  /** Since when no connection has been open (null: one is). */
  var lostSince = Date.now();
  /** Whether the server answered that it wants a (different) token: it is there, not lost. */
  var tokenRefused = false;

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
    if (PROJECTS_MESSAGES.has(type)) {
      // Always taken whole, even with a lower seq: the server's database was replaced.
      loadProjects(message, seq);
      gapResumedAt = null;
      view.changed();
      view.loaded(type);
      return;
    }
    // An emitted event (projctl emit) takes its place in the seq order like any other:
    // skipped, it would look like a gap before the next one.
    // Only with a seq: a message of another kind (one a later server may add) has none.
    var emitted = isEmittedType(type) && seq !== null;
    if (!EVENT_TYPES.has(type) && !emitted) return;
    if (seq !== null && model.lastSeq !== null) {
      if (seq <= model.lastSeq) return; // seen already (replayed after a reconnect)
      if (seq > model.lastSeq + 1) {
        // Ask the server to replay from what we have, every time. An event after a gap
        // is never applied, or the page would show a hole for good. The same gap again
        // resumes after the usual backoff, so a server that keeps sending it is not
        // hammered.
        if (gapResumedAt !== model.lastSeq) {
          gapResumedAt = model.lastSeq;
          open();
        } else {
          drop();
          retry();
        }
        return;
      }
    }
    if (emitted) applyEmitted(type, message, seq);
    else applyEvent(type, message, seq);
    view.changed();
  }

  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var query = model.loaded ? "since=" + model.lastSeq : "snapshot=1";
    return scheme + location.host + "/ws?" + query;
  }

  function setState(next) {
    state = next;
    show();
    if (state === "reconnecting") {
      if (countdownTimer === null) countdownTimer = setInterval(show, 100);
    } else if (countdownTimer !== null) {
      clearInterval(countdownTimer);
      countdownTimer = null;
    }
  }

  function show() {
    var lost = lostSince !== null && !tokenRefused && Date.now() - lostSince >= LOST_HINT_MS;
    view.showConnection(state, retryAt, lost);
  }

  function open() {
    clearTimeout(retryTimer);
    retryTimer = null;
    drop();
    tokenInUse = heldToken();
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
      if (tokenInUse) view.showTokenForm("That token has characters a token cannot have.");
      retry();
      return;
    }
    var opened = false;
    socket = ws;
    ws.onopen = function () {
      if (socket !== ws) return;
      opened = true;
      attempt = 0;
      lostSince = null;
      tokenRefused = false;
      view.hideTokenForm();
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
    if (lostSince === null) lostSince = Date.now();
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
        tokenRefused = true;
        view.showTokenForm(token
          ? "The server refused this token. Enter a read token:"
          : "This server needs a read token.");
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
    /** Whether the token held differs from the one the current connection uses. */
    tokenChanged: function () {
      return heldToken() !== tokenInUse;
    },
    get state() { return state; },
  };
}
