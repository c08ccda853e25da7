// The page: the new-video form, the live view of one job, and the list of past jobs, wired to the public API.

import { api, apiKey, onUnauthorized } from "./api.js";
import { clearError, clearErrors, el, showError, tieErrors } from "./dom.js";
import { JobHistory } from "./history.js";
import { JobView } from "./live.js";
import { AdvancedParams } from "./params.js";
import { UploadField } from "./uploads.js";
import { CharCounts } from "./counts.js";
import { callbackSecretError, callbackUrlError, webhookRequest } from "./webhook.js";

const $ = (selector) => document.querySelector(selector);
const form = $("#job-form");
const JOB_FIELDS = ["pipeline", "prompt", "image", "voice", "ref_text", "callback_url", "callback_secret"];

const SCRIPT_TASK = "script.generateScript";
const SPEECH_TASK = "f5_to_tts";

const jobs = new JobHistory($("#history"), { onOpen: (job) => openJob(job.id) });
const jobView = new JobView($("#job"), { onChange: () => jobs.load(), onReuse: reuseJob, onDelete: jobDeleted });
const portrait = new UploadField(form, { kind: "portrait", key: "image", input: $("#portrait"),
  preview: $("#portrait-preview") });
const voice = new UploadField(form, { kind: "voice", key: "voice", input: $("#voice"), preview: $("#voice-player") });
// The speech node's narrator_voice param: an upload id, so a file field of its own rather than a text in Advanced.
const narrator = new UploadField(form, { kind: "voice", key: "narrator_voice", input: $("#narrator"),
  preview: $("#narrator-player"), optional: true, remove: $("#narrator-remove") });
// The server's character limits, counted as the user types (no maxlength: a paste over it was cut without a word).
const counts = new CharCounts({ prompt_chars: $("#prompt"), script_chars: $("#script_text"),
  ref_text_chars: $("#ref_text") });
let advanced = null;
let pipelines = [];
let formLoad = Promise.resolve(); // the form's data as it loads (again after a key is given): a submit waits for it

// ---- the API key ---------------------------------------------------------------------------------------------
function askForKey(reason, detail = "") {
  $("#key-panel").hidden = false;
  $("#key-reason").textContent = reason;
  showError($("#key-form"), "api-key", detail);
  $("#api-key").focus();
}

function keyRefused(error) {
  if (apiKey.get()) askForKey("The server refused the saved API key.", error.message);
  else askForKey("This server needs an API key.");
}

async function useKey(event) {
  event.preventDefault();
  apiKey.set($("#api-key").value.trim());
  $("#api-key").value = "";
  clearErrors($("#key-form"));
  $("#key-panel").hidden = true;
  $("#change-key").hidden = !apiKey.get();
  // The form's data needs the key too: load what the refused first try could not.
  await Promise.all([advanced ? null : loadForm(), jobs.load(0)]);
  await openJobFromAddress();
}

// ---- the form ------------------------------------------------------------------------------------------------
function loadForm() {
  formLoad = fetchForm();
  return formLoad;
}

async function fetchForm() {
  try {
    const [catalog, schemas, { limits, ...about }] = await Promise.all([api.pipelines(), api.paramSchemas(),
      api.paramForm()]);
    counts.setLimits(limits);
    for (const field of [portrait, voice, narrator]) field.setLimit(limits?.upload_bytes, limits?.upload_too_large);
    pipelines = catalog.pipelines;
    $("#pipeline").replaceChildren(...pipelines.map(({ name }) => el("option", { value: name }, name)));
    // The own script and the narrator voice have their fields at the top of the form, not in Advanced.
    advanced = new AdvancedParams($("#params"), schemas, about,
      (key) => key === scriptKey() || key === narratorKey());
    showPipelineParams();
    clearError(form, "form");
  } catch (err) {
    // A 401 opens the key panel, which says what is missing; the API's header advice would only confuse here.
    if (err.status !== 401) showError(form, "form", `cannot load the form: ${err.message}`);
  }
}

function currentPipeline() {
  return pipelines.find(({ name }) => name === $("#pipeline").value);
}

/** "script.text": the param the own-script field stands for (the pipeline's script node), or null. */
function scriptKey() {
  const node = currentPipeline()?.nodes.find(({ task }) => task === SCRIPT_TASK);
  return node ? `${node.id}.text` : null;
}

