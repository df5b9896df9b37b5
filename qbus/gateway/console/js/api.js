// The gateway's HTTP API (docs/gateway.md) as the console uses it: fetch with the bearer
// token from localStorage, EventSource with the token as ?access_token= (an EventSource
// cannot send headers), and RFC 9457 problem documents turned into readable errors.

const TOKEN_KEY = "qbus.token";

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** A failed API call, carrying the problem document's code, title and detail. */
export class ApiError extends Error {
  constructor(status, problem) {
    const title = problem.title ?? `HTTP ${status}`;
    super(problem.detail ? `${title}: ${problem.detail}` : title);
    this.status = status;
    this.code = problem.code ?? "";
    this.problem = problem;
  }
}

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const token = getToken();
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

async function parse(response) {
  const type = response.headers.get("content-type") ?? "";
  const body = type.includes("json") ? await response.json() : { detail: await response.text() };
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export async function getJson(path) {
  return parse(await fetch(path, { headers: headers() }));
}

/** POST raw program text (options as query parameters), as the contract allows. */
export async function submitProgram(source, options) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(options)) {
    if (value !== "" && value !== null && value !== undefined) query.set(key, String(value));
  }
  const response = await fetch(`/v1/jobs?${query}`, {
    method: "POST",
    headers: headers({ "Content-Type": "text/plain" }),
    body: source,
  });
  return parse(response);
}

export async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body ?? {}),
  });
  return parse(response);
}

/** Event types a gateway stream may name (the `event:` field of each SSE message). */
export const EVENT_TYPES = [
  "job.submitted", "circuit.ingested", "circuit.rewritten", "execution.requested",
  "execution.completed", "execution.failed", "job.completed", "job.failed", "job.rejected",
  "result.anchored", "control.reroute", "control.cancel", "control.rejected", "dead.letter",
];
export const FINAL_TYPES = ["job.completed", "job.failed", "job.rejected"];

/**
 * Listen to a gateway SSE stream. `onItem` gets each message's parsed data (one element
 * of the JSON "events" list). Returns a function that closes the stream.
 */
export function stream(path, types, onItem, onState) {
  const url = new URL(path, location.href);
  const token = getToken();
  if (token) url.searchParams.set("access_token", token);
  const source = new EventSource(url);
  const handle = (message) => {
    let item;
    try {
      item = JSON.parse(message.data);
    } catch {
      return; // a keep-alive or comment line, not an event
    }
    onItem(item);
  };
  for (const type of types) source.addEventListener(type, handle);
  source.addEventListener("message", handle);
  source.onopen = () => onState?.("live");
  source.onerror = () => onState?.(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  return () => source.close();
}
