// DOM helpers shared by the views. Nothing here writes markup or inline styles: every
// value from the server is set with textContent or setAttribute, so untrusted names can
// only ever show as text.

export function $(id) {
  return document.getElementById(id);
}

/** Every control, format or separator character (Unicode categories Cc, Cf, Zl, Zp). */
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
const NAMED_ESCAPES = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };

/**
 * Text as the page shows it: each of those characters as a visible escape (U+202E as
 * "\u202e", ESC as "\x1b"), as the terminal shows them. A bidi override, a direction
 * mark or a zero-width character would otherwise reorder or hide what a name says
 * ("bidi \u202egnp.exe" read as "bidi exe.png"), or make two names look the same.
 */
export function visible(value) {
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
export function el(tag, className, content) {
  var node = document.createElement(tag);
  if (className) node.className = className;
  if (content !== undefined && content !== null) node.textContent = visible(String(content));
  return node;
}

export function setText(node, value) {
  if (node.textContent !== value) node.textContent = value;
}
