// The page's calls to the dashboard's /api (same origin; the session cookie goes along by itself).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(response) {
  let code = "";
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    code = body?.error?.code || "";
    message = body?.error?.message || message;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

function sessionLost() {
  window.location.assign("/welcome");
}

/** GET or POST JSON; throws ApiError with the server's message. */
export async function api(path, { method = "GET", body, params } = {}) {
  let url = `/api${path}`;
  if (params) {
    const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null));
    url += `?${query}`;
  }
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, "offline", "the dashboard is not answering");
  }
  if (response.status === 401) {
    sessionLost();
    throw new ApiError(401, "unauthorized", "the session has ended");
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/**
 * Upload a file as multipart with progress (fetch cannot report upload progress; XHR can).
 * Resolves with {status, body}; `onProgress(sent, total)`.
 */
export function uploadFile(file, { force = false, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/uploads${force ? "?force=true" : ""}`);
    xhr.responseType = "json";
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (onProgress) onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    });
    xhr.addEventListener("load", () => {
      const body = xhr.response;
      if (xhr.status === 401) {
        sessionLost();
        reject(new ApiError(401, "unauthorized", "the session has ended"));
      } else if (xhr.status >= 200 && xhr.status < 300) {
        resolve({ status: xhr.status, body });
      } else {
        reject(new ApiError(xhr.status, body?.error?.code || "", body?.error?.message || `HTTP ${xhr.status}`));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "offline", "the upload was interrupted")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "the upload was cancelled")));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}
