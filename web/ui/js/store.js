// Live collections: each list a page shows is one list and one watch of
// the API, shared by every component that shows it, resumed from its
// last resourceVersion when the stream ends and listed again when the
// server says that version is gone (410).
import { request, watch } from './api.js';
import { useLayoutEffect, useState } from './lib.js';

const caches = new Map();
// linger keeps a collection watched for a while after its last viewer
// leaves, so going back to a page is instant.
const linger = 30000;

class Collection {
  constructor(url) {
    this.url = url; this.items = new Map(); this.subs = new Set();
    this.rv = ''; this.loaded = false; this.error = null; this.version = 0;
    this.ctl = null; this.stopTimer = null;
  }
  subscribe(fn) {
    clearTimeout(this.stopTimer);
    this.subs.add(fn);
    if (!this.ctl) this.start();
    return () => {
      this.subs.delete(fn);
      if (!this.subs.size) this.stopTimer = setTimeout(() => this.stop(), linger);
    };
  }
  notify() { this.version++; for (const fn of this.subs) fn(this.version); }
  stop() { this.ctl?.abort(); this.ctl = null; caches.delete(this.url); }
  async start() {
    const ctl = this.ctl = new AbortController();
    let delay = 500;
    while (!ctl.signal.aborted) {
      try {
        if (!this.rv) {
          performance.mark('hearth:list-start ' + this.url);
          const list = await request('GET', this.url, undefined, { signal: ctl.signal });
          performance.mark('hearth:list-done ' + this.url);
          this.items = new Map(list.items.map(o => [key(o), o]));
          this.rv = list.metadata.resourceVersion; this.loaded = true; this.error = null;
          this.notify();
        }
        const began = Date.now();
        await watch(this.url, this.rv, evs => this.apply(evs), ctl.signal);
        // Ended cleanly (a server going away): resume, at once after a
        // long watch, a little later each time after short ones.
        if (Date.now() - began < 5000) {
          await new Promise(r => setTimeout(r, delay));
          delay = Math.min(delay * 2, 10000);
        } else delay = 500;
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e.code === 410) { this.rv = ''; continue; }
        this.error = e; this.notify();
        if (e.code === 401 || e.code === 403) { this.loaded = true; this.notify(); return; }
        await new Promise(r => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
        if (e.code !== 0) this.rv = '';
      }
    }
  }
  apply(events) {
    // When each batch arrived, for the browser tests' latency figures.
    performance.mark('hearth:watch', { detail: events.map(e => e.object?.metadata?.name) });
    let changed = false;
    for (const ev of events) {
      const o = ev.object;
      switch (ev.type) {
        case 'ADDED': case 'MODIFIED': this.items.set(key(o), o); changed = true; break;
        case 'DELETED': this.items.delete(key(o)); changed = true; break;
        case 'ERROR': {
          const err = new Error(o.message); err.code = o.code;
          throw err;
        }
      }
      if (o?.metadata?.resourceVersion) this.rv = o.metadata.resourceVersion;
    }
    if (changed) { this.error = null; this.notify(); }
  }
}

const key = o => (o.metadata.tenant || '') + '/' + o.metadata.name;

export function collection(url) {
  let c = caches.get(url);
  if (!c) { c = new Collection(url); caches.set(url, c); }
  return c;
}

// useCollection follows a collection's URL (null for none) and returns
// {items, loaded, error}; items is a Map by "tenant/name".
export function useCollection(url) {
  const [, setVersion] = useState(0);
  const c = url ? collection(url) : null;
  // Subscribed as the component mounts (not after the browser paints), so
  // the list request starts as early as it can.
  useLayoutEffect(() => c ? c.subscribe(setVersion) : undefined, [url]);
  if (!c) return { items: new Map(), loaded: true, error: null, version: 0 };
  return { items: c.items, loaded: c.loaded, error: c.error, version: c.version };
}

// useObject follows one object through its collection's watch.
export function useObject(url, tenant, name) {
  const c = useCollection(url);
  return { obj: c.items.get((tenant || '') + '/' + name), loaded: c.loaded, error: c.error };
}
