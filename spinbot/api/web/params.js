// The Advanced section: one fieldset per pipeline node (its task's one-line description and the backend this server
// runs it on) and one row per param of its task (its description, type, default and bounds), built from the JSON
// schemas of GET /v1/params and GET /v1/params/form. Choices are selects: a schema's enum (schedulers, detectors)
// and, for a native backend, the model files present in the models folder. Values are checked with the API's
// rules and messages (pydantic's), and only values that differ from the defaults are sent.

import { clearError, el, showError } from "./dom.js";

/** What the form needs to know of one param, from its JSON schema. */
export function describeParam(node, name, schema) {
  const variants = schema.anyOf || [schema];
  const types = variants.map((variant) => variant.type);
  const bounds = Object.assign({}, ...variants.map(boundsOf));
  return {
    key: `${node}.${name}`,
    node,
    name,
    type: types.find((type) => type !== "null") || "string",
    nullable: types.includes("null"),
    defaultValue: schema.default === undefined ? null : schema.default,
    bounds,
    description: schema.description || "",
    choices: variants.flatMap((variant) => variant.enum || ("const" in variant ? [variant.const] : [])),
  };
}

function boundsOf(schema) {
  const names = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"];
  return Object.fromEntries(names.filter((name) => schema[name] !== undefined).map((name) => [name, schema[name]]));
}

// ---- parsing and checking, as pydantic does ------------------------------------------------------------------

const INTEGER = /^\s*[+-]?\d+\s*$/;
const NUMBER = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;

/** {value} or {error}: the input's text as the param's type; empty text means the default. */
export function parseParam(param, text) {
  if (param.type === "boolean") return { value: Boolean(text) };
  if (text === "" && (param.type !== "string" || param.nullable)) return { value: param.defaultValue };
  if (param.type === "integer") return parseInteger(text);
  if (param.type === "number") return parseNumber(text);
  return { value: text };
}

function parseInteger(text) {
  if (INTEGER.test(text) || (NUMBER.test(text) && Number.isInteger(Number(text)))) return { value: Number(text) };
  if (NUMBER.test(text)) return { error: "Input should be a valid integer, got a number with a fractional part" };
  return { error: "Input should be a valid integer, unable to parse string as an integer" };
}

function parseNumber(text) {
  if (NUMBER.test(text)) return { value: Number(text) };
  return { error: "Input should be a valid number, unable to parse string as a number" };
}

// Each JSON-schema bound: whether a value keeps it, and pydantic's message when it does not.
const BOUND_CHECKS = {
  exclusiveMinimum: [(value, bound) => value > bound, (bound) => `Input should be greater than ${bound}`],
  minimum: [(value, bound) => value >= bound, (bound) => `Input should be greater than or equal to ${bound}`],
  exclusiveMaximum: [(value, bound) => value < bound, (bound) => `Input should be less than ${bound}`],
  maximum: [(value, bound) => value <= bound, (bound) => `Input should be less than or equal to ${bound}`],
  minLength: [(value, bound) => value.length >= bound, (bound) => `String should have at least ${bound} characters`],
  maxLength: [(value, bound) => value.length <= bound, (bound) => `String should have at most ${bound} characters`],
};
const LENGTH_BOUNDS = ["minLength", "maxLength"];

/** The API's message for a value out of its bounds, or null. */
export function boundsError(param, value) {
  if (typeof value !== "number" && typeof value !== "string") return null;
  for (const [name, bound] of Object.entries(param.bounds)) {
    if (LENGTH_BOUNDS.includes(name) !== (typeof value === "string")) continue;
    const [keeps, message] = BOUND_CHECKS[name];
    if (!keeps(value, bound)) return message(bound);
  }
  return null;
}

/** {value} or {error} for one input. */
export function checkParam(param, input) {
  const parsed = parseParam(param, param.type === "boolean" ? input.checked : input.value);
  if (parsed.error) return parsed;
  const error = boundsError(param, parsed.value);
  return error ? { error } : parsed;
}

// ---- the form ------------------------------------------------------------------------------------------------

function describeBounds({ minimum, maximum, exclusiveMinimum, exclusiveMaximum }) {
  const low = exclusiveMinimum !== undefined ? `> ${exclusiveMinimum}` : minimum !== undefined ? `≥ ${minimum}` : "";
  const high = exclusiveMaximum !== undefined ? `< ${exclusiveMaximum}` : maximum !== undefined ? `≤ ${maximum}` : "";
  return [low, high].filter(Boolean).join(", ");
}

function describeDefault(value) {
  return value === null ? "unset" : JSON.stringify(value);
}

/** A select of the choices; the default stays selectable (marked) when it is not among them. */
function selectFor(param, common, choices, missingNote) {
  const options = choices.map((choice) => el("option", { value: String(choice) }, String(choice)));
  if (param.defaultValue !== null && !choices.includes(param.defaultValue)) {
    options.unshift(el("option", { value: String(param.defaultValue) }, `${param.defaultValue} (${missingNote})`));
  }
  const select = el("select", common, ...options);
  select.value = param.defaultValue === null ? "" : String(param.defaultValue);
  return select;
}

