// The dashboard's shell: log in with a token, the navigation, the tenant
// switcher (cluster-wide users only: a tenant's user sees their tenant
// and nothing else), and the hash router that picks a page.
import { html, render, useState, useEffect } from './lib.js';
import { whoami, token, setToken, request } from './api.js';
import { kinds, byPlural } from './kinds.js';
import { useCollection } from './store.js';
import { ErrorBox, Link, Badge } from './components.js';
import { ListPage, collectionURL } from './pages/list.js';
import { DetailPage } from './pages/detail.js';
import { NewVM, YAMLEditor, ImageUpload, SimpleForm, hasSimpleForm } from './pages/forms.js';
import { Topology } from './pages/topology.js';

const TENANT_KEY = 'hearth.tenant';

function useRoute() {
  const [r, setR] = useState(location.hash.slice(1) || '/');
  useEffect(() => {
    const on = () => { setR(location.hash.slice(1) || '/'); document.getElementById('main')?.focus({ preventScroll: true }); };
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return r;
}
const navigate = to => { location.hash = to; };

function Login({ onLogin, error: initial }) {
  const [tok, setTok] = useState('');
  const [remember, setRemember] = useState(false);
  const [error, setError] = useState(initial);
  const submit = async e => {
    e.preventDefault();
    setToken(tok.trim(), remember);
    try { onLogin(await whoami()); } catch (err) { setToken(''); setError(err); }
  };
  return html`<main id="main" class="login" tabindex="-1"><form class="form" onSubmit=${submit} aria-labelledby="lt">
    <h1 id="lt">Hearth</h1>
    <p>Log in with an API token: <code>hearth token create</code> makes one (the cluster's first is in the server's <code>admin.conf</code>).</p>
    <${ErrorBox} error=${error} />
    <div class="field"><label for="token">Token</label>
      <input id="token" type="password" autocomplete="current-password" required value=${tok} onInput=${e => setTok(e.target.value)} /></div>
    <div class="field check"><input id="remember" type="checkbox" checked=${remember} onChange=${e => setRemember(e.target.checked)} />
      <label for="remember">Remember on this browser</label></div>
    <button class="primary" type="submit">Log in</button>
  </form></main>`;
}

function TenantSwitch({ me, tenant, setTenant }) {
  const tenants = useCollection(me.tenant ? null : collectionURL(byPlural.tenants, ''));
  if (me.tenant) return html`<span class="tenant" data-tenant=${me.tenant}>Tenant <strong>${me.tenant}</strong></span>`;
  return html`<label class="tenant"><span>Tenant</span>
    <select value=${tenant} onChange=${e => setTenant(e.target.value)} aria-label="Tenant">
      <option value="">All tenants</option>
      ${[...tenants.items.values()].map(t => html`<option value=${t.metadata.name}>${t.metadata.name}</option>`)}
    </select></label>`;
}

function Nav({ me, route }) {
  const visible = kinds.filter(k => !(k.admin && me.tenant) && !(k.kind === 'User' && me.tenant && me.role !== 'tenant-admin'));
  const groups = [...new Set(visible.map(k => k.group))];
  return html`<nav aria-label="Sections" class="side">
    <ul><li><${Link} to="/" aria-current=${route === '/' ? 'page' : undefined}>Overview</${Link}></li>
      <li><${Link} to="/topology" aria-current=${route === '/topology' ? 'page' : undefined}>Topology</${Link}></li></ul>
    ${groups.map(g => html`<h2>${g}</h2><ul>${visible.filter(k => k.group === g).map(k => html`<li>
      <${Link} to=${'/k/' + k.plural} aria-current=${route.startsWith('/k/' + k.plural) ? 'page' : undefined}>${k.title}</${Link}></li>`)}</ul>`)}
  </nav>`;
}

function Overview({ me, tenant }) {
  const shown = ['virtualmachines', 'volumes', 'networks', 'images'].concat(me.tenant ? [] : ['hosts', 'machines']);
  return html`<section aria-labelledby="ov"><h1 id="ov">Overview${tenant ? ' of tenant ' + tenant : ''}</h1>
    <div class="cards">${shown.map(p => html`<${Card} key=${p} kind=${byPlural[p]} tenant=${tenant} />`)}</div></section>`;
}

function Card({ kind, tenant }) {
  const c = useCollection(collectionURL(kind, tenant));
  const phases = {};
  for (const o of c.items.values()) { const p = o.status?.phase || '—'; phases[p] = (phases[p] || 0) + 1; }
  return html`<${Link} class="card" to=${'/k/' + kind.plural}><h2>${kind.title}</h2>
    <p class="big">${c.loaded ? c.items.size : '…'}</p>
    <p>${Object.entries(phases).map(([p, n]) => html`<span class="pp"><${Badge} phase=${p === '—' ? '' : p} /> ${n}</span>`)}</p></${Link}>`;
}

function Page({ route, me, tenant }) {
  const seg = route.split('/').filter(Boolean).map(decodeURIComponent);
  const tenantNames = me.tenant ? [me.tenant] : null;
  if (seg[0] === 'k' && byPlural[seg[1]]) {
    const kind = byPlural[seg[1]];
    if (seg.length >= 4) return html`<${DetailPage} key=${route} kind=${kind} tenant=${seg[2] === '_' ? '' : seg[2]} name=${seg[3]} me=${me} navigate=${navigate} />`;
    return html`<${ListPage} key=${kind.plural + tenant} kind=${kind} tenant=${kind.scope === 'cluster' ? '' : tenant} me=${me} />`;
  }
  if (seg[0] === 'new' && byPlural[seg[1]]) {
    const kind = byPlural[seg[1]];
    if (kind.kind === 'VirtualMachine' && seg[2] !== 'yaml') return html`<${TenantList} me=${me}>${ts => html`<${NewVM} tenant=${tenant || me.tenant} tenants=${tenantNames || ts} navigate=${navigate} />`}</${TenantList}>`;
    if (kind.kind === 'Image' && seg[2] !== 'yaml') return html`<${ImageUpload} tenant=${tenant || me.tenant} navigate=${navigate} />`;
    if (hasSimpleForm(kind.plural) && seg[2] !== 'yaml') return html`<${SimpleForm} key=${route} kind=${kind} tenant=${tenant} me=${me} navigate=${navigate} />`;
    return html`<${YAMLEditor} key=${route} kind=${kind} tenant=${tenant} me=${me} navigate=${navigate} />`;
  }
  if (seg[0] === 'edit' && byPlural[seg[1]]) return html`<${YAMLEditor} key=${route} kind=${byPlural[seg[1]]} tenant=${seg[2] === '_' ? '' : seg[2]} name=${seg[3]} me=${me} navigate=${navigate} />`;
  if (seg[0] === 'topology') return html`<${Topology} tenant=${tenant} />`;
  if (!seg.length) return html`<${Overview} me=${me} tenant=${tenant} />`;
  return html`<p>No such page. <${Link} to="/">Overview</${Link}></p>`;
}

function TenantList({ me, children }) {
  const c = useCollection(me.tenant ? null : collectionURL(byPlural.tenants, ''));
  return children([...c.items.keys()].map(k => k.replace(/^\//, '')));
}

function App() {
  const [me, setMe] = useState(null);
  const [error, setError] = useState(null);
  const [checked, setChecked] = useState(!token());
  const [tenant, setTenantState] = useState(localStorage.getItem(TENANT_KEY) || '');
  const [menu, setMenu] = useState(false);
  const route = useRoute();
  useEffect(() => {
    if (!token()) return;
    performance.mark('hearth:whoami-start');
    whoami().then(w => { performance.mark('hearth:whoami-done'); setMe(w); }, e => { if (e.code === 401) setToken(''); setError(e); }).finally(() => setChecked(true));
  }, []);
  useEffect(() => setMenu(false), [route]);
  if (!checked) return html`<p class="muted" aria-busy="true">Loading…</p>`;
  if (!me) return html`<${Login} onLogin=${setMe} error=${error} />`;
  if (me.host || me.boot) return html`<${Login} onLogin=${setMe} error=${{ reason: 'Forbidden', message: 'that is a host or boot service credential: log in with a person\'s token' }} />`;
  // A tenant's user is always in their tenant, whatever was stored.
  const current = me.tenant || tenant;
  const setTenant = t => { localStorage.setItem(TENANT_KEY, t); setTenantState(t); };
  const logout = () => { setToken(''); localStorage.removeItem(TENANT_KEY); location.hash = '/'; location.reload(); };
  return html`<a class="skip" href="#main" onClick=${e => { e.preventDefault(); document.getElementById('main').focus(); }}>Skip to content</a>
    <header class="top">
      <button class="menu" type="button" aria-expanded=${menu} aria-controls="side" onClick=${() => setMenu(!menu)}>Menu</button>
      <${Link} to="/" class="brand">Hearth</${Link}>
      <${TenantSwitch} me=${me} tenant=${current} setTenant=${setTenant} />
      <span class="who" data-role=${me.role}>${me.name} <span class="muted">(${me.role})</span></span>
      <button type="button" onClick=${logout}>Log out</button>
    </header>
    <div class="layout"><div id="side" class=${menu ? 'open' : ''}><${Nav} me=${me} route=${route} /></div>
      <main id="main" tabindex="-1"><${Page} route=${route} me=${me} tenant=${current} /></main></div>`;
}

render(html`<${App} />`, document.getElementById('app'));
