// Small DOM helpers shared by the page's modules.

/** Create an element: el("p", {class: "x", dataset: {node: "a"}}, "text", child, ...). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== undefined && child !== null));
  return node;
}

/** The error paragraph for a field: <p class="field-error" data-for="KEY">. */
export function errorSlot(root, key) {
  return root.querySelector(`.field-error[data-for="${CSS.escape(key)}"]`);
}

/** The input, textarea or select whose error a slot shows (the one in the slot's field). */
function controlOf(slot) {
  return slot.closest(".field, .param")?.querySelector("input, textarea, select") || null;
}

let slotIds = 0;

/** Tie an error slot to its control once: the control is described by the slot (aria-describedby). */
function tie(slot) {
  const control = controlOf(slot);
  if (!control) return null;
  slot.id ||= `error-${++slotIds}`;
  const described = (control.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
  if (!described.includes(slot.id)) control.setAttribute("aria-describedby", [...described, slot.id].join(" "));
  return control;
}

/** Show a message next to its field; true when that field has a slot on the page. */
export function showError(root, key, message) {
  const slot = errorSlot(root, key);
  if (!slot) return false;
  slot.textContent = message;
  slot.closest(".field, .param")?.classList.add("invalid");
  tie(slot)?.setAttribute("aria-invalid", "true");
  return true;
}

export function clearError(root, key) {
  const slot = errorSlot(root, key);
  if (!slot) return;
  slot.textContent = "";
  slot.closest(".field, .param")?.classList.remove("invalid");
  tie(slot)?.removeAttribute("aria-invalid");
}

/** Tie every error slot under root to its control (run once the form is built). */
export function tieErrors(root) {
  for (const slot of root.querySelectorAll(".field-error[data-for]")) tie(slot);
}

export function clearErrors(root) {
  for (const slot of root.querySelectorAll(".field-error")) clearError(root, slot.dataset.for);
}

export function formatSeconds(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.floor(seconds % 60)} s`;
}

/** The API's timestamps are UTC; SQLite gives them back without an offset, which JS would read as local time. */
export function parseTime(iso) {
  if (!iso) return null;
  const hasZone = /(Z|[+-]\d\d:?\d\d)$/.test(iso);
  const time = Date.parse(hasZone ? iso : `${iso}Z`);
  return Number.isNaN(time) ? null : time;
}

/** Set a media element's src only when it changes, so that playing media is not reloaded. */
export function setSource(media, url) {
  if (media.dataset.src === url) return;
  media.dataset.src = url;
  media.src = url;
}
