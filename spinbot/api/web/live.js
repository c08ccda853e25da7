// The job view: per-node status and progress from the server-sent events of GET /v1/jobs/{id}/events, the overall
// progress with its time estimate, elapsed time, the script once written (and where it came from), the speech as
// soon as its node finishes, the video as it renders (player.js) and when the job is done (the talking head of a
// job that stopped after it), each node's backend, the downloads, the job's inputs and settings, and cancel /
// retry / reuse / delete.

import { api, isFinal, jobEvents, withKey } from "./api.js";
import { el, formatSeconds, parseTime, setSource } from "./dom.js";
import { downloadItems, inputItems, inputUrl, nodeDetails, scriptMeta, scriptOrigin, settingItems, talkingHead }
  from "./jobinfo.js";
import { LivePlayer } from "./player.js";
import { OverallProgress } from "./progress.js";

// A later state never gives way to an earlier one that arrives late (a GET answer overtaken by events).
const STATE_ORDER = { pending: 0, queued: 1, running: 2, succeeded: 3, failed: 3, cancelled: 3 };

// A node started again (a takeover, a retry, another worker) is a later attempt: its states replace the earlier
// attempt's whatever their order, so a restart from 0 shows as one.
function newer(shown, incoming) {
  if (!shown) return incoming;
  if (shown.attempt != null && incoming.attempt != null && shown.attempt !== incoming.attempt) {
    return incoming.attempt > shown.attempt ? incoming : shown;
  }
  const order = (state) => STATE_ORDER[state.status] ?? 0;
  if (order(incoming) !== order(shown)) return order(incoming) > order(shown) ? incoming : shown;
  if (incoming.status === "running" && (incoming.progress ?? 0) < (shown.progress ?? 0)) {
    return { ...incoming, progress: shown.progress, message: incoming.message || shown.message };
  }
  return incoming;
}

const percent = (progress) => `${Math.round((progress || 0) * 100)}%`;

function speechArtifact(job) {
  return job.artifacts.find((artifact) => (artifact.content_type || "").startsWith("audio/"));
}

/** The video of the last node that made one: the pipeline's result. */
export function finalVideo(job) {
  const order = job.nodes.map((node) => node.id);
  const videos = job.artifacts.filter((artifact) => (artifact.content_type || "").startsWith("video/"));
  return videos.sort((a, b) => order.indexOf(a.node_id) - order.indexOf(b.node_id)).at(-1);
}

export class JobView {
  constructor(root, { onChange = () => {}, onReuse = () => {}, onDelete = () => {} } = {}) {
    this.root = root;
    this.onChange = onChange; // called with the job whenever its status changes
    this.onReuse = onReuse; // called with the job and {edit} to put its settings into the form
    this.onDelete = onDelete; // called with the id of a job deleted here
    this.overall = new OverallProgress(root);
    this.job = null;
    this.nodes = new Map(); // node id -> {status, progress, message, error, seconds}
    this.progress = 0; // the job's overall progress, as the API computes it: the highest seen, it never goes back
    this.events = null;
    this.timer = null;
    this.$ = (selector) => root.querySelector(selector);
    this.player = new LivePlayer(this.$("#job-video"), this.$("#final-video"), this.$("#video-note"));
    this.$("#cancel-job").addEventListener("click", () => this.act("cancel"));
    this.$("#retry-job").addEventListener("click", () => this.act("retry"));
    this.$("#delete-job").addEventListener("click", () => this.act("delete"));
    this.$("#reuse-job").addEventListener("click", () => this.onReuse(this.job));
    this.$("#edit-job").addEventListener("click", () => this.onReuse(this.job, { edit: true }));
    for (const media of ["#job-portrait", "#job-voice"]) {
      this.$(media).addEventListener("error", () => (this.$(media).hidden = true));
    }
  }

  get id() {
    return this.job?.id;
  }

  /** Show a job (from the API) and follow its events until it ends. */
  open(job) {
    this.close();
    this.job = null;
    this.nodes.clear();
    this.progress = 0;
    this.overall.reset(job.nodes.map((node) => node.id));
    this.$("#nodes").replaceChildren(...job.nodes.map((node) => this.nodeRow(node)));
    this.$("#job-error").textContent = "";
    this.player.stop(job.id);
    for (const media of this.root.querySelectorAll("audio, video")) unload(media);
    this.root.hidden = false;
    this.update(job);
    this.showInputs(job);
    this.showSecret(job.callback_secret);
    this.follow();
  }

  close() {
    this.events?.close();
    this.events = null;
    clearInterval(this.timer);
  }

