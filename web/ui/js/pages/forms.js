// Creating and editing: a form for VMs, an upload for images, and a YAML
// editor for every kind. The server validates; its errors appear at the
// field they name (FieldError.field), and nothing is shown as done until
// the API has accepted it.
import { html, useState, useEffect, useRef } from '../lib.js';
import { request, path, PREFIX } from '../api.js';
import { useCollection } from '../store.js';
import { toYAML, lineOf } from '../yaml.js';
import { ErrorBox, Link } from '../components.js';
import { byPlural } from '../kinds.js';
import { collectionURL } from './list.js';

// Field is a labelled input whose server error, if any, sits under it.
function Field({ label, field, errors, hint, children }) {
  const err = errors.find(e => e.field === field);
  const id = 'f-' + field.replace(/[^a-z0-9]/gi, '-');
  return html`<div class=${'field' + (err ? ' invalid' : '')} data-field=${field}>
    <label for=${id}>${label}</label>
    ${children(id, err ? id + '-err' : (hint ? id + '-hint' : undefined), !!err)}
    ${hint && !err ? html`<small id=${id + '-hint'} class="muted">${hint}</small>` : null}
    ${err ? html`<small id=${id + '-err'} class="field-error" role="alert">${err.detail}</small>` : null}
  </div>`;
}

const inp = (value, set, type = 'text', extra = {}) => (id, desc, bad) =>
  html`<input id=${id} type=${type} value=${value} aria-describedby=${desc} aria-invalid=${bad ? 'true' : undefined}
    onInput=${e => set(type === 'number' ? (e.target.value === '' ? '' : Number(e.target.value)) : e.target.value)} ...${extra} />`;

