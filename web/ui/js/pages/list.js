// A live list of any kind: one list and one watch, rows patched in place
// as events arrive.
import { html, useState, useMemo, useEffect, age, useNow, memo } from '../lib.js';
import { PREFIX } from '../api.js';
import { useCollection } from '../store.js';
import { Badge, ErrorBox, Link } from '../components.js';

// collectionURL is where a page lists a kind: the chosen tenant's, or for
// a cluster-wide reader who chose every tenant, all of them.
export function collectionURL(kind, tenant) {
  if (kind.scope === 'cluster') return PREFIX + '/' + kind.plural;
  if (!tenant) return PREFIX + '/' + kind.plural;
  return PREFIX + '/tenants/' + encodeURIComponent(tenant) + '/' + kind.plural;
}

// cmp orders names by code point: names are ASCII, and localeCompare is
// slow enough to matter a thousand rows at a time.
const cmp = (a, b) => a < b ? -1 : a > b ? 1 : 0;

export const detailPath = (kind, o) => `/k/${kind.plural}/${o.metadata.tenant || '_'}/${o.metadata.name}`;

export function ListPage({ kind, tenant, me }) {
  const now = useNow(10000);
  const c = useCollection(collectionURL(kind, tenant));
  const [q, setQ] = useState('');
  const showTenant = kind.scope !== 'cluster' && !tenant;
  const rows = useMemo(() => {
    const all = [...c.items.values()];
    const f = q.trim().toLowerCase();
    const shown = f ? all.filter(o => o.metadata.name.toLowerCase().includes(f) ||
      Object.entries(o.metadata.labels || {}).some(([k, v]) => (k + '=' + v).toLowerCase().includes(f))) : all;
    return shown.sort((a, b) => cmp(a.metadata.tenant || '', b.metadata.tenant || '') || cmp(a.metadata.name, b.metadata.name));
  }, [c.version, q]);
  // A long list is drawn a few hundred rows a frame, so the first rows are
  // on screen at once and the page answers while the rest arrive.
  const [limit, setLimit] = useState(150);
  useEffect(() => {
    if (limit >= rows.length) return;
    const id = requestAnimationFrame(() => setLimit(l => l + 400));
    return () => cancelAnimationFrame(id);
  }, [limit, rows.length]);
  const canCreate = me.role !== 'viewer' && kind.kind !== 'Event';
  return html`<section aria-labelledby="list-title">
    <header class="page-head">
      <h1 id="list-title">${kind.title}</h1>
      <div class="row">
        <label class="search"><span class="sr">Filter ${kind.title.toLowerCase()} by name or label</span>
          <input type="search" placeholder="Filter by name or label" value=${q} onInput=${e => setQ(e.target.value)} /></label>
        ${canCreate ? html`<${Link} class="button primary" to=${'/new/' + kind.plural}>Create</${Link}>` : null}
      </div>
    </header>
    <${ErrorBox} error=${c.error} />
    ${!c.loaded ? html`<p class="muted" aria-busy="true">Loading…</p>` : html`
    <p class="muted count" aria-live="polite">${rows.length} of ${c.items.size}</p>
    <div class="table-wrap"><table class="grid list" data-kind=${kind.plural}>
      <thead><tr><th scope="col">Name</th>${showTenant ? html`<th scope="col">Tenant</th>` : null}
        ${kind.cols.map(([t]) => html`<th scope="col">${t}</th>`)}<th scope="col">Age</th></tr></thead>
      <tbody>${rows.slice(0, limit).map(o => html`<${Row} key=${(o.metadata.tenant || '') + '/' + o.metadata.name} o=${o} kind=${kind} showTenant=${showTenant} now=${now} />`)}</tbody>
    </table></div>
    ${rows.length === 0 ? html`<p class="empty">No ${kind.title.toLowerCase()} ${tenant ? 'in tenant ' + tenant : ''}.</p>` : null}`}
  </section>`;
}

const Row = memo(function Row({ o, kind, showTenant, now }) {
  return html`<tr data-name=${o.metadata.name}>
    <th scope="row"><${Link} to=${detailPath(kind, o)}>${o.metadata.name}</${Link}></th>
    ${showTenant ? html`<td>${o.metadata.tenant || '(shared)'}</td>` : null}
    ${kind.cols.map(([t, get]) => t === 'Phase' ? html`<td><${Badge} phase=${get(o)} /></td>` : html`<td>${String(get(o) ?? '')}</td>`)}
    <td>${age(o.metadata.creationTimestamp, now)}</td></tr>`;
});