/** "f5_to_tts.narrator_voice": the param the narrator voice field stands for (the pipeline's speech node), or null. */
function narratorKey() {
  const node = currentPipeline()?.nodes.find(({ task }) => task === SPEECH_TASK);
  return node ? `${node.id}.narrator_voice` : null;
}

function showPipelineParams() {
  const pipeline = currentPipeline();
  advanced.show(pipeline ? pipeline.nodes : []);
  $("#script-field").hidden = !scriptKey();
  $("#script-field .field-error").dataset.for = scriptKey() || "script.text";
  $("#narrator-field").hidden = !narratorKey();
  tieErrors(form);
}

function showErrors(errors) {
  for (const [key, message] of Object.entries(errors)) {
    if (advanced?.has(key)) advanced.reveal();
    if (key.startsWith("callback_")) $("#webhook").open = true;
    showError(form, key, message);
  }
}

/** Which field an API error is about: "f5_to_tts.nfe_step: ...", "prompt: ...", "unknown portrait upload ...",
 * "callback_url: ...", "script.text has 20000 characters, ...". */
function fieldOfError(message) {
  // "ref_text has 3000 characters, over the limit ..." names its field too: shown there, not under the button.
  const named = /^([\w.]+)(?:: | has )/.exec(message)?.[1];
  // "f5_to_tts.narrator_voice: unknown voice upload ...", "f5_to_tts.narrator_voice is silent: ...".
  if (narratorKey() && /^[\w.]+/.exec(message)?.[0] === narratorKey()) return "narrator_voice";
  if (named && (JOB_FIELDS.includes(named) || named === scriptKey() || advanced?.has(named))) return named;
  if (message.startsWith("unknown pipeline")) return "pipeline";
  if (message.startsWith("prompt ")) return "prompt";
  const upload = /^unknown (portrait|voice) upload/.exec(message)?.[1];
  if (upload) return upload === "portrait" ? "image" : "voice";
  return "form";
}

function jobRequest([image, voiceId, narratorId], params, webhook) {
  if (narratorId) {
    const [node, name] = narratorKey().split(".");
    (params[node] ||= {})[name] = narratorId;
  }
  return {
    pipeline: $("#pipeline").value,
    prompt: $("#prompt").value,
    image,
    voice: voiceId,
    ref_text: $("#ref_text").value,
    params,
    ...webhook,
  };
}

function webhookFields() {
  return webhookRequest($("#callback_url").value, $("#callback_secret").value);
}

/** Check a webhook field as it is typed, with the server's message. */
function recheckWebhook({ target }) {
  const check = { callback_url: callbackUrlError, callback_secret: callbackSecretError }[target.id];
  if (!check) return;
  const error = check(target.value);
  if (error) showError(form, target.id, error);
  else clearError(form, target.id);
}

function setBusy(busy) {
  const button = $("#submit");
  button.disabled = busy;
  button.textContent = busy ? "Submitting…" : "Make the video";
}

async function uploadIds() {
  const fields = narratorKey() ? [portrait, voice, narrator] : [portrait, voice];
  const results = await Promise.allSettled(fields.map((field) => field.id()));
  if (results.some(({ status }) => status === "rejected")) return null; // each error is shown by its field
  return results.map(({ value }) => value);
}

function formNotReady() {
  return $("#key-panel").hidden ? "the form is not ready: the server's pipelines did not load"
    : "give the API key above first: the form loads with it";
}

async function submitJob(event) {
  event.preventDefault();
  clearErrors(form);
  if (!advanced) await formLoad; // still loading (a click right after the key): not a failure
  if (!advanced) return showError(form, "form", formNotReady());
  const { params, errors } = advanced.collect();
  const script = $("#script_text").value.trim();
  if (script && scriptKey()) {
    const [node, name] = scriptKey().split(".");
    (params[node] ||= {})[name] = $("#script_text").value;
  }
  if (!$("#prompt").value.trim() && !script) errors.prompt = "prompt is empty: give a prompt, or your own script";
  // Every missing input at once: a user who fixed the prompt should not then learn the portrait was missing too.
  for (const field of [portrait, voice]) if (field.missing()) errors[field.key] = field.missing();
  const webhook = webhookFields();
  Object.assign(errors, webhook.errors);
  if (Object.keys(errors).length) return showErrors(errors);
  setBusy(true);
  try {
    const ids = await uploadIds();
    if (!ids) return showError(form, "form", "the job was not sent: see the upload errors above");
    const job = await api.createJob(jobRequest(ids, params, webhook.fields));
    $("#form-note").textContent = "";
    showJob(job);
    await jobs.load(0);
  } catch (err) {
    showErrors({ [fieldOfError(err.message)]: err.message });
  } finally {
    setBusy(false);
  }
}

