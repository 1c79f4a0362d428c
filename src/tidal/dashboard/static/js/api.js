// Calls to the platform through the dashboard: /dashboard/api/... is the control API,
// /dashboard/queue/... the queue API. The session cookie goes along by itself; the
// X-Tidal-Dashboard header is the CSRF guard the server asks for.

const HEADERS = { "X-Tidal-Dashboard": "1" };

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function signedOut(resp) {
  if (resp.status === 401) {
    window.location.href = "/dashboard/login";
    return true;
  }
  return false;
}

async function detailOf(resp) {
  try {
    const body = await resp.json();
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
    return [detail, body];
  } catch {
    return [`HTTP ${resp.status}`, null];
  }
}

export async function request(method, path, body, extraHeaders = {}) {
  const init = { method, headers: { ...HEADERS, ...extraHeaders }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(`/dashboard${path}`, init);
  if (signedOut(resp)) throw new ApiError(401, "signed out");
  if (!resp.ok) {
    const [detail, parsed] = await detailOf(resp);
    throw new ApiError(resp.status, detail, parsed);
  }
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const patch = (path, body) => request("PATCH", path, body);

// A raw response (the queue's result keeps its status and content type).
export async function raw(method, path, body) {
  const init = { method, headers: { ...HEADERS }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(`/dashboard${path}`, init);
  if (signedOut(resp)) throw new ApiError(401, "signed out");
  return resp;
}

// Stream a text response line by line until it ends or `signal` aborts.
export async function streamLines(path, onLine, signal) {
  const resp = await fetch(`/dashboard${path}`, { headers: HEADERS, signal, credentials: "same-origin" });
  if (signedOut(resp)) return;
  if (!resp.ok) {
    const [detail] = await detailOf(resp);
    throw new ApiError(resp.status, detail);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    const lines = buffered.split("\n");
    buffered = lines.pop();
    for (const line of lines) onLine(line);
  }
  if (buffered) onLine(buffered);
}

// Server-sent events over fetch (EventSource cannot send the CSRF header).
export async function streamEvents(path, onEvent, signal) {
  let data = [];
  await streamLines(path, (line) => {
    if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    else if (line === "" && data.length) {
      const text = data.join("\n");
      data = [];
      try {
        onEvent(JSON.parse(text));
      } catch {
        onEvent(text);
      }
    }
  }, signal);
}

// Upload a file into the platform's file store; resolves to {url, content_type, ...}.
export async function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/dashboard/upload");
    xhr.setRequestHeader("X-Tidal-Dashboard", "1");
    xhr.setRequestHeader("X-File-Name", encodeURIComponent(file.name || "upload"));
    if (file.type) xhr.setRequestHeader("Content-Type", file.type);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress && onProgress(Math.round((100 * e.loaded) / e.total));
    xhr.onload = () => {
      if (xhr.status === 201) resolve(JSON.parse(xhr.responseText));
      else reject(new ApiError(xhr.status, xhr.responseText));
    };
    xhr.onerror = () => reject(new ApiError(0, "the upload failed"));
    xhr.send(file);
  });
}