  // ---- following -------------------------------------------------------------------------------------------
  follow() {
    if (isFinal(this.job.status)) return;
    this.timer = setInterval(() => this.showElapsed(), 200);
    const events = jobEvents(this.job.id);
    this.events = events;
    events.addEventListener("snapshot", (message) => this.onSnapshot(JSON.parse(message.data)));
    events.addEventListener("node", (message) => this.onNodeEvent(JSON.parse(message.data)));
    events.addEventListener("job", (message) => this.onJobEvent(JSON.parse(message.data)));
    events.addEventListener("error", () => this.onStreamError(events));
  }

  // The stream ends after a final snapshot or job event, and only those say that the whole job is recorded: a GET
  // answer can catch the job between its final status and its last node updates.
  onSnapshot(job) {
    this.update(job);
    if (isFinal(job.status)) this.close();
  }

  onNodeEvent(event) {
    this.overall.onNodeEvent(event);
    this.raiseProgress(event.job_progress);
    this.showNode(event.node_id, { status: event.status, progress: event.progress, message: event.message,
      attempt: event.attempt, error: event.status === "failed" ? event.message : undefined });
    this.player.onNodeEvent(event);
    this.showOverall();
    // Artifacts, the script and errors are in the job: read it again whenever a node ends.
    if (isFinal(event.status)) this.refresh();
  }

  onJobEvent(event) {
    this.raiseProgress(event.progress);
    this.showStatus(event.status, event.message);
    if (!isFinal(event.status)) return;
    this.close();
    this.refresh();
  }

  onStreamError(events) {
    if (events !== this.events || isFinal(this.job.status)) return;
    // EventSource reconnects by itself (and gets a snapshot first); only a refused stream stays closed.
    if (events.readyState === EventSource.CLOSED) {
      this.$("#job-error").textContent = "lost the live updates of this job; showing its last known state";
      this.refresh();
    }
  }

  async refresh() {
    const id = this.job.id;
    try {
      const job = await api.job(id);
      if (this.job?.id === id) this.update(job);
    } catch (err) {
      if (this.job?.id === id) this.$("#job-error").textContent = err.message;
    }
  }