export function NewVM({ tenant, tenants, navigate }) {
  const [v, setV] = useState({ name: '', tenant: tenant || '', cpus: 1, memory: '512Mi', from: 'disk', image: '', size: '10Gi',
    kernel: '', initrd: '', cmdline: 'console=ttyS0', network: '', userData: '', host: '' });
  const set = k => x => setV(o => ({ ...o, [k]: x }));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const t = v.tenant;
  const images = useCollection(t ? collectionURL(byPlural.images, t) : null);
  const nets = useCollection(t ? collectionURL(byPlural.networks, t) : null);
  const errors = error?.fields || [];
  const submit = async e => {
    e.preventDefault();
    const spec = { cpus: v.cpus === '' ? undefined : v.cpus, memory: v.memory || undefined, boot: { from: v.from } };
    if (v.from === 'disk' && v.image) spec.disks = [{ image: v.image, size: v.size || undefined }];
    // A kernel or initrd is an Image by name, or an http(s) URL.
    const file = x => /^https?:\/\//.test(x) ? { url: x } : { image: x };
    if (v.from === 'kernel') { spec.boot.kernel = file(v.kernel); if (v.initrd) spec.boot.initrd = file(v.initrd); spec.boot.cmdline = v.cmdline; }
    if (v.network) spec.nics = [{ network: v.network }];
    if (v.userData) spec.cloudInit = { userData: v.userData };
    const obj = { apiVersion: 'hearth.dev/v1alpha1', kind: 'VirtualMachine', metadata: { name: v.name, tenant: t }, spec };
    setBusy(true); setError(null);
    try {
      if (!t) throw Object.assign(new Error('choose a tenant'), { reason: 'Invalid', fields: [{ field: 'metadata.tenant', detail: 'choose the tenant the VM belongs to' }] });
      await request('POST', path(byPlural.virtualmachines, t), obj);
      navigate(`/k/virtualmachines/${t}/${v.name}`);
    } catch (err) { setError(err); setBusy(false); }
  };
  return html`<section aria-labelledby="nv"><h1 id="nv">New virtual machine</h1>
    <form class="form" onSubmit=${submit} novalidate>
      <${ErrorBox} error=${error && !errors.length ? error : (error ? { reason: error.reason, message: 'The server refused the VM: see the fields marked below.' } : null)} />
      ${unplaced(errors, ['metadata.name', 'metadata.tenant', 'spec.cpus', 'spec.memory', 'spec.boot.from', 'spec.disks[0].image', 'spec.disks[0].size', 'spec.boot.kernel.url', 'spec.boot.initrd.url', 'spec.boot.kernel.image', 'spec.boot.initrd.image', 'spec.boot.kernel', 'spec.boot.initrd', 'spec.boot.cmdline', 'spec.nics[0].network', 'spec.cloudInit.userData'])}
      <${Field} label="Name" field="metadata.name" errors=${errors} hint="Lower-case letters, digits and dashes.">${inp(v.name, set('name'), 'text', { required: true, autocomplete: 'off' })}</${Field}>
      <${Field} label="Tenant" field="metadata.tenant" errors=${errors}>${(id, d) => tenants.length > 1 || !tenant
        ? html`<select id=${id} aria-describedby=${d} value=${v.tenant} onChange=${e => set('tenant')(e.target.value)}>
            <option value="">Choose…</option>${tenants.map(x => html`<option value=${x}>${x}</option>`)}</select>`
        : html`<input id=${id} value=${v.tenant} readonly />`}</${Field}>
      <div class="pair">
        <${Field} label="CPUs" field="spec.cpus" errors=${errors}>${inp(v.cpus, set('cpus'), 'number', { min: 1 })}</${Field}>
        <${Field} label="Memory" field="spec.memory" errors=${errors} hint="Such as 512Mi or 2Gi.">${inp(v.memory, set('memory'))}</${Field}>
      </div>
      <${Field} label="Boot from" field="spec.boot.from" errors=${errors}>${id => html`<select id=${id} value=${v.from} onChange=${e => set('from')(e.target.value)}>
        <option value="disk">A disk cloned from an image</option><option value="kernel">A kernel and initrd</option><option value="network">The network (PXE)</option></select>`}</${Field}>
      ${v.from === 'disk' ? html`<div class="pair">
        <${Field} label="Image" field="spec.disks[0].image" errors=${errors}>${id => html`<select id=${id} value=${v.image} onChange=${e => set('image')(e.target.value)}>
          <option value="">No disk</option>${[...images.items.values()].map(i => html`<option value=${i.metadata.name}>${i.metadata.name}${i.metadata.tenant ? '' : ' (shared)'}</option>`)}</select>`}</${Field}>
        <${Field} label="Disk size" field="spec.disks[0].size" errors=${errors}>${inp(v.size, set('size'))}</${Field}></div>` : null}
      ${v.from === 'kernel' ? html`
        <${Field} label="Kernel" field=${/^https?:/.test(v.kernel) ? 'spec.boot.kernel.url' : 'spec.boot.kernel.image'} errors=${errors} hint="An image's name, or an http(s):// URL.">${inp(v.kernel, set('kernel'), 'text', { list: 'image-names' })}</${Field}>
        <${Field} label="Initrd" field=${/^https?:/.test(v.initrd) ? 'spec.boot.initrd.url' : 'spec.boot.initrd.image'} errors=${errors} hint="An image's name, or an http(s):// URL; may be empty.">${inp(v.initrd, set('initrd'), 'text', { list: 'image-names' })}</${Field}>
        <datalist id="image-names">${[...images.items.values()].map(i => html`<option value=${i.metadata.name} />`)}</datalist>
        <${Field} label="Kernel command line" field="spec.boot.cmdline" errors=${errors}>${inp(v.cmdline, set('cmdline'))}</${Field}>` : null}
      <${Field} label="Network" field="spec.nics[0].network" errors=${errors}>${id => html`<select id=${id} value=${v.network} onChange=${e => set('network')(e.target.value)}>
        <option value="">None</option>${[...nets.items.values()].map(n => html`<option value=${n.metadata.name}>${n.metadata.name}</option>`)}</select>`}</${Field}>
      <${Field} label="cloud-init user data" field="spec.cloudInit.userData" errors=${errors}>${(id, d) => html`<textarea id=${id} aria-describedby=${d} rows="4" value=${v.userData} onInput=${e => set('userData')(e.target.value)}></textarea>`}</${Field}>
      <div class="row"><button class="primary" type="submit" disabled=${busy}>${busy ? 'Creating…' : 'Create VM'}</button>
        <${Link} class="button" to="/k/virtualmachines">Cancel</${Link}></div>
    </form></section>`;
}

