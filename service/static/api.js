// The calls the page makes to the API, and its one error shape.

export const RUNS = "/api/v1/calculations";
export const DETAIL_FIELDS = "name,duration,date_start,date_fin,lag,seed,started_at,finished_at";
export const ACTIVE = new Set(["queued", "running"]);

/** A refusal as the API writes it: {"error": {"code", "message", "fields"}}. */
export class ApiError extends Error {
  constructor(status, code, message, fields = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields;
  }
}

// With API_TOKEN set, the server wants `Authorization: Bearer`. The token typed in is kept in
// this tab's sessionStorage only: it is gone when the tab closes and never shared across tabs.
const TOKEN_KEY = "calculations.apiToken";
let memoryToken = ""; // where storage is refused (a private mode): lasts until a reload
let onUnauthorized = () => {};

export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export function setToken(value) {
  memoryToken = value;
  try {
    sessionStorage.setItem(TOKEN_KEY, value);
  } catch {
    // memoryToken serves instead.
  }
}

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? memoryToken;
  } catch {
    return memoryToken;
  }
}

function authorization() {
  const value = storedToken();
  return value ? { Authorization: `Bearer ${value}` } : {};
}

async function send(method, path, init) {
  try {
    return await fetch(path, { ...init, method, headers: { ...init.headers, ...authorization() } });
  } catch {
    throw new ApiError(0, "unreachable", "The server did not answer. Is it running?");
  }
}

function failure(response, text) {
  let error = {};
  try {
    error = JSON.parse(text)?.error ?? {};
  } catch {
    error = {};
  }
  if (response.status === 401) onUnauthorized();
  const reason = `${response.status} ${response.statusText}`.trim();
  return new ApiError(
    response.status,
    error.code ?? `http_${response.status}`,
    error.message ?? reason,
    error.fields ?? {},
  );
}

/** JSON in, JSON out; any refusal, or no answer at all, becomes an ApiError. */
export async function request(method, path, body) {
  const init = { headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = body;
  }
  const response = await send(method, path, init);
  const text = await response.text();
  if (!response.ok) throw failure(response, text);
  return text ? JSON.parse(text) : null;
}

export function listRuns({ page, order, status }) {
  const query = new URLSearchParams({ page: String(page), per_page: "10", order });
  if (status) query.set("status", status);
  return request("GET", `${RUNS}?${query}`);
}

export function getRun(id) {
  return request("GET", `${RUNS}/${id}?fields=${DETAIL_FIELDS}`);
}

/** bodyText is JSON text, so that integers of any length reach the server as typed. */
export function createRun(bodyText) {
  return request("POST", RUNS, bodyText);
}

export function cancelRun(id) {
  return request("POST", `${RUNS}/${id}/cancel`);
}

export function deleteRun(id) {
  return request("DELETE", `${RUNS}/${id}`);
}

export function csvUrl(id) {
  return `${RUNS}/${id}/result.csv`;
}

/** Whether a plain link can fetch API files, or the download must go through fetch(). */
export function needsFetchForFiles() {
  return Object.keys(authorization()).length > 0;
}

/** The CSV fetched with the token, handed to the browser as a download. */
export async function downloadCsv(id) {
  const response = await send("GET", csvUrl(id), { headers: { Accept: "text/csv" } });
  if (!response.ok) throw failure(response, await response.text());
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = `calculation-${id}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** What went wrong, in one sentence, with the fields the server named. */
export function describe(error) {
  const fields = Object.entries(error.fields ?? {});
  if (fields.length === 0) return error.message;
  const details = fields.map(([name, reasons]) => `${name}: ${[reasons].flat().join(" ")}`);
  return `${error.message} (${details.join("; ")})`;
}
