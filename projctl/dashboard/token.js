// The subscriber token: held in this tab only (sessionStorage survives a reload, not the
// tab), never in the address bar, so a bookmarked or shared view never carries it. A
// `#token=` (a link from `projctl open`) is moved out of the URL into the tab's memory;
// the form asks for one when the server refuses the page's handshake.

import { $ } from "./dom.js";

const TOKEN_KEY = "projctl-token";
let tokenHeld = storedToken();
let formShown = false;

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || null;
  } catch (error) {
    return null;
  }
}

/** The token to connect with (null: none). */
export function heldToken() {
  return tokenHeld;
}

/** Use this token from now on (null: none). */
export function holdToken(token) {
  tokenHeld = token || null;
  try {
    if (tokenHeld) sessionStorage.setItem(TOKEN_KEY, tokenHeld);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (error) {
    // storage refused: the token is kept in memory for this page
  }
}

/**
 * Move a `#token=` out of the URL into the tab's memory; the fragment's other parts
 * stay. Whether the URL held one.
 */
export function takeTokenFromUrl() {
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

/** The token form: a token entered there is used for the next connection, at once. */
export function bindTokenForm(reconnectNow) {
  var input = $("token-input");
  $("token-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var token = input.value.trim();
    if (!token) {
      input.focus();
      return;
    }
    input.value = "";
    // Kept in this tab, never in the URL (nor sent anywhere but in the handshake).
    holdToken(token);
    $("token-message").textContent = "Connecting with the new token\u2026";
    reconnectNow();
  });
}

export function showTokenForm(message) {
  $("token-message").textContent = message;
  if (!formShown) {
    formShown = true;
    $("token-form").hidden = false;
    $("token-input").focus();
  }
}

export function hideTokenForm() {
  if (!formShown) return;
  formShown = false;
  $("token-form").hidden = true;
}
