// The REST API of the gateway, as the CLI uses it: JSON bodies, a bearer token in the
// Authorization header, errors as {"error": reason, "field": name}.

export interface Session {
  token: string;
  name: string;
  realm: string;
  expiresAt: string; // ISO time
}

const KEY = "ucloud.session";

export function loadSession(): Session | null {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  try {
    const s = JSON.parse(raw) as Session;
    return Date.parse(s.expiresAt) > Date.now() ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(s: Session | null): void {
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(public status: number, public reason: string, public field: string) {
    super(field ? `${field}: ${reason}` : reason);
  }
}

let onUnauthorized: () => void = () => {};
export function whenUnauthorized(f: () => void): void {
  onUnauthorized = f;
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const s = loadSession();
  const h: Record<string, string> = { Accept: "application/json", ...extra };
  if (s) h.Authorization = `Bearer ${s.token}`;
  return h;
}

async function failure(res: Response): Promise<ApiError> {
  let reason = `${res.status} ${res.statusText}`;
  let field = "";
  try {
    const body = (await res.json()) as { error?: string; field?: string };
    reason = body.error ?? reason;
    field = body.field ?? "";
  } catch {
    /* not JSON */
  }
  if (res.status === 401 && field !== "otp") onUnauthorized();
  return new ApiError(res.status, reason, field);
}

export async function call<T>(method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers: headers(body === undefined ? extra : { "Content-Type": "application/json", ...extra }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `the gateway does not answer (${String(e)})`, "");
  }
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const get = <T>(path: string) => call<T>("GET", path);
export const post = <T>(path: string, body?: unknown, extra?: Record<string, string>) => call<T>("POST", path, body, extra);
export const del = <T>(path: string) => call<T>("DELETE", path);

export function idempotencyKey(): Record<string, string> {
  return { "Idempotency-Key": crypto.randomUUID() };
}

/** Upload a file with PUT, reporting progress (fetch cannot report upload progress). */
export function upload(name: string, file: Blob, progress: (done: number, total: number) => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", `/v1/files/${encodeURIComponent(name)}`);
    for (const [k, v] of Object.entries(headers({ "Content-Type": "application/octet-stream" }))) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => progress(e.loaded, e.total || file.size);
    xhr.onerror = () => reject(new ApiError(0, "the upload was interrupted", "body"));
    xhr.onload = () => {
      let body: { error?: string; field?: string } = {};
      try {
        body = JSON.parse(xhr.responseText || "{}");
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body.error ?? `${xhr.status}`, body.field ?? ""));
    };
    xhr.send(file);
  });
}

export interface StreamHandle {
  close(): void;
}

/**
 * Read a server-sent-events stream with fetch, so that the token goes in the
 * Authorization header (EventSource cannot set headers, and a token in a URL ends up in
 * logs). Reconnects after a pause until closed.
 */
export function stream(path: string, onEvent: (name: string, data: string) => void, onState?: (live: boolean) => void): StreamHandle {
  let closed = false;
  let controller = new AbortController();
  const run = async () => {
    while (!closed) {
      try {
        const res = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal });
        if (!res.ok || !res.body) throw await failure(res);
        onState?.(true);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end: number;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let name = "message";
            const data: string[] = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) name = line.slice(7);
              else if (line.startsWith("data: ")) data.push(line.slice(6));
            }
            if (data.length) onEvent(name, data.join("\n"));
          }
        }
      } catch (e) {
        if (closed) return;
        if (e instanceof ApiError && e.status === 401) return;
      }
      onState?.(false);
      if (!closed) await new Promise((r) => setTimeout(r, 2000));
    }
  };
  void run();
  return {
    close() {
      closed = true;
      controller.abort();
      controller = new AbortController();
    },
  };
}
