// Small pieces shared by the pages.
import { html, useState, useEffect, useRef, age, useNow } from './lib.js';
import { phaseClass } from './kinds.js';
import { request } from './api.js';
import { useCollection } from './store.js';

export const Badge = ({ phase }) => phase
  ? html`<span class="badge ${phaseClass(phase)}" data-phase=${phase}>${phase}</span>` : html`<span class="badge idle">—</span>`;

export const Link = ({ to, children, ...rest }) => html`<a href=${'#' + to} ...${rest}>${children}</a>`;

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">
    <strong>${error.reason || 'Error'}</strong>: ${error.message}
    ${error.fields?.length ? html`<ul>${error.fields.map(f => html`<li><code>${f.field}</code>: ${f.detail}</li>`)}</ul>` : null}
  </div>`;
}

// Facts is a definition list of label/value pairs, skipping empty ones.
export const Facts = ({ rows }) => html`<dl class="facts">
  ${rows.filter(r => r[1] !== undefined && r[1] !== null && r[1] !== '').map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}
</dl>`;

export function Conditions({ obj }) {
  const cs = obj?.status?.conditions || [];
  if (!cs.length) return html`<p class="muted">No conditions.</p>`;
  return html`<table class="grid"><caption class="sr">Conditions</caption>
    <thead><tr><th scope="col">Type</th><th scope="col">Status</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Since</th></tr></thead>
    <tbody>${cs.map(c => html`<tr><td>${c.type}</td><td class=${c.status === 'True' ? 'ok' : 'warn'}>${c.status}</td>
      <td>${c.reason}</td><td>${c.message}</td><td>${age(c.lastTransitionTime)}</td></tr>`)}</tbody></table>`;
}

// eventsURL is the watch of the events about one object (of the object's
// tenant, or the cluster's for cluster-scoped objects).
export function eventsURL(kind, tenant, name) {
  const fs = encodeURIComponent(`involvedObject.kind=${kind},involvedObject.name=${name}`);
  return (tenant ? `/apis/hearth.dev/v1alpha1/tenants/${encodeURIComponent(tenant)}/events` : '/apis/hearth.dev/v1alpha1/events') + '?fieldSelector=' + fs;
}

const evTime = e => e.spec.lastTimestamp || e.spec.firstTimestamp || e.metadata.creationTimestamp;

export function useEvents(kind, tenant, name) {
  const c = useCollection(eventsURL(kind, tenant, name));
  const evs = [...c.items.values()].sort((a, b) => Date.parse(evTime(a)) - Date.parse(evTime(b)));
  return { evs, error: c.error, loaded: c.loaded };
}

export function Events({ kind, tenant, name }) {
  useNow(10000);
  const { evs, error } = useEvents(kind, tenant, name);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!evs.length) return html`<p class="muted">No events.</p>`;
  return html`<table class="grid"><caption class="sr">Events</caption>
    <thead><tr><th scope="col">When</th><th scope="col">Type</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">From</th></tr></thead>
    <tbody>${evs.slice().reverse().map(e => html`<tr key=${e.metadata.name}><td>${age(evTime(e))}</td>
      <td class=${e.spec.type === 'Warning' ? 'warn' : ''}>${e.spec.type}</td><td>${e.spec.reason}</td>
      <td>${e.spec.message}${e.spec.count > 1 ? html` <span class="muted">(×${e.spec.count})</span>` : ''}</td><td>${e.spec.source}</td></tr>`)}</tbody></table>`;
}

// Confirm asks before a destructive action, as a real dialog.
export function ConfirmButton({ label, question, onConfirm, cls = '' }) {
  const ref = useRef();
  return html`<button type="button" class=${cls} onClick=${() => ref.current.showModal()}>${label}</button>
    <dialog ref=${ref} aria-label=${label}>
      <form method="dialog"><p>${question}</p>
        <div class="row"><button value="cancel" autofocus>Cancel</button>
        <button class="danger" value="ok" onClick=${onConfirm}>${label}</button></div></form>
    </dialog>`;
}

// useAction runs an API call for a button and remembers its error: the
// page changes only when the watch shows the change, so nothing the API
// refused is ever shown as done.
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (fn) => {
    setBusy(true); setError(null);
    try { await fn(); } catch (e) { setError(e); } finally { setBusy(false); }
  };
  return { busy, error, run, setError };
}

// Chart draws one series of the stats endpoint as a line, in SVG.
export function Chart({ title, unit, points, fmt = v => v.toFixed(1) }) {
  const w = 320, h = 90;
  const vals = points.map(p => p[1]);
  const max = Math.max(1e-9, ...vals);
  const t0 = points.length ? points[0][0] : 0, t1 = points.length ? points[points.length - 1][0] : 1;
  const x = t => ((t - t0) / Math.max(1, t1 - t0)) * (w - 4) + 2;
  const y = v => h - 4 - (v / max) * (h - 12);
  const d = points.map((p, i) => (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1)).join(' ');
  const last = vals.length ? vals[vals.length - 1] : null;
  return html`<figure class="chart">
    <figcaption>${title} <span class="muted">${last == null ? 'no samples yet' : fmt(last) + ' ' + unit}</span></figcaption>
    <svg viewBox="0 0 ${w} ${h}" role="img" aria-label=${`${title}: ${last == null ? 'no samples' : fmt(last) + ' ' + unit} now, highest ${fmt(max)} ${unit} in the last hour`}>
      <line x1="0" y1=${h - 4} x2=${w} y2=${h - 4} class="axis" />
      ${points.length > 1 ? html`<path d=${d} class="line" />` : null}
    </svg></figure>`;
}

// Stats polls an object's stats subresource (the short history its agent
// keeps) and draws its series.
export function Stats({ url, series }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let stop = false, t;
    const load = async () => {
      try { const d = await request('GET', url); if (!stop) { setData(d); setError(null); } }
      catch (e) { if (!stop) setError(e); }
      if (!stop) t = setTimeout(load, 10000);
    };
    load();
    return () => { stop = true; clearTimeout(t); };
  }, [url]);
  if (error) return html`<p class="muted">Graphs unavailable: ${error.message}</p>`;
  if (!data) return html`<p class="muted">Loading graphs…</p>`;
  const times = (data.samples || []).map(s => Date.parse(s.time));
  return html`<div class="charts">${series.map(([key, title, unit, scale, fmt]) => html`<${Chart} key=${key} title=${title} unit=${unit} fmt=${fmt}
    points=${(data.samples || []).map((s, i) => [times[i], (s[key] ?? 0) * (scale || 1)])} />`)}</div>`;
}
