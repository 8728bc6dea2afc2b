// The contract the page shares with the server, typed once on the Python side
// (projctl.events.dashboard_contract) and embedded by the server in the page it serves,
// as a JSON block the page reads and never executes: the project fields, the statuses,
// the event names and the timings. Nothing here retypes them.

function readContract() {
  const block = document.getElementById("contract");
  let contract = null;
  try {
    contract = block ? JSON.parse(block.textContent) : null;
  } catch (error) {
    // Not filled in: the page was not served by a projctl server.
  }
  if (!contract || typeof contract !== "object") {
    throw new Error("the page's contract is missing: the server embeds it in the page");
  }
  return contract;
}

const contract = readContract();

function strings(value, what) {
  if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) {
    throw new Error("the page's contract has no " + what);
  }
  return Object.freeze(value.slice());
}

function millis(value, what) {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error("the page's contract has no " + what);
  }
  return value;
}

/** The statuses of the model, in the order the counts show them. */
export const STATUSES = strings(contract.statuses, "statuses");
/** Every field of a project, in wire order. */
export const PROJECT_FIELDS = strings(contract.project_fields, "project fields");
/** The lifecycle event types by the change they carry: created, updated, deleted. */
const events = contract.events || {};
export const EVENTS = Object.freeze({
  created: strings([events.created], "created event")[0],
  updated: strings([events.updated], "updated event")[0],
  deleted: strings([events.deleted], "deleted event")[0],
});
/** Every lifecycle event type; any other message type is ignored (or a projects message). */
export const EVENT_TYPES = new Set(Object.values(EVENTS));
/** Messages that carry the whole project list (a snapshot, a resync). */
export const PROJECTS_MESSAGES = new Set(strings(contract.projects_messages, "projects messages"));
/**
 * What an emitted event's type looks like (`projctl emit`): an event of any such type that
 * is neither a lifecycle event nor a projects message is shown, changing no project.
 */
const emittedPattern = new RegExp(
  "^(?:" + strings([contract.emitted_type_pattern], "emitted event pattern")[0] + ")$"
);
export function isEmittedType(type) {
  return typeof type === "string" && !EVENT_TYPES.has(type) && !PROJECTS_MESSAGES.has(type) &&
    emittedPattern.test(type);
}
/** How long a created or updated row (and its changed cells) stays highlighted. */
export const HIGHLIGHT_MS = millis(contract.highlight_ms, "highlight time");
/** How long a deleted row stays on screen, struck through, before it disappears. */
export const DELETED_LINGER_MS = millis(contract.deleted_linger_ms, "deleted linger time");
/** The reconnect backoff: the first wait, doubled on each failure up to the last. */
export const BACKOFF_FIRST_MS = millis(contract.backoff_first_ms, "first backoff");
export const BACKOFF_MAX_MS = millis(contract.backoff_max_ms, "longest backoff");
/** How long the page fails to reconnect before it says where to look for the server. */
export const LOST_HINT_MS = millis(contract.lost_hint_ms, "lost server hint time");