// unplaced lists the server's field errors that no field of the form shows.
function unplaced(errors, shown) {
  const rest = errors.filter(e => !shown.includes(e.field));
  return rest.length ? html`<ul class="error">${rest.map(e => html`<li><code>${e.field}</code>: ${e.detail}</li>`)}</ul>` : null;
}

// YAMLEditor creates (no name) or replaces an object of any kind from YAML
// the person writes; the server parses and validates it.
export function YAMLEditor({ kind, tenant, name, navigate, me }) {
  const [text, setText] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const ta = useRef();
  const objTenant = kind.scope === 'cluster' ? '' : (tenant || me.tenant || '');
  useEffect(() => {
    if (name) {
      request('GET', path(kind, objTenant, name)).then(o => { delete o.status; setText(toYAML(o)); }, setError);
    } else {
      const md = { name: '' };
      if (kind.scope !== 'cluster' && objTenant) md.tenant = objTenant;
      setText(toYAML({ apiVersion: 'hearth.dev/v1alpha1', kind: kind.kind, metadata: md, spec: {} }));
    }
  }, [kind.plural, objTenant, name]);
  const errLines = (error?.fields || []).map(f => ({ ...f, line: text ? lineOf(text, f.field) : 0 }));
  const save = async e => {
    e.preventDefault();
    setBusy(true); setError(null);
    try {
      const m = /^\s*tenant:\s*"?([^"\s#]+)/m.exec(text);
      const t = kind.scope === 'cluster' ? '' : (m ? m[1] : objTenant);
      const o = name ? await request('PUT', path(kind, t, name), text, { contentType: 'application/yaml' })
        : await request('POST', path(kind, t), text, { contentType: 'application/yaml' });
      navigate(`/k/${kind.plural}/${o.metadata.tenant || '_'}/${o.metadata.name}`);
    } catch (err) {
      setError(err); setBusy(false);
      const first = (err.fields || [])[0];
      if (first && ta.current) {
        const line = lineOf(text, first.field), lines = text.split('\n');
        const start = lines.slice(0, line).join('\n').length + (line ? 1 : 0);
        ta.current.focus(); ta.current.setSelectionRange(start, start + lines[line].length);
      }
    }
  };
  if (text === null) return error ? html`<${ErrorBox} error=${error} />` : html`<p class="muted">Loading…</p>`;
  const nlines = text.split('\n').length;
  const bad = new Set(errLines.map(e => e.line));
  return html`<section aria-labelledby="ye"><h1 id="ye">${name ? `Edit ${kind.kind} ${name}` : `New ${kind.kind}`}</h1>
    <form class="form wide" onSubmit=${save}>
      <${ErrorBox} error=${error && !errLines.length ? error : null} />
      ${errLines.length ? html`<ul class="error" role="alert">${errLines.map(e => html`<li>line ${e.line + 1}: <code>${e.field}</code>: ${e.detail}</li>`)}</ul>` : null}
      <div class="editor"><pre class="gutter" aria-hidden="true">${Array.from({ length: nlines }, (_, i) => html`<span class=${bad.has(i) ? 'bad' : ''}>${i + 1}\n</span>`)}</pre>
        <textarea ref=${ta} aria-label="YAML" spellcheck="false" rows=${Math.max(12, nlines + 1)} value=${text}
          aria-invalid=${errLines.length ? 'true' : undefined} onInput=${e => setText(e.target.value)}></textarea></div>
      <div class="row"><button class="primary" type="submit" disabled=${busy}>${name ? 'Save' : 'Create'}</button>
        <${Link} class="button" to=${'/k/' + kind.plural}>Cancel</${Link}></div>
    </form></section>`;
}

