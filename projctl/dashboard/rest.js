// The REST routes the page uses besides the feed: what its token may do (/api/whoami),
// the database's name (/api/info), the journal's last events (/api/events), one project
// with its ETag, and a PATCH guarded by If-Match. The token (if any) goes as
// Authorization: Bearer, never in a URL; every request gives up after REQUEST_MS.

import { heldToken } from "./token.js";

/** The longest any request here may take. */
const REQUEST_MS = 10000;

/**
 * One request to the page's own server: `{status, etag, body}` (body: the decoded JSON,
 * or null). Rejects when the server cannot be reached or takes too long.
 */
export function request(method, path, body, headers) {
  var sent = Object.assign({}, headers || {});
  var token = heldToken();
  if (token) sent.Authorization = "Bearer " + token;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  var controller = new AbortController();
  var timer = setTimeout(function () { controller.abort(); }, REQUEST_MS);
  return fetch(path, {
    method: method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
    signal: controller.signal,
  }).then(function (response) {
    return response.text().then(function (text) {
      var decoded = null;
      try {
        decoded = text ? JSON.parse(text) : null;
      } catch (error) {
        decoded = null;
      }
      return { status: response.status, etag: response.headers.get("ETag"), body: decoded };
    });
  }).finally(function () { clearTimeout(timer); });
}

/** `GET path` -> its JSON body when answered 200, else null (never rejects). */
export function getJson(path) {
  return request("GET", path).then(function (answer) {
    return answer.status === 200 ? answer.body : null;
  }, function () { return null; });
}

/** A path under /api/projects/ naming one project. */
export function projectPath(projectId) {
  return "/api/projects/" + encodeURIComponent(projectId);
}

/**
 * The retained events with `since < seq <= upTo`, oldest first: `{events, complete}`
 * (`complete`: none of them is gone from the journal). When the journal no longer
 * reaches back to `since`, what it still holds from its oldest on.
 */
export function journalEvents(since, upTo) {
  function keep(answer) {
    var events = answer && Array.isArray(answer.events) ? answer.events : [];
    return events.filter(function (event) {
      return event && Number.isSafeInteger(event.seq) && event.seq > since && event.seq <= upTo;
    });
  }
  return getJson("/api/events?since=" + since).then(function (answer) {
    if (!answer) return { events: [], complete: false };
    if (!answer.resync) return { events: keep(answer), complete: true };
    var oldest = answer.oldest_seq;
    if (!Number.isSafeInteger(oldest) || oldest < 1 || oldest - 1 <= since) {
      return { events: [], complete: false };
    }
    return getJson("/api/events?since=" + (oldest - 1)).then(function (rest) {
      return { events: rest && !rest.resync ? keep(rest) : [], complete: false };
    });
  });
}
