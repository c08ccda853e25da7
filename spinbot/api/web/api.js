// The public SpinBot HTTP API as the page uses it. The API key (kept in localStorage) travels as a Bearer header,
// or as ?api_key= where the browser cannot send headers (EventSource, <audio>, <video>).

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
  upload: (kind, file) => request("POST", "/v1/uploads", uploadForm(kind, file)),
  createJob: (body) => request("POST", "/v1/jobs", body),
  listJobs: (limit, offset) => request("GET", `/v1/jobs?limit=${limit}&offset=${offset}`),
  job: (id) => request("GET", `/v1/jobs/${encodeURIComponent(id)}`),
  cancel: (id) => request("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`),
  retry: (id) => request("POST", `/v1/jobs/${encodeURIComponent(id)}/retry`),
};

/** The URL with the API key as a query parameter (kept before any #fragment), for elements that load by URL. */
export function withKey(url) {
  const key = apiKey.get();
  if (!key) return url;
  const hashAt = url.indexOf("#");
  const [path, fragment] = hashAt < 0 ? [url, ""] : [url.slice(0, hashAt), url.slice(hashAt)];
  const separator = path.includes("?") ? "&" : "?";
  return `${path}${separator}api_key=${encodeURIComponent(key)}${fragment}`;
}

export function jobEvents(id) {
  return new EventSource(withKey(`/v1/jobs/${encodeURIComponent(id)}/events`));
}

export const FINAL_STATES = ["succeeded", "failed", "cancelled"];

export const isFinal = (status) => FINAL_STATES.includes(status);
