// The few primitives every page uses: Preact's h and render, its hooks,
// and html, htm's tagged templates bound to h (JSX without a build step).
import { h, render, Fragment, Component } from '../vendor/preact/preact.js';
import { useState, useEffect, useLayoutEffect, useMemo, useRef, useCallback, useReducer } from '../vendor/preact/hooks.js';
import htm from '../vendor/htm/htm.js';

export const html = htm.bind(h);
export { h, render, Fragment, useState, useEffect, useLayoutEffect, useMemo, useRef, useCallback, useReducer };

// age says how long ago an RFC 3339 time was, as kubectl does (5s, 3m, 2h, 4d).
export function age(ts, now = Date.now()) {
  if (!ts) return '';
  const s = Math.max(0, Math.round((now - Date.parse(ts)) / 1000));
  if (s < 120) return s + 's';
  if (s < 7200) return Math.round(s / 60) + 'm';
  if (s < 172800) return Math.round(s / 3600) + 'h';
  return Math.round(s / 86400) + 'd';
}

// bytes writes a size with a binary unit (4Gi, 512Mi).
export function bytes(n) {
  if (n == null || n === '') return '';
  if (typeof n === 'string') n = parseBytes(n);
  if (isNaN(n)) return '';
  const units = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (Math.round(n * 10) / 10) + units[i] + (i === 0 ? 'B' : '');
}

// parseBytes reads the API's quantities ("4Gi", "512Mi", 1073741824).
export function parseBytes(v) {
  if (typeof v === 'number') return v;
  if (!v) return 0;
  const m = /^([0-9.]+)\s*([KMGTP]i?)?B?$/.exec(String(v).trim());
  if (!m) return NaN;
  const mult = { K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, Pi: 1024 ** 5 };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}

// cond finds a condition by type.
export const cond = (obj, type) => (obj?.status?.conditions || []).find(c => c.type === type);

// Time ticks once a second for pages that show ages.
export function useNow(every = 5000) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => { const t = setInterval(() => setNow(Date.now()), every); return () => clearInterval(t); }, [every]);
  return now;
}

// memo re-renders a component only when a prop changed (by identity), so
// a list of a thousand rows patches only the row an event touched.
export function memo(fn) {
  class Memo extends Component {
    shouldComponentUpdate(next) {
      for (const k in next) if (next[k] !== this.props[k]) return true;
      for (const k in this.props) if (!(k in next)) return true;
      return false;
    }
    render(props) { return fn(props); }
  }
  return Memo;
}