// ---- reusing a past job's settings -----------------------------------------------------------------------------
/** Put a past job's inputs and settings into the form (its portrait and voice are uploaded again), to submit
 * as they are or edited. */
async function reuseJob(job, { edit = false } = {}) {
  clearErrors(form);
  if (pipelines.some(({ name }) => name === job.pipeline)) {
    $("#pipeline").value = job.pipeline;
    showPipelineParams();
  }
  $("#prompt").value = job.prompt || "";
  $("#ref_text").value = job.ref_text || "";
  const [scriptNode, scriptName] = (scriptKey() || ".").split(".");
  const { [scriptNode]: scriptParams = {}, ...others } = job.params || {};
  const { [scriptName]: ownScript = "", ...scriptOthers } = scriptParams;
  $("#script_text").value = ownScript || "";
  counts.refresh();
  const narratorId = takeNarrator(others);
  advanced.fill({ ...others, [scriptNode]: scriptOthers });
  if (Object.values(others).some((node) => Object.keys(node).length) || Object.keys(scriptOthers).length) {
    advanced.reveal();
  }
  $("#form-note").textContent = `${edit ? "Editing" : "Reusing"} the settings of job ${job.id}: change what you want `
    + "and make the video.";
  $("#create").scrollIntoView({ behavior: "smooth", block: "start" });
  $("#prompt").focus({ preventScroll: true });
  narrator.keep(narratorId, `the narrator voice of job ${job.id} (upload ${narratorId})`);
  await Promise.all([
    portrait.reuse(() => api.inputFile(job.id, "source_image")),
    voice.reuse(() => api.inputFile(job.id, "narrator_voice")),
  ]);
}

/** Take the narrator voice's upload id out of a past job's params ({node: {name: value}}, changed in place): it is
 * kept by the narrator field, not shown in Advanced. */
function takeNarrator(params) {
  if (!narratorKey()) return null;
  const [node, name] = narratorKey().split(".");
  const id = params[node]?.[name] || null;
  if (params[node]) {
    const { [name]: _taken, ...rest } = params[node];
    params[node] = rest;
  }
  return id;
}

function jobDeleted(id) {
  if (jobIdFromAddress() === id) history.replaceState(null, "", location.pathname);
  jobs.load();
}

// ---- one job -------------------------------------------------------------------------------------------------
function jobIdFromAddress() {
  return new URLSearchParams(location.hash.slice(1)).get("job");
}

function showJob(job) {
  jobView.open(job);
  if (jobIdFromAddress() !== job.id) history.replaceState(null, "", `#job=${job.id}`);
  $("#job").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function openJob(id) {
  clearErrors($("#history"));
  try {
    showJob(await api.job(id));
  } catch (err) {
    showError($("#history"), "history", `cannot show job ${id}: ${err.message}`);
  }
}

async function openJobFromAddress() {
  const id = jobIdFromAddress();
  if (id && id !== jobView.id) await openJob(id);
}

// ---- start ---------------------------------------------------------------------------------------------------
function bindEvents() {
  onUnauthorized(keyRefused);
  $("#key-form").addEventListener("submit", useKey);
  $("#change-key").addEventListener("click", () => askForKey("Give another API key."));
  $("#pipeline").addEventListener("change", showPipelineParams);
  form.addEventListener("submit", submitJob);
  $("#webhook").addEventListener("input", recheckWebhook);
  window.addEventListener("hashchange", openJobFromAddress);
}

async function start() {
  bindEvents();
  $("#change-key").hidden = !apiKey.get();
  await Promise.all([loadForm(), jobs.load(0)]);
  await openJobFromAddress();
  document.body.dataset.ready = "true";
}

start();
