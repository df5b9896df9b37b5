// Tiny DOM builders: every value goes in as text or an attribute, never as HTML, so
// nothing a job carries (labels, program text, error details) can inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: h("a", {href: "#/x"}, "text", otherNode). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, same signature as h(). */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** A definition list from [term, value] pairs; a null value shows as an em dash. */
export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.map(([term, value]) => [
    h("dt", {}, term),
    h("dd", {}, value === null || value === undefined || value === "" ? "—" : value),
  ]));
}

export function mono(text) {
  return h("code", {}, text);
}
