// Past jobs (GET /v1/jobs, paged), newest first, each with its status and a thumbnail: the first frame of the
// talking-head video once there is one.

import { api, withKey } from "./api.js";
import { clearError, el, parseTime, showError } from "./dom.js";

const PAGE_SIZE = 8;

function thumbnailVideo(job) {
  const videos = job.artifacts.filter((artifact) => (artifact.content_type || "").startsWith("video/"));
  // The talking head before upscaling: the smallest file with the same first frame.
  return videos.find((artifact) => artifact.node_id === "infinite_talk") || videos[0];
}

function thumbnail(job) {
  const video = thumbnailVideo(job);
  if (!video) return el("div", { class: "thumb placeholder", dataset: { status: job.status } }, "no video yet");
  return el("video", { class: "thumb", src: withKey(`${video.url}#t=0.1`), preload: "metadata", muted: true,
    playsinline: true, "aria-label": "first frame of the video" });
}

function describeTime(job) {
  const created = parseTime(job.created_at);
  return created === null ? "" : new Date(created).toLocaleString();
}

function jobItem(job, onOpen) {
  const open = el("button", { type: "button", class: "open-job", title: "show this job" },
    thumbnail(job),
    el("span", { class: "job-summary" },
      el("span", { class: "job-prompt" }, job.prompt || job.script || "(own script)"),
      el("span", { class: "status", dataset: { status: job.status } }, job.status),
      el("time", { datetime: job.created_at }, describeTime(job)),
      job.error ? el("span", { class: "job-item-error" }, job.error) : null));
  open.addEventListener("click", () => onOpen(job));
  return el("li", { class: "job-item", dataset: { job: job.id, status: job.status } }, open);
}

export class JobHistory {
  constructor(root, { onOpen }) {
    this.root = root;
    this.onOpen = onOpen;
    this.offset = 0;
    this.total = 0;
    this.$ = (selector) => root.querySelector(selector);
    this.$("#refresh-jobs").addEventListener("click", () => this.load());
    this.$("#jobs-status").addEventListener("change", () => this.load(0));
    this.$("#older-jobs").addEventListener("click", () => this.load(this.offset + PAGE_SIZE));
    this.$("#newer-jobs").addEventListener("click", () => this.load(Math.max(0, this.offset - PAGE_SIZE)));
  }

  async load(offset = this.offset) {
    try {
      const page = await api.listJobs(PAGE_SIZE, offset, this.$("#jobs-status").value);
      clearError(this.root, "history");
      this.offset = offset;
      this.total = page.total;
      this.render(page.items);
    } catch (err) {
      // A 401 opens the key panel, which asks for what is missing; the list loads again once a key is given.
      if (err.status !== 401) showError(this.root, "history", `cannot list the jobs: ${err.message}`);
    }
  }

  render(jobs) {
    const list = this.$("#jobs");
    list.replaceChildren(...jobs.map((job) => jobItem(job, this.onOpen)));
    const status = this.$("#jobs-status").value;
    if (!jobs.length) list.append(el("li", { class: "muted" }, status ? `No ${status} jobs.` : "No jobs yet."));
    this.$("#newer-jobs").hidden = this.offset === 0;
    this.$("#older-jobs").hidden = this.offset + jobs.length >= this.total;
    this.$("#jobs-range").textContent = jobs.length
      ? `${this.offset + 1}–${this.offset + jobs.length} of ${this.total}` : "";
  }
}