// ImageUpload makes an Image to be uploaded, then streams the file to its
// content endpoint with a progress bar (XMLHttpRequest reports upload
// progress; fetch does not).
export function ImageUpload({ tenant, navigate }) {
  const [name, setName] = useState('');
  const [file, setFile] = useState(null);
  const [pct, setPct] = useState(null);
  const [error, setError] = useState(null);
  const errors = error?.fields || [];
  const go = async e => {
    e.preventDefault(); setError(null);
    const kind = byPlural.images;
    try {
      await request('POST', path(kind, tenant), { apiVersion: 'hearth.dev/v1alpha1', kind: 'Image', metadata: { name, tenant: tenant || undefined }, spec: { source: { upload: true } } });
      setPct(0);
      await new Promise((resolve, reject) => {
        const x = new XMLHttpRequest();
        x.open('PUT', path(kind, tenant, name, 'content'));
        x.setRequestHeader('Authorization', 'Bearer ' + (sessionStorage.getItem('hearth.token') || localStorage.getItem('hearth.token')));
        x.setRequestHeader('Content-Type', 'application/octet-stream');
        x.upload.onprogress = ev => ev.lengthComputable && setPct(Math.round(ev.loaded / ev.total * 100));
        x.onload = () => x.status < 300 ? resolve() : reject(Object.assign(new Error(JSON.parse(x.responseText || '{}').message || x.statusText), { reason: 'Upload' }));
        x.onerror = () => reject(new Error('the upload failed'));
        x.send(file);
      });
      navigate(`/k/images/${tenant || '_'}/${name}`);
    } catch (err) { setError(err); setPct(null); }
  };
  return html`<section aria-labelledby="iu"><h1 id="iu">Upload an image${tenant ? ' to tenant ' + tenant : ' (shared)'}</h1>
    <form class="form" onSubmit=${go}>
      <${ErrorBox} error=${error && !errors.length ? error : null} />
      <${Field} label="Name" field="metadata.name" errors=${errors}>${inp(name, setName)}</${Field}>
      <div class="field"><label for="iu-file">File (qcow2, raw or ISO)</label><input id="iu-file" type="file" required onChange=${e => setFile(e.target.files[0])} /></div>
      ${pct !== null ? html`<progress max="100" value=${pct} aria-label="Upload progress">${pct}%</progress> <span>${pct}%</span>` : null}
      <div class="row"><button class="primary" type="submit" disabled=${!file || !name || pct !== null}>Upload</button>
      <${Link} class="button" to="/new/images/yaml">Or describe a URL in YAML</${Link}></div>
    </form></section>`;
}

// Forms for the other common kinds: each field names the path the server
// uses in its errors, and the object is built from those paths.
const simple = {
  networks: [['Description', 'spec.description'], ['MTU', 'spec.mtu', 'number'], ['DNS domain', 'spec.dnsDomain']],
  subnets: [['Network', 'spec.network', 'select', 'networks'], ['CIDR', 'spec.cidr', 'text', null, 'Such as 10.0.0.0/24.'], ['Gateway', 'spec.gateway', 'text', null, 'Default: the first address.']],
  sshkeys: [['Public key', 'spec.publicKey', 'textarea', null, 'One line, as in ~/.ssh/id_ed25519.pub.']],
  volumes: [['Size', 'spec.size', 'text', null, 'Such as 20Gi.'], ['From image', 'spec.source.image', 'select', 'images']],
  securitygroups: [['Description', 'spec.description']],
  tenants: [['Display name', 'spec.displayName'], ['vCPU quota', 'spec.quota.vcpus', 'number'], ['Memory quota', 'spec.quota.memory', 'text', null, 'Such as 32Gi.'], ['VM quota', 'spec.quota.vms', 'number']],
  users: [['Full name', 'spec.fullName'], ['Role', 'spec.role', 'choice', ['tenant-member', 'tenant-admin', 'viewer', 'cluster-admin']], ['Tenant', 'spec.tenant', 'text', null, 'Empty for a cluster-wide user.']],
};
export const hasSimpleForm = plural => plural in simple;