function inputFor(param, files) {
  const id = `param-${param.node}-${param.name}`;
  const common = { id, name: param.key, dataset: { param: param.key } };
  if (param.type === "boolean") {
    return el("input", { ...common, type: "checkbox", checked: param.defaultValue === true });
  }
  if (param.choices.length) return selectFor(param, common, param.choices, "default");
  if (files?.choices.length) return selectFor(param, common, files.choices, "default; not in the models folder");
  const numeric = param.type === "integer" || param.type === "number";
  const text = param.defaultValue === null ? "" : String(param.defaultValue);
  return el("input", {
    ...common,
    type: "text",
    inputmode: numeric ? (param.type === "integer" ? "numeric" : "decimal") : undefined,
    value: text,
    placeholder: param.defaultValue === null ? "unset" : undefined,
    spellcheck: "false",
  });
}

function paramRow(param, files) {
  const input = inputFor(param, files);
  const hint = [param.type, `default ${describeDefault(param.defaultValue)}`, describeBounds(param.bounds), files?.note]
    .filter(Boolean).join(" · ");
  const hintId = `${input.id}-hint`;
  input.setAttribute("aria-describedby", hintId);
  return el("div", { class: "param", dataset: { param: param.key } },
    el("label", { for: input.id }, param.name),
    input,
    el("p", { class: "hint", id: hintId }, el("span", { class: "description" }, param.description), " ",
      el("small", {}, hint)),
    el("p", { class: "field-error", dataset: { for: param.key }, role: "alert" }));
}

export class AdvancedParams {
  /** root: the container; schemas: GET /v1/params (task -> JSON schema); form: GET /v1/params/form (task ->
   * description, backend, model files); skip: param keys shown elsewhere on the page (the own script). */
  constructor(root, schemas, form = {}, skip = () => false) {
    Object.assign(this, { root, schemas, form, skip });
    this.params = [];
    root.addEventListener("input", (event) => this.recheck(event.target));
    root.addEventListener("change", (event) => this.recheck(event.target));
  }

  /** Build the fieldsets for a pipeline's nodes ({id, task}). */
  show(nodes) {
    this.params = [];
    const fieldsets = nodes.map((node) => this.fieldset(node));
    this.root.replaceChildren(...fieldsets);
  }

  fieldset(node) {
    const schema = this.schemas[node.task];
    const about = this.form[node.task] || {};
    const legend = el("legend", {}, node.id, " ", el("small", {}, node.id === node.task ? "" : node.task));
    const backend = about.backend
      ? el("span", { class: "backend" }, ` · runs on the ${about.backend} backend (${about.setting})`) : null;
    const description = el("p", { class: "node-description muted" }, about.description || "", backend);
    if (!schema) return el("fieldset", { class: "node-params" }, legend, el("p", { class: "muted" }, "no params"));
    const params = Object.entries(schema.properties || {})
      .map(([name, prop]) => describeParam(node.id, name, prop))
      .filter((param) => !this.skip(param.key, node));
    this.params.push(...params);
    const files = about.files || {};
    return el("fieldset", { class: "node-params", dataset: { node: node.id } }, legend, description,
      ...params.map((param) => paramRow(param, files[param.name])));
  }

  input(param) {
    return this.root.querySelector(`[data-param="${CSS.escape(param.key)}"]:is(input, select)`);
  }

  recheck(input) {
    const param = this.params.find((candidate) => candidate.key === input?.dataset?.param);
    if (!param) return;
    const { error } = checkParam(param, input);
    if (error) showError(this.root, param.key, error);
    else clearError(this.root, param.key);
  }

  /** {params: {node: {name: value}} with only changed values, errors: {key: message}}. */
  collect() {
    const params = {};
    const errors = {};
    for (const param of this.params) {
      const { value, error } = checkParam(param, this.input(param));
      if (error) errors[param.key] = error;
      else if (value !== param.defaultValue) (params[param.node] ||= {})[param.name] = value;
    }
    return { params, errors };
  }

  /** Show a past job's params ({node: {name: value}}): every other param back to its default. */
  fill(values) {
    for (const param of this.params) {
      const given = values?.[param.node]?.[param.name];
      const value = given === undefined ? param.defaultValue : given;
      const input = this.input(param);
      if (param.type === "boolean") input.checked = value === true;
      else {
        if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === String(value ?? ""))) {
          input.append(el("option", { value: String(value) }, String(value)));
        }
        input.value = value === null ? "" : String(value);
      }
      clearError(this.root, param.key);
    }
  }

  has(key) {
    return this.params.some((param) => param.key === key);
  }

  /** Open the section so that an error inside it can be seen. */
  reveal() {
    this.root.closest("details")?.setAttribute("open", "");
  }
}
