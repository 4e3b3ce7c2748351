// Small DOM helpers. Text always goes in through textContent, never as HTML, so a run's
// name can hold any characters.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

/** An HTML element: h("a", {href: "#/"}, "text", otherNode). */
export function h(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, same call shape as h(). */
export function svg(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Sets a node's text only when it differs, so unchanged parts are not touched. */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function byId(id) {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`the page has no #${id}`);
  return node;
}

export function show(node, visible) {
  if (node.hidden === visible) node.hidden = !visible;
}

/** Shows a status as a badge: its word, and a colour per status (CSS) that never stands alone. */
export function renderBadge(node, status) {
  const name = /^[a-z_]+$/.test(status) ? `badge badge-${status}` : "badge";
  if (node.className !== name) node.className = name;
  setText(node, status);
}