  async act(action) {
    const button = this.$(`#${action}-job`);
    button.disabled = true;
    this.$("#job-error").textContent = "";
    try {
      if (action === "retry") this.open(await this.retried(this.job));
      else if (action === "delete") await this.delete();
      else this.update(await api.cancel(this.job.id));
    } catch (err) {
      this.$("#job-error").textContent = `${action} failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  async delete() {
    const id = this.job.id;
    await api.deleteJob(id);
    this.close();
    this.player.stop();
    this.job = null;
    for (const media of this.root.querySelectorAll("audio, video")) unload(media);
    this.root.hidden = true;
    this.onDelete(id);
  }

  /** Retry a failed job and wait until it has started again (or failed again), so that its events can be followed. */
  async retried(failed) {
    await api.retry(failed.id);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const job = await api.job(failed.id);
      const restarted = job.status !== "failed" || job.finished_at !== failed.finished_at;
      if (restarted || Date.now() > deadline) return job;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  // ---- showing ---------------------------------------------------------------------------------------------
  /** Show a whole job (a GET answer or a snapshot event). */
  update(job) {
    const previous = this.job;
    const status = previous && !isFinal(job.status) ? newer({ status: previous.status }, job).status : job.status;
    this.job = { ...job, status };
    this.raiseProgress(job.progress);
    this.$("#job-id").textContent = job.id;
    this.$("#job-prompt").textContent = job.prompt || "";
    for (const node of job.nodes) this.showNode(node.id, node);
    this.overall.onJob(job);
    this.showStatus(this.job.status, job.error);
    this.showScript(job.script, scriptMeta(job));
    this.showSpeech(job);
    this.showVideo(job);
    this.showDownloads(job);
    for (const node of job.nodes) this.showDetails(node);
    this.$("#job-input-values").replaceChildren(...inputItems(job)); // the webhook's state changes as it is sent
    this.showOverall();
  }

  showStatus(status, error) {
    const changed = this.job.status !== status || this.$("#job-status").textContent !== status;
    this.job.status = status;
    const badge = this.$("#job-status");
    badge.textContent = status;
    badge.dataset.status = status;
    this.$("#cancel-job").hidden = isFinal(status);
    this.$("#retry-job").hidden = !["failed", "interrupted"].includes(status);
    this.$("#edit-job").hidden = status !== "failed";
    this.$("#delete-job").hidden = !isFinal(status);
    this.showOverall();
    if (error && status === "failed") this.$("#job-error").textContent = error;
    if (isFinal(status)) this.showElapsed();
    if (changed) this.onChange(this.job);
  }

  nodeRow(node) {
    return el("li", { class: "node", dataset: { node: node.id, status: node.status } },
      el("span", { class: "node-name" }, node.id),
      el("span", { class: "status node-status" }, node.status),
      el("progress", { max: 1, value: node.progress || 0, "aria-label": `${node.id} progress` }),
      el("span", { class: "node-percent" }, percent(node.progress)),
      el("span", { class: "node-seconds" }),
      el("span", { class: "node-message" }),
      el("span", { class: "node-details" }),
      el("p", { class: "field-error node-error", role: "alert" }));
  }

  showDetails(node) {
    const row = this.$(`.node[data-node="${CSS.escape(node.id)}"]`);
    if (row) row.querySelector(".node-details").textContent = nodeDetails(node);
  }

  showOverall() {
    if (this.job) this.overall.show(this.nodes, this.job.status, this.progress);
  }

  raiseProgress(progress) {
    if (typeof progress === "number") this.progress = Math.max(this.progress, progress);
  }

  showNode(id, incoming) {
    const row = this.$(`.node[data-node="${CSS.escape(id)}"]`);
    if (!row) return;
    const shown = this.nodes.get(id);
    // events name their attempt, a job's nodes count theirs: the same number
    const attempt = incoming.attempt ?? incoming.attempts ?? shown?.attempt;
    const state = newer(shown, { ...shown, ...defined(incoming), attempt });
    this.nodes.set(id, state);
    const progress = state.status === "succeeded" ? 1 : state.progress || 0;
    row.dataset.status = state.status;
    row.querySelector(".node-status").textContent = state.status;
    row.querySelector("progress").value = progress;
    row.querySelector(".node-percent").textContent = percent(progress);
    row.querySelector(".node-message").textContent = state.status === "failed" ? "" : state.message || "";
    row.querySelector(".node-seconds").textContent = state.seconds ? formatSeconds(state.seconds) : "";
    row.querySelector(".node-error").textContent = state.status === "failed" ? state.error || "" : "";
  }

  showElapsed() {
    if (!this.job) return;
    const start = parseTime(this.job.started_at) ?? parseTime(this.job.created_at);
    const end = parseTime(this.job.finished_at) ?? (isFinal(this.job.status) ? null : Date.now());
    if (start === null || end === null) return;
    this.$("#job-elapsed").textContent = formatSeconds(Math.max(0, end - start) / 1000);
  }

  showScript(script, meta) {
    this.$("#job-script").hidden = !script;
    this.$("#job-script-text").textContent = script || "";
    const origin = meta ? scriptOrigin(meta, { brief: true }) : "";
    this.$("#job-script-source").textContent = origin ? `Script: ${origin}.` : "";
    this.$("#job-script-source").dataset.source = meta?.source || "";
  }

  showSpeech(job) {
    const speech = speechArtifact(job);
    this.$("#job-speech").hidden = !speech;
    if (speech) setSource(this.$("#tts-audio"), withKey(speech.url));
  }

  /** The final video of a job that succeeded; the talking head before upscaling of one that stopped after it. */
  showVideo(job) {
    const done = job.status === "succeeded";
    const video = done ? finalVideo(job) : isFinal(job.status) ? talkingHead(job) : null;
    const url = video && withKey(video.url);
    this.$("#final-video-link").hidden = !video;
    this.$("#job-video-title").textContent = done || !video ? "Video" : "Talking head (before upscaling)";
    if (this.player.show(job, url)) return; // the live output plays until the final video is there
    this.$("#job-video").hidden = !video;
    if (!video) return;
    setSource(this.$("#final-video"), url);
    this.$("#final-video-link").href = url;
    this.$("#final-video-link").textContent = done ? "Download the video" : "Download the talking head";
  }

  showDownloads(job) {
    this.$("#job-downloads").hidden = !job.artifacts.length;
    this.$("#downloads").replaceChildren(...downloadItems(job));
  }

  /** The job's prompt, transcript, portrait, voice and changed settings. */
  /** The webhook's signing secret the server made: only the answer that created the job carries it. */
  showSecret(secret) {
    this.$("#job-webhook-secret").hidden = !secret;
    this.$("#job-webhook-secret-value").textContent = secret || "";
  }

  showInputs(job) {
    this.$("#job-settings").replaceChildren(...settingItems(job));
    for (const [selector, name] of [["#job-portrait", "source_image"], ["#job-voice", "narrator_voice"]]) {
      const media = this.$(selector);
      media.hidden = false;
      setSource(media, inputUrl(job, name));
    }
  }
}

/** Stop a media element and forget its source (the last job's speech must not play on under the next job). */
function unload(media) {
  media.pause();
  media.removeAttribute("src");
  media.removeAttribute("data-src");
  media.load();
}

function defined(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined && value !== null));
}
