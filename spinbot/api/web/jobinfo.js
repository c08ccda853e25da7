// What a job's record says beyond its progress: which backend ran each node and which params it ignored, where
// the script came from, the files to download, and the inputs and settings the job was made with.

import { jobInputUrl, mediaUrl } from "./api.js";
import { el } from "./dom.js";

const SCRIPT_TASK = "script.generateScript";

/** One line under a node: its backend and the params it ignored, or where the script came from. */
export function nodeDetails(node) {
  const meta = node.meta || {};
  if (node.task === SCRIPT_TASK && meta.source) return scriptOrigin(meta);
  if (!meta.backend) return "";
  const ignored = Object.keys(meta.ignored_params || {});
  return `backend ${meta.backend} · ${ignored.length ? `ignored: ${ignored.join(", ")}` : "no param ignored"}`;
}

/** Where the job's script came from, in words: under the script step, with the reason the fallback script was used;
 * above the script itself (`brief`), without it: the long reason was shown twice, a few lines apart. */
export function scriptOrigin(meta, { brief = false } = {}) {
  if (meta.source === "user") return "your own script";
  if (meta.source === "ollama") return `written by the LLM (${meta.model})`;
  if (meta.source === "fallback") {
    return `the fallback script: the LLM could not be used (${brief ? "why: see the script step" : meta.reason})`;
  }
  return meta.source ? `from ${meta.source}` : "";
}

export function scriptMeta(job) {
  return job.nodes.find((node) => node.task === SCRIPT_TASK)?.meta || null;
}

/** [label, file name to save as] for an artifact. */
function describeArtifact(artifact, job) {
  const type = artifact.content_type || "";
  const extension = { "audio/wav": "wav", "audio/x-wav": "wav", "video/mp4": "mp4" }[type] || type.split("/")[1] || "bin";
  const last = job.nodes.at(-1)?.id;
  const short = job.id.slice(0, 8);
  if (type.startsWith("audio/")) return ["Speech", `speech-${short}.${extension}`];
  if (type.startsWith("video/") && artifact.node_id === last) return ["Final video", `video-${short}.${extension}`];
  if (type.startsWith("video/")) return ["Talking head before upscaling", `talking-head-${short}.${extension}`];
  return [`${artifact.node_id} ${artifact.name}`, `${artifact.node_id}-${artifact.name}-${short}.${extension}`];
}

function describeSize(bytes) {
  if (!Number.isFinite(bytes)) return "";
  return bytes < 1 << 20 ? `${Math.max(1, Math.round(bytes / 1024))} KB` : `${(bytes / (1 << 20)).toFixed(1)} MB`;
}

/** A download link per artifact the job has, whatever its status (a failed job keeps what it made). */
export function downloadItems(job) {
  return job.artifacts.map((artifact) => {
    const [label, filename] = describeArtifact(artifact, job);
    return el("li", { dataset: { node: artifact.node_id, name: artifact.name } },
      el("a", { href: mediaUrl(artifact.url), download: filename }, label),
      el("small", { class: "muted" }, ` ${filename.split(".").at(-1).toUpperCase()}, ${describeSize(artifact.size)}`));
  });
}

/** The talking head before upscaling: the first node's video. */
export function talkingHead(job) {
  const order = job.nodes.map((node) => node.id);
  const videos = job.artifacts.filter((artifact) => (artifact.content_type || "").startsWith("video/"));
  return videos.sort((a, b) => order.indexOf(a.node_id) - order.indexOf(b.node_id))[0];
}

/** The job's text inputs as <dt>/<dd> pairs. */
export function inputItems(job) {
  const rows = [["Pipeline", job.pipeline], ["Prompt", job.prompt || "(none: own script)"],
    ["What the voice says", job.ref_text || "(not given)"]];
  if (job.priority) rows.push(["Priority", String(job.priority)]);
  if (job.callback) rows.push(["Webhook", webhookState(job.callback)]);
  return rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]);
}

/** Where the webhook goes (its host: the API never answers the URL's path) and how its delivery went. */
export function webhookState({ url_host: host, state, attempts, last_status: status, last_error: error }) {
  const tries = attempts ? ` after ${attempts} attempt${attempts === 1 ? "" : "s"}` : "";
  const last = error || (status ? `answered ${status}` : "");
  return `${host}: ${state}${tries}${last ? ` (${last})` : ""}`;
}

/** The params the job changed from their defaults, one per line. */
export function settingItems(job) {
  const rows = Object.entries(job.params || {}).flatMap(([node, params]) =>
    Object.entries(params).map(([name, value]) => el("li", { dataset: { param: `${node}.${name}` } },
      el("code", {}, `${node}.${name}`), " = ", el("span", { class: "value" }, JSON.stringify(value)))));
  return rows.length ? rows : [el("li", { class: "muted" }, "none: every param at its default")];
}

export function inputUrl(job, name) {
  return mediaUrl(jobInputUrl(job.id, name));
}
