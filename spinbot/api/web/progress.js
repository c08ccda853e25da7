// The job's overall progress bar and its time estimate. The time left is the server's: each running node's events
// (and its GET answer) carry `seconds_left`, measured where its progress is published, after its set-up (from the
// end of the slowest interval between its reports: a model load, not the work; spinbot/state/time_left.py), the
// number the CLI shows too; counted down here between events. The talking head's line also says how long a window
// took (its events say "window 3/8" when a window ends, or "window 3/8, step 2/6" inside one). Nothing is guessed
// before something is measured.

import { formatSeconds } from "./dom.js";

const WINDOW = /window (\d+)\/(\d+)(?:, step (\d+)\/(\d+))?/;

/** {done, total} windows from a node's progress message, or null. */
export function windowsDone(message) {
  const found = WINDOW.exec(message || "");
  if (!found) return null;
  const [, index, total, step, steps] = found.map(Number);
  return { done: step !== undefined && !Number.isNaN(step) ? index - 1 + step / steps : index, total };
}

export class OverallProgress {
  constructor(root) {
    this.bar = root.querySelector("#overall-progress");
    this.percent = root.querySelector("#overall-percent");
    this.eta = root.querySelector("#overall-eta");
    this.reset([]);
  }

  /** A new job: its node ids in order. */
  reset(order) {
    this.order = order;
    this.windows = []; // {node, time, done, total}: one per window event, in arrival order
    this.left = new Map(); // node id -> {seconds, time}: the server's time left for a running node, when it came
    this.shownEta = "";
  }

  /** Record a node event's time left and window count (and when they came). */
  onNodeEvent(event, now = performance.now()) {
    this.noteLeft(event.node_id, event.status, event.seconds_left, now);
    const windows = windowsDone(event.message);
    if (windows) this.windows.push({ node: event.node_id, time: now, ...windows });
  }

  /** The running nodes' time left in a job as the API answers it (a snapshot, a GET). */
  onJob(job, now = performance.now()) {
    for (const node of job.nodes) {
      // an answer read before a node measured its rate must not hide an estimate that its events brought since
      if (typeof node.seconds_left === "number" || node.status !== "running") {
        this.noteLeft(node.id, node.status, node.seconds_left, now);
      }
    }
  }

  noteLeft(node, status, seconds, now) {
    if (status === "running" && typeof seconds === "number") this.left.set(node, { seconds, time: now });
    else this.left.delete(node);
  }

  /** The server's time left for a running node, counted down since it came, or null. */
  secondsLeft(node, now) {
    const left = this.left.get(node);
    return left ? Math.max(0, left.seconds - (now - left.time) / 1000) : null;
  }

  /** Seconds one window takes, measured between the window events seen so far, or null. */
  secondsPerWindow() {
    const last = this.windows.at(-1);
    const first = last && this.windows.find((sample) => sample.node === last.node);
    if (!last || last.done <= first.done) return null;
    return (last.time - first.time) / 1000 / (last.done - first.done);
  }

  /** Redraw from the nodes' states (id -> {status, progress}), the job's status and its overall progress: the
   * API's figure (its nodes weighted by their share of the work, spinbot/state/progress.py), as the CLI shows it. */
  show(states, jobStatus, progress, now = performance.now()) {
    const fraction = jobStatus === "succeeded" ? 1 : Math.min(1, progress || 0);
    this.bar.value = fraction;
    this.bar.setAttribute("aria-valuetext", `${Math.round(fraction * 100)}%`);
    this.percent.textContent = `${Math.round(fraction * 100)}%`;
    const eta = this.estimate(states, jobStatus, now);
    if (eta !== this.shownEta) this.eta.textContent = this.shownEta = eta; // a live region: only real changes
  }

  estimate(states, jobStatus, now) {
    if (["succeeded", "failed", "cancelled"].includes(jobStatus)) return "";
    const running = this.order.find((id) => ["running", "queued"].includes(states.get(id)?.status));
    if (!running) return "";
    const later = this.order.slice(this.order.indexOf(running) + 1);
    const then = later.length ? `, then ${later.join(", ")}` : "";
    const last = this.windows.at(-1);
    if (last?.node === running && last.done >= last.total) return `Finishing ${running}${then}.`;
    const left = states.get(running)?.status === "running" ? this.secondsLeft(running, now) : null;
    if (left === null) return `Estimating the time left for ${running}…`;
    const perWindow = last?.node === running ? this.secondsPerWindow() : null;
    const windows = perWindow === null ? ""
      : ` (${formatSeconds(perWindow)} a window, ${Math.floor(last.done)} of ${last.total} windows done)`;
    return `About ${formatSeconds(left)} left for ${running}${windows}${then}.`;
  }
}
