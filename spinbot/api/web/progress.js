// The job's overall progress bar and its time estimate. The estimate comes from the measured time per window of
// the talking-head node (its events say "window 3/8" when a window ends, or "window 3/8, step 2/6" inside one):
// the windows left times the seconds a window took so far. Other running nodes are estimated from their own
// progress rate. Nothing is guessed before there is something measured.

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
    this.firstSeen = new Map(); // node id -> {time, progress} when this page first saw it running
    this.shownEta = "";
  }

  /** Record a node event's window count (and when it came). */
  onNodeEvent(event, now = performance.now()) {
    if (event.status === "running" && !this.firstSeen.has(event.node_id)) {
      this.firstSeen.set(event.node_id, { time: now, progress: event.progress || 0 });
    }
    const windows = windowsDone(event.message);
    if (windows) this.windows.push({ node: event.node_id, time: now, ...windows });
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
    const perWindow = this.secondsPerWindow();
    if (last?.node === running && last.done >= last.total) return `Finishing ${running}${then}.`;
    if (last?.node === running && perWindow !== null) {
      const left = Math.max(0, last.total - last.done) * perWindow;
      return `About ${formatSeconds(left)} left for ${running} (${formatSeconds(perWindow)} a window, `
        + `${Math.floor(last.done)} of ${last.total} windows done)${then}.`;
    }
    // Any other node: its progress rate since this page first saw it run (a node reports its set-up at once).
    const progress = states.get(running)?.progress || 0;
    const first = this.firstSeen.get(running);
    if (first && progress - first.progress >= 0.05) {
      const rate = (progress - first.progress) / ((now - first.time) / 1000);
      return `About ${formatSeconds((1 - progress) / rate)} left for ${running}${then}.`;
    }
    return `Estimating the time left for ${running}…`;
  }
}
