// The API client: the dashboard's only way to the server. It uses the
// public API alone (the endpoints in /openapi/v3), with a bearer token
// the person pasted, kept in this browser's storage.
export const PREFIX = '/apis/hearth.dev/v1alpha1';
const TOKEN_KEY = 'hearth.token';

export function token() { return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || ''; }
export function setToken(t, remember) {
  sessionStorage.removeItem(TOKEN_KEY); localStorage.removeItem(TOKEN_KEY);
  if (t) (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, t);
}

// ApiError is a Status the server answered with (or a network failure).
export class ApiError extends Error {
  constructor(status) {
    super(status.message || ('HTTP ' + status.code));
    this.code = status.code; this.reason = status.reason; this.fields = status.fields || [];
  }
}

async function errorOf(res) {
  let st;
  try { st = await res.json(); } catch { st = {}; }
  return new ApiError({ code: res.status, reason: st.reason, message: st.message || res.statusText, fields: st.fields });
}

// request sends one API call and returns its decoded JSON (or text).
export async function request(method, path, body, { contentType, signal, text } = {}) {
  const headers = { Authorization: 'Bearer ' + token() };
  let data;
  if (body !== undefined) {
    if (typeof body === 'string' || body instanceof Blob) data = body;
    else data = JSON.stringify(body);
    headers['Content-Type'] = contentType || 'application/json';
  }
  let res;
  try {
    res = await fetch(path.startsWith('/') ? path : PREFIX + '/' + path, { method, headers, body: data, signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError({ code: 0, reason: 'Unreachable', message: 'cannot reach the server: ' + e.message });
  }
  if (!res.ok) throw await errorOf(res);
  if (text) return res.text();
  return res.status === 204 ? null : res.json();
}

// path builds an object's or collection's path from its kind and names.
export function path(kind, tenant, name, sub) {
  let p = PREFIX;
  if (tenant && kind.scope !== 'cluster') p += '/tenants/' + encodeURIComponent(tenant);
  p += '/' + kind.plural;
  if (name) p += '/' + encodeURIComponent(name);
  if (sub) p += '/' + sub;
  return p;
}

export const whoami = () => request('GET', 'whoami');

// watch streams a collection's changes from rv, calling onEvent for each
// newline-delimited WatchEvent, until signal aborts or the server ends it.
export async function watch(collection, rv, onEvent, signal) {
  const sep = collection.includes('?') ? '&' : '?';
  const res = await fetch(collection + sep + 'watch=1&resourceVersion=' + encodeURIComponent(rv), {
    headers: { Authorization: 'Bearer ' + token() }, signal,
  });
  if (!res.ok) throw await errorOf(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i, batch = [];
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) batch.push(JSON.parse(line));
    }
    if (batch.length) onEvent(batch);
  }
}

// consoleSocket opens a VM's console: a websocket whose binary messages
// carry the serial port both ways. The token rides as a subprotocol,
// since browsers cannot set a websocket's headers.
export function consoleSocket(tenant, name) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = proto + '//' + location.host + PREFIX + '/tenants/' + encodeURIComponent(tenant) +
    '/virtualmachines/' + encodeURIComponent(name) + '/console';
  const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(token())))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const ws = new WebSocket(url, ['hearth.console.v1', 'bearer.hearth.dev.' + b64]);
  ws.binaryType = 'arraybuffer';
  return ws;
}
