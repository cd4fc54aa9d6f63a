// Thin wrappers around fetch: every API error becomes an ApiError carrying the server's {code, message}.

export class ApiError extends Error {
  constructor(code, message, status = 0) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: a proxy page, an empty body */
  }
  const code = body && typeof body.code === "string" ? body.code : `http_${response.status}`;
  const message = body && typeof body.message === "string" ? body.message : response.statusText;
  return new ApiError(code, message, response.status);
}

export async function request(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new ApiError("network_error", String(err && err.message ? err.message : err));
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function getJSON(url, options = {}) {
  const response = await request(url, { ...options, headers: { Accept: "application/json", ...(options.headers || {}) } });
  return response.status === 204 ? null : response.json();
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
