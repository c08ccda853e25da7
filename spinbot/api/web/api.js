// The public SpinBot HTTP API as the page uses it. The API key (kept in localStorage) travels only as a Bearer header.
// Elements that load by URL (EventSource, <audio>, <video>) cannot send it: every keyed answer sets a short-lived,
// HttpOnly media cookie (signed with the key, not the key) that the event and artifact routes accept, so their URLs
// are plain and no key ever lands in a URL or an access log.

const KEY_STORAGE = "spinbot.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE) || "",
  set: (key) => (key ? localStorage.setItem(KEY_STORAGE, key) : localStorage.removeItem(KEY_STORAGE)),
};

let unauthorizedHandler = () => {};

/** Called with the ApiError of every 401 answer, so the page can ask for a key. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

function authHeaders() {
  const key = apiKey.get();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function encodeBody(body) {
  if (body === undefined) return { headers: {}, payload: undefined };
  if (body instanceof FormData) return { headers: {}, payload: body };
  return { headers: { "Content-Type": "application/json" }, payload: JSON.stringify(body) };
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

async function request(method, path, body) {
  const { headers, payload } = encodeBody(body);
  let response;
  try {
    response = await fetch(path, { method, headers: { ...authHeaders(), ...headers }, body: payload });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message})`);
  }
  const data = await readJson(response);
  if (response.ok) return data;
  const error = new ApiError(response.status, data?.error || `${response.status} ${response.statusText}`);
  if (response.status === 401) unauthorizedHandler(error);
  throw error;
}

function uploadForm(kind, file) {
  const form = new FormData();
  form.append("kind", kind);
  form.append("file", file);
  return form;
}

export const api = {
  pipelines: () => request("GET", "/v1/pipelines"),
  paramSchemas: () => request("GET", "/v1/params"),
  paramForm: () => request("GET", "/v1/params/form"),
  upload: (kind, file) => request("POST", "/v1/uploads", uploadForm(kind, file)),
  createJob: (body) => request("POST", "/v1/jobs", body),
  listJobs: (limit, offset, status = "") =>
    request("GET", `/v1/jobs?limit=${limit}&offset=${offset}${status ? `&status=${encodeURIComponent(status)}` : ""}`),
  job: (id) => request("GET", `/v1/jobs/${encodeURIComponent(id)}`),
  cancel: (id) => request("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`),
  retry: (id) => request("POST", `/v1/jobs/${encodeURIComponent(id)}/retry`),
  deleteJob: (id) => request("DELETE", `/v1/jobs/${encodeURIComponent(id)}`),
  /** A job's portrait ("source_image") or voice sample ("narrator_voice") as a File, to submit again. */
  inputFile: async (id, name) => {
    const path = jobInputUrl(id, name);
    let response;
    try {
      response = await fetch(path, { headers: authHeaders() });
    } catch (err) {
      throw new ApiError(0, `cannot reach the server (${err.message})`);
    }
    if (!response.ok) {
      const data = await readJson(response);
      throw new ApiError(response.status, data?.error || `${response.status} ${response.statusText}`);
    }
    const blob = await response.blob();
    const extension = (blob.type.split("/")[1] || "bin").replace(/^x-/, "").replace("mpeg", "mp3");
    return new File([blob], `${name === "source_image" ? "portrait" : "voice"}.${extension}`, { type: blob.type });
  },
};

/** The URL an element loads (events, audio, video): unchanged, as the media cookie authorizes it. The page has
 * fetched with its key before it shows a job, so the cookie is there by then. */
export function mediaUrl(url) {
  return url;
}

export function jobInputUrl(id, name) {
  return `/v1/jobs/${encodeURIComponent(id)}/inputs/${name}`;
}

/** The old name of mediaUrl, kept until the page's modules use the new one. */
export const withKey = mediaUrl;

export function jobEvents(id) {
  return new EventSource(mediaUrl(`/v1/jobs/${encodeURIComponent(id)}/events`));
}

export const FINAL_STATES = ["succeeded", "failed", "cancelled"];

export const isFinal = (status) => FINAL_STATES.includes(status);
