// The "New run" form: sends what was typed, and puts the server's reasons beside the fields.

import { createRun, describe } from "./api.js";
import { byId, h, setText, show } from "./dom.js";
import { dayString } from "./format.js";

const FIELDS = ["date_start", "date_fin", "lag", "name", "seed"];
const INTEGER_FIELDS = new Set(["lag", "seed"]);
const INTEGER = /^-?\d+$/;

/**
 * The body as JSON text. Integers go in as typed digits (a seed may exceed what a JavaScript
 * number holds exactly); anything else is sent as a string for the server to judge, so the
 * page never has validation rules of its own that could drift from the API's.
 */
export function bodyOf(form) {
  const parts = [];
  for (const name of FIELDS) {
    const input = form.elements.namedItem(name);
    const raw = name === "name" ? input.value : input.value.trim();
    if (raw === "") continue;
    const value =
      INTEGER_FIELDS.has(name) && INTEGER.test(raw) ? BigInt(raw).toString() : JSON.stringify(raw);
    parts.push(`${JSON.stringify(name)}:${value}`);
  }
  return `{${parts.join(",")}}`;
}

function clearErrors(form) {
  for (const name of FIELDS) {
    form.elements.namedItem(name).removeAttribute("aria-invalid");
    setText(byId(`${name}-error`), "");
  }
  show(byId("form-error"), false);
}

/** Each reason beside its field; reasons about no field of the form go above it. */
function showErrors(form, error) {
  const elsewhere = {};
  for (const [name, reasons] of Object.entries(error.fields ?? {})) {
    if (!FIELDS.includes(name)) {
      elsewhere[name] = reasons;
      continue;
    }
    form.elements.namedItem(name).setAttribute("aria-invalid", "true");
    setText(byId(`${name}-error`), [reasons].flat().join(" "));
  }
  const first = FIELDS.map((name) => form.elements.namedItem(name)).find((input) =>
    input.hasAttribute("aria-invalid"),
  );
  const box = byId("form-error");
  const count = Object.keys(error.fields ?? {}).length - Object.keys(elsewhere).length;
  const fieldsNeed = count === 1 ? "one field needs" : `${count} fields need`;
  const summary =
    count > 0 ? `The run was not launched: ${fieldsNeed} attention.` : "The run was not launched.";
  const rest = Object.keys(elsewhere).length > 0 || count === 0;
  const details = rest ? [h("br"), describe({ message: error.message, fields: elsewhere })] : [];
  box.replaceChildren(summary, ...details);
  show(box, true);
  (first ?? box).focus();
}

function setDefaults(form) {
  const today = Math.floor(Date.now() / 86_400_000);
  form.elements.namedItem("date_start").value = dayString(today - 365);
  form.elements.namedItem("date_fin").value = dayString(today);
  form.elements.namedItem("lag").value = "7";
}

/** Wires the form; onCreated(run) is called with the server's answer once a run is queued. */
export function setUpForm(onCreated) {
  const form = byId("run-form");
  const button = byId("submit");
  const status = byId("form-status");
  setDefaults(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    button.disabled = true;
    setText(button, "Launching…");
    setText(status, "");
    try {
      const run = await createRun(bodyOf(form));
      clearErrors(form);
      status.replaceChildren(
        `Run #${run.id} is ${run.status}. `,
        h("a", { href: `#/calculations/${run.id}` }, "Open it"),
      );
      onCreated(run);
    } catch (error) {
      clearErrors(form);
      showErrors(form, error);
    } finally {
      button.disabled = false;
      setText(button, "Launch run");
    }
  });
}
