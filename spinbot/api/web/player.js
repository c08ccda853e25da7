// The job view's video while the job runs: the talking head's live HLS output
// (GET /v1/jobs/{id}/live/{node}/index.m3u8), playing from its first window while later windows render, then the
// job's final video once it has one, at the same place. Chromium and Firefox have no native HLS: hls.js (vendored,
// see vendor/README.md) feeds the segments to the <video> through Media Source Extensions.

import { apiKey, isFinal, mediaUrl } from "./api.js";
import { setSource } from "./dom.js";

const LIVE_TASK = "infinite_talk"; // the node whose live output is the talking head
const WAITING = ["pending", "queued"];
const PLAYLIST_POLL_MS = 500;

let hlsModule = null; // hls.js is loaded the first time a live stream plays (it is 370 kB)
const loadHls = () => (hlsModule ??= import("./vendor/hls.light.min.mjs").then((module) => module.default));

export function livePlaylistUrl(jobId, nodeId) {
  return `/v1/jobs/${encodeURIComponent(jobId)}/live/${encodeURIComponent(nodeId)}/index.m3u8`;
}

function authorize(xhr) {
  const key = apiKey.get();
  if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
}

export class LivePlayer {
  /** section: shown while there is something to play; video: the <video>; note: a line that says what plays. */
  constructor(section, video, note) {
    Object.assign(this, { section, video, note });
    this.jobId = null;
    this.liveNode = undefined; // the id of the job's infinite_talk node
    this.generation = 0; // bumped by stop(): an answer for an earlier stream is dropped
    this.hls = null;
    this.native = false; // Safari: HLS without hls.js
    this.timer = null;
    this.ended = false; // the job ended: stop waiting for a playlist that never came
  }

  get live() {
    return Boolean(this.hls || this.native);
  }

  /** Call with every update of the job view. While the job has no final video (finalUrl empty), play its live
   * output once there is one; then hand over to the final video. True while the live output holds the <video>. */
  show(job, finalUrl) {
    if (job.id !== this.jobId) this.stop(job.id);
    this.ended = isFinal(job.status);
    if (finalUrl) {
      this.handOver(finalUrl);
      return false;
    }
    const node = job.nodes.find((candidate) => candidate.task === LIVE_TASK);
    this.liveNode = node?.id;
    if (node && !WAITING.includes(node.status)) this.start();
    return this.live;
  }

  /** Call with every node event of the job: the live node's start is the time to look for its playlist. */
  onNodeEvent(event) {
    if (event.node_id === this.liveNode && !WAITING.includes(event.status)) this.start();
  }

  start() {
    if (!this.live && !this.timer) this.waitForPlaylist(this.liveNode);
  }

  /** Forget the current job's stream (another job opens, or the same one again after a retry). */
  stop(jobId = null) {
    this.generation += 1;
    clearTimeout(this.timer);
    this.timer = null;
    this.hls?.destroy();
    this.hls = null;
    this.native = false;
    this.jobId = jobId;
    this.setNote("");
  }

  // ---- the live stream -------------------------------------------------------------------------------------
  async waitForPlaylist(nodeId) {
    const generation = this.generation;
    const url = livePlaylistUrl(this.jobId, nodeId);
    const again = () => {
      this.timer = this.ended ? null : setTimeout(() => this.waitForPlaylist(nodeId), PLAYLIST_POLL_MS);
    };
    this.timer = -1; // asking now (a timer of its own, so that show() does not ask twice)
    let ready = false;
    try {
      const key = apiKey.get();
      const response = await fetch(url, { headers: key ? { Authorization: `Bearer ${key}` } : {}, cache: "no-store" });
      ready = response.ok;
    } catch {
      ready = false; // the server is briefly unreachable: ask again
    }
    if (generation !== this.generation) return;
    if (!ready) return again();
    let Hls;
    try {
      Hls = await loadHls();
    } catch (err) {
      this.timer = null;
      return this.setNote(`The live video cannot play here (${err.message}); the finished video appears when done.`);
    }
    if (generation !== this.generation) return;
    this.timer = null;
    this.attach(Hls, url);
  }

  attach(Hls, url) {
    this.section.hidden = false;
    this.setNote("Live: the windows rendered so far. The finished video replaces it when the job is done.");
    if (Hls.isSupported()) {
      this.hls = new Hls({ startPosition: 0, xhrSetup: authorize });
      this.hls.on(Hls.Events.ERROR, (_, data) => this.onError(Hls, data));
      this.hls.on(Hls.Events.MANIFEST_PARSED, () => this.play());
      this.hls.loadSource(url);
      this.hls.attachMedia(this.video);
    } else if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
      this.native = true; // the page's media cookie goes with the playlist and segment requests
      setSource(this.video, mediaUrl(url));
      this.play();
    } else {
      this.setNote("This browser cannot play the live video; the finished video appears here when the job is done.");
    }
  }

  onError(Hls, data) {
    if (!data.fatal) return; // hls.js retries those itself
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR) this.hls.startLoad();
    else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) this.hls.recoverMediaError();
    else this.setNote(`The live video stopped (${data.details}); the finished video appears here when the job is done.`);
  }

  async play() {
    try {
      await this.video.play();
    } catch (err) {
      if (err.name !== "NotAllowedError") return;
      this.video.muted = true; // the browser allows only muted autoplay until the user has used the page
      await this.video.play().catch(() => {});
    }
  }

  // ---- the final video -------------------------------------------------------------------------------------
  /** Replace the live stream by the final video, at the same time, still playing if it was. */
  handOver(finalUrl) {
    if (!this.live) return this.stop(this.jobId); // no longer wait for a playlist: the final video is here
    const { currentTime, paused, ended } = this.video;
    this.stop(this.jobId);
    setSource(this.video, finalUrl);
    if (ended) return;
    this.video.addEventListener("loadedmetadata", () => {
      this.video.currentTime = Math.min(currentTime, this.video.duration || currentTime);
      if (!paused) this.play();
    }, { once: true });
  }

  setNote(text) {
    if (!this.note) return;
    this.note.textContent = text;
    this.note.hidden = !text;
  }
}