function setPath(obj, p, v) {
  const parts = p.split('.');
  let o = obj;
  for (const k of parts.slice(0, -1)) o = o[k] ??= {};
  o[parts[parts.length - 1]] = v;
}

export function SimpleForm({ kind, tenant, navigate, me }) {
  const fields = simple[kind.plural];
  const [name, setName] = useState('');
  const [vals, setVals] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const objTenant = kind.scope === 'cluster' ? '' : (tenant || me.tenant || '');
  const refs = {
    networks: useCollection(objTenant && kind.plural === 'subnets' ? collectionURL(byPlural.networks, objTenant) : null),
    images: useCollection(objTenant && kind.plural === 'volumes' ? collectionURL(byPlural.images, objTenant) : null),
  };
  const errors = error?.fields || [];
  const submit = async e => {
    e.preventDefault();
    const obj = { apiVersion: 'hearth.dev/v1alpha1', kind: kind.kind, metadata: { name }, spec: {} };
    if (objTenant) obj.metadata.tenant = objTenant;
    for (const [, p, type] of fields) {
      const v = vals[p];
      if (v === undefined || v === '') continue;
      setPath(obj, p, type === 'number' ? Number(v) : v);
    }
    setBusy(true); setError(null);
    try {
      if (kind.scope !== 'cluster' && !objTenant) throw Object.assign(new Error('choose a tenant in the header first'), { reason: 'Invalid' });
      const o = await request('POST', path(kind, objTenant), obj);
      navigate(`/k/${kind.plural}/${o.metadata.tenant || '_'}/${o.metadata.name}`);
    } catch (err) { setError(err); setBusy(false); }
  };
  return html`<section aria-labelledby="sf"><h1 id="sf">New ${kind.kind}${objTenant ? ' in tenant ' + objTenant : ''}</h1>
    <form class="form" onSubmit=${submit} novalidate>
      <${ErrorBox} error=${error && !errors.length ? error : (error ? { reason: error.reason, message: 'The server refused it: see the fields marked below.' } : null)} />
      ${unplaced(errors, ['metadata.name', ...fields.map(f => f[1])])}
      <${Field} label="Name" field="metadata.name" errors=${errors}>${inp(name, setName, 'text', { autocomplete: 'off' })}</${Field}>
      ${fields.map(([label, p, type = 'text', opts, hint]) => html`<${Field} key=${p} label=${label} field=${p} errors=${errors} hint=${hint}>${(id, d, bad) => {
        const v = vals[p] ?? '', set = x => setVals(o => ({ ...o, [p]: x }));
        if (type === 'textarea') return html`<textarea id=${id} rows="3" aria-describedby=${d} aria-invalid=${bad ? 'true' : undefined} value=${v} onInput=${e => set(e.target.value)}></textarea>`;
        if (type === 'select' || type === 'choice') {
          const options = type === 'choice' ? opts : [...refs[opts].items.values()].map(o => o.metadata.name);
          return html`<select id=${id} aria-describedby=${d} aria-invalid=${bad ? 'true' : undefined} value=${v} onChange=${e => set(e.target.value)}>
            <option value="">${type === 'choice' ? 'Choose…' : 'None'}</option>${options.map(o => html`<option value=${o}>${o}</option>`)}</select>`;
        }
        return inp(v, set, type)(id, d, bad);
      }}</${Field}>`)}
      <div class="row"><button class="primary" type="submit" disabled=${busy}>Create</button>
        <${Link} class="button" to=${`/new/${kind.plural}/yaml`}>Write YAML instead</${Link}>
        <${Link} class="button" to=${'/k/' + kind.plural}>Cancel</${Link}></div>
    </form></section>`;
}
