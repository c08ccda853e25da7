// The page: the new-video form, the live view of one job, and the list of past jobs, wired to the public API.

import { api, apiKey, onUnauthorized } from "./api.js";
import { clearError, clearErrors, el, showError, tieErrors } from "./dom.js";
import { JobHistory } from "./history.js";
import { JobView } from "./live.js";
import { AdvancedParams } from "./params.js";
import { UploadField } from "./uploads.js";

const $ = (selector) => document.querySelector(selector);
const form = $("#job-form");
const JOB_FIELDS = ["pipeline", "prompt", "image", "voice", "ref_text"];

const SCRIPT_TASK = "script.generateScript";

const jobs = new JobHistory($("#history"), { onOpen: (job) => openJob(job.id) });
const jobView = new JobView($("#job"), { onChange: () => jobs.load(), onReuse: reuseJob, onDelete: jobDeleted });
const portrait = new UploadField(form, { kind: "portrait", key: "image", input: $("#portrait"),
  preview: $("#portrait-preview") });
const voice = new UploadField(form, { kind: "voice", key: "voice", input: $("#voice"), preview: $("#voice-player") });
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
    const [catalog, schemas, about] = await Promise.all([api.pipelines(), api.paramSchemas(), api.paramForm()]);
    pipelines = catalog.pipelines;
    $("#pipeline").replaceChildren(...pipelines.map(({ name }) => el("option", { value: name }, name)));
    // The own script has its field at the top of the form, not in Advanced.
    advanced = new AdvancedParams($("#params"), schemas, about, (key) => key === scriptKey());
    showPipelineParams();
    clearError(form, "form");
  } catch (err) {
    showError(form, "form", `cannot load the form: ${err.message}`);
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

function showPipelineParams() {
  const pipeline = currentPipeline();
  advanced.show(pipeline ? pipeline.nodes : []);
  $("#script-field").hidden = !scriptKey();
  $("#script-field .field-error").dataset.for = scriptKey() || "script.text";
  tieErrors(form);
}

function showErrors(errors) {
  for (const [key, message] of Object.entries(errors)) {
    if (advanced?.has(key)) advanced.reveal();
    showError(form, key, message);
  }
}

/** Which field an API error is about: "f5_to_tts.nfe_step: ...", "prompt: ...", "unknown portrait upload ...". */
function fieldOfError(message) {
  const named = /^([\w.]+): /.exec(message)?.[1];
  if (named && (JOB_FIELDS.includes(named) || named === scriptKey() || advanced?.has(named))) return named;
  if (message.startsWith("unknown pipeline")) return "pipeline";
  if (message.startsWith("prompt ")) return "prompt";
  const upload = /^unknown (portrait|voice) upload/.exec(message)?.[1];
  if (upload) return upload === "portrait" ? "image" : "voice";
  return "form";
}

function jobRequest(image, voiceId, params) {
  return {
    pipeline: $("#pipeline").value,
    prompt: $("#prompt").value,
    image,
    voice: voiceId,
    ref_text: $("#ref_text").value,
    params,
  };
}

function setBusy(busy) {
  const button = $("#submit");
  button.disabled = busy;
  button.textContent = busy ? "Submitting…" : "Make the video";
}

async function uploadIds() {
  const results = await Promise.allSettled([portrait.id(), voice.id()]);
  if (results.some(({ status }) => status === "rejected")) return null; // each error is shown by its field
  return results.map(({ value }) => value);
}

async function submitJob(event) {
  event.preventDefault();
  clearErrors(form);
  if (!advanced) await formLoad; // still loading (a click right after the key): not a failure
  if (!advanced) return showError(form, "form", "the form is not ready: the server's pipelines did not load");
  const { params, errors } = advanced.collect();
  const script = $("#script_text").value.trim();
  if (script && scriptKey()) {
    const [node, name] = scriptKey().split(".");
    (params[node] ||= {})[name] = $("#script_text").value;
  }
  if (!$("#prompt").value.trim() && !script) errors.prompt = "prompt is empty: give a prompt, or your own script";
  if (Object.keys(errors).length) return showErrors(errors);
  setBusy(true);
  try {
    const ids = await uploadIds();
    if (!ids) return showError(form, "form", "the job was not sent: see the upload errors above");
    const job = await api.createJob(jobRequest(...ids, params));
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
  advanced.fill({ ...others, [scriptNode]: scriptOthers });
  if (Object.keys(others).length || Object.keys(scriptOthers).length) advanced.reveal();
  $("#form-note").textContent = `${edit ? "Editing" : "Reusing"} the settings of job ${job.id}: change what you want `
    + "and make the video.";
  $("#create").scrollIntoView({ behavior: "smooth", block: "start" });
  $("#prompt").focus({ preventScroll: true });
  await Promise.all([
    portrait.reuse(() => api.inputFile(job.id, "source_image")),
    voice.reuse(() => api.inputFile(job.id, "narrator_voice")),
  ]);
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
