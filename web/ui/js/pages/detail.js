// Detail pages: every kind gets its facts, conditions, events and YAML;
// VMs, hosts and machines get their own sections and actions.
import { html, useState, useEffect, age, bytes, parseBytes, useNow } from '../lib.js';
import { request, path } from '../api.js';
import { useObject, useCollection } from '../store.js';
import { toYAML } from '../yaml.js';
import { Badge, ErrorBox, Facts, Conditions, Events, ConfirmButton, useAction, Link, Stats, useEvents } from '../components.js';
import { collectionURL, detailPath } from './list.js';
import { byPlural } from '../kinds.js';
import { Console } from './console.js';

export function DetailPage({ kind, tenant, name, me, navigate }) {
  useNow(10000);
  const { obj, loaded, error } = useObject(collectionURL(kind, kind.scope === 'cluster' ? '' : tenant), tenant, name);
  const act = useAction();
  if (!loaded) return html`<p class="muted" aria-busy="true">Loading…</p>`;
  if (!obj) return html`<section><h1>${name}</h1><${ErrorBox} error=${error || { reason: 'NotFound', message: `${kind.kind} ${name} does not exist${tenant ? ' in tenant ' + tenant : ''} (or was deleted).` }} /></section>`;
  const writer = me.role !== 'viewer';
  const del = () => act.run(async () => { await request('DELETE', path(kind, tenant, name)); navigate('/k/' + kind.plural); });
  const Special = special[kind.kind];
  return html`<article aria-labelledby="obj-title">
    <header class="page-head">
      <div><p class="crumb"><${Link} to=${'/k/' + kind.plural}>${kind.title}</${Link}>${tenant ? ' · tenant ' + tenant : ''}</p>
        <h1 id="obj-title">${name} <${Badge} phase=${obj.status?.phase} /></h1></div>
      ${writer ? html`<div class="row actions">
        <${Link} class="button" to=${`/edit/${kind.plural}/${tenant || '_'}/${name}`}>Edit YAML</${Link}>
        ${kind.kind !== 'Tenant' || true ? html`<${ConfirmButton} label="Delete" cls="danger" question=${`Delete ${kind.kind} ${name}?`} onConfirm=${del} />` : null}
      </div>` : null}
    </header>
    <${ErrorBox} error=${act.error} />
    ${Special ? html`<${Special} obj=${obj} kind=${kind} tenant=${tenant} name=${name} me=${me} writer=${writer} />` : html`<${Generic} obj=${obj} />`}
    <section aria-labelledby="conds"><h2 id="conds">Conditions</h2><${Conditions} obj=${obj} /></section>
    <section aria-labelledby="evs"><h2 id="evs">Events</h2><${Events} kind=${kind.kind} tenant=${obj.metadata.tenant} name=${name} /></section>
    <details><summary>YAML</summary><pre class="yaml">${toYAML(obj)}</pre></details>
  </article>`;
}

function Generic({ obj }) {
  const m = obj.metadata;
  return html`<section aria-label="Summary"><${Facts} rows=${[
    ['Labels', Object.entries(m.labels || {}).map(([k, v]) => k + '=' + v).join(', ')],
    ['Created', m.creationTimestamp && `${age(m.creationTimestamp)} ago`],
    ['Description', obj.spec?.description],
  ]} /></section>`;
}

const vmSeries = [
  ['cpu', 'CPU', '%', 1, v => v.toFixed(0)], ['memory', 'Memory', 'MiB', 1 / 1048576, v => v.toFixed(0)],
  ['diskRead', 'Disk read', 'KiB/s', 1 / 1024], ['diskWrite', 'Disk write', 'KiB/s', 1 / 1024],
  ['netRx', 'Network in', 'KiB/s', 1 / 1024], ['netTx', 'Network out', 'KiB/s', 1 / 1024],
];

function VM({ obj, tenant, name, writer }) {
  const act = useAction();
  const [tab, setTab] = useState('console');
  const vmPath = path(byPlural.virtualmachines, tenant, name);
  const power = (state) => act.run(() => request('PATCH', vmPath, { spec: { powerState: state } }, { contentType: 'application/merge-patch+json' }));
  const restart = () => act.run(() => request('PATCH', vmPath, { spec: { restartRequested: new Date().toISOString() } }, { contentType: 'application/merge-patch+json' }));
  const s = obj.spec, st = obj.status || {};
  const phase = st.phase;
  return html`
    ${writer ? html`<div class="row actions" role="toolbar" aria-label="Power">
      <button type="button" disabled=${act.busy || s.powerState === 'Running'} onClick=${() => power('Running')}>Start</button>
      <button type="button" disabled=${act.busy || s.powerState === 'Stopped'} onClick=${() => power('Stopped')}>Stop</button>
      <button type="button" disabled=${act.busy || phase !== 'Running'} onClick=${restart}>Restart</button>
    </div>` : null}
    <${ErrorBox} error=${act.error} />
    <section aria-label="Summary"><${Facts} rows=${[
      ['Host', (st.host || s.host) ? html`<span>${st.host || s.host}</span>` : 'not placed yet'],
      ['Wanted power', s.powerState], ['CPUs', s.cpus], ['Memory', s.memory],
      ['Accelerator', st.accelerator], ['Started', st.startedAt && `${age(st.startedAt)} ago`],
      ['Restarts', st.restartCount], ['Boot', s.boot?.from],
      ['Labels', Object.entries(obj.metadata.labels || {}).map(([k, v]) => k + '=' + v).join(', ')],
    ]} /></section>
    <section aria-labelledby="nics"><h2 id="nics">Network interfaces</h2>
      ${(s.nics || []).length ? html`<table class="grid"><thead><tr><th scope="col">Network</th><th scope="col">Subnet</th><th scope="col">IP</th><th scope="col">MAC</th><th scope="col">Device</th></tr></thead>
      <tbody>${(s.nics || []).map((n, i) => { const is = (st.interfaces || [])[i] || {}; return html`<tr><td>${n.network}</td><td>${is.subnet || n.subnet || ''}</td><td>${is.ip || n.ip || ''}</td><td>${is.mac || n.mac || ''}</td><td>${is.device || ''}</td></tr>`; })}</tbody></table>`
        : html`<p class="muted">No network interfaces.</p>`}</section>
    <section aria-labelledby="disks"><h2 id="disks">Disks</h2>
      ${(s.disks || []).length ? html`<table class="grid"><thead><tr><th scope="col">#</th><th scope="col">Volume or image</th><th scope="col">Size</th><th scope="col">Bus</th><th scope="col">Device</th></tr></thead>
      <tbody>${s.disks.map((d, i) => html`<tr><td>${i}</td><td>${d.volume ? html`<${Link} to=${`/k/volumes/${tenant}/${d.volume}`}>${d.volume}</${Link}>` : 'image ' + d.image}</td><td>${d.size || ''}</td><td>${d.bus || 'virtio'}</td><td>${d.device || 'disk'}</td></tr>`)}</tbody></table>`
        : html`<p class="muted">No disks${s.boot?.from === 'kernel' ? ' (boots a kernel)' : ''}.</p>`}</section>
    <section aria-labelledby="graphs"><h2 id="graphs">Last hour</h2>
      ${phase === 'Running' || phase === 'Paused' ? html`<${Stats} url=${vmPath + '/stats'} series=${vmSeries} />` : html`<p class="muted">Graphs appear while the VM runs.</p>`}</section>
    <section aria-labelledby="con"><h2 id="con">Serial console</h2>
      <div class="tabs" role="tablist">
        <button role="tab" aria-selected=${tab === 'console'} onClick=${() => setTab('console')}>Interactive</button>
        <button role="tab" aria-selected=${tab === 'log'} onClick=${() => setTab('log')}>Log</button>
      </div>
      ${tab === 'console' ? (writer ? html`<${Console} tenant=${tenant} name=${name} running=${phase === 'Running' || phase === 'Starting' || phase === 'Paused'} />` : html`<p class="muted">Viewers may read the log; the console needs the right to change the VM.</p>`)
        : html`<${Log} url=${vmPath + '/log?tail=65536'} />`}
    </section>`;
}

function Log({ url }) {
  const [text, setText] = useState(null);
  const [error, setError] = useState(null);
  const load = () => request('GET', url, undefined, { text: true }).then(t => { setText(t); setError(null); }, setError);
  if (text === null && !error) load();
  return html`<div><button type="button" onClick=${load}>Reload</button>
    <${ErrorBox} error=${error} /><pre class="log" tabindex="0" aria-label="Console log">${text}</pre></div>`;
}

const hostSeries = [
  ['cpu', 'CPU', '%', 1, v => v.toFixed(0)], ['memory', 'Memory used', 'GiB', 1 / 1073741824, v => v.toFixed(2)],
  ['diskRead', 'Disk read', 'KiB/s', 1 / 1024], ['diskWrite', 'Disk write', 'KiB/s', 1 / 1024],
  ['netRx', 'Network in', 'KiB/s', 1 / 1024], ['netTx', 'Network out', 'KiB/s', 1 / 1024],
];

function Meter({ label, used, total, fmt = String }) {
  const u = parseBytes(used), t = parseBytes(total);
  const pct = t ? Math.min(100, Math.round(u / t * 100)) : 0;
  return html`<div class="meter"><span>${label}: ${fmt(used)} of ${fmt(total)} allocated</span>
    <progress max="100" value=${pct} aria-label=${`${label} allocated: ${pct}%`}>${pct}%</progress></div>`;
}

function Host({ obj, name }) {
  const s = obj.spec, st = obj.status || {};
  const vms = useCollection(collectionURL(byPlural.virtualmachines, '') + '?fieldSelector=' + encodeURIComponent('spec.host=' + name));
  const list = [...vms.items.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  return html`
    <section aria-label="Summary"><${Facts} rows=${[
      ['Address', s.address], ['Site', s.site], ['Schedulable', s.unschedulable ? 'no (cordoned)' : 'yes'],
      ['Architecture', st.architecture], ['KVM', st.kvm ? 'yes' : 'no (TCG)'], ['Kernel', st.kernelVersion], ['Agent', st.agentVersion],
      ['Last heartbeat', st.lastHeartbeat && `${age(st.lastHeartbeat)} ago`],
    ]} />
    <${Meter} label="CPUs" used=${st.allocatedCPUs || 0} total=${st.cpus || 0} />
    <${Meter} label="Memory" used=${st.allocatedMemory || 0} total=${st.memory || 0} fmt=${bytes} /></section>
    <section aria-labelledby="hg"><h2 id="hg">Last hour</h2><${Stats} url=${path(byPlural.hosts, '', name) + '/stats'} series=${hostSeries} /></section>
    <section aria-labelledby="hv"><h2 id="hv">VMs on this host (${list.length})</h2>
      <ul class="chips">${list.map(v => html`<li><${Link} to=${detailPath(byPlural.virtualmachines, v)}>${v.metadata.tenant}/${v.metadata.name}</${Link}> <${Badge} phase=${v.status?.phase} /></li>`)}</ul></section>`;
}

function Machine({ obj, name, writer, me }) {
  const act = useAction();
  const [power, setPower] = useState(null);
  const s = obj.spec, st = obj.status || {};
  const mPath = path(byPlural.machines, '', name);
  const patch = spec => act.run(() => request('PATCH', mPath, { spec }, { contentType: 'application/merge-patch+json' }));
  // Power goes through the API, which needs the right to the machine's
  // Secrets (cluster admins): the answer says what the BMC said.
  const doPower = (action, networkBoot) => act.run(async () => {
    setPower(null);
    setPower(await request('POST', mPath + '/power', { action, networkBoot }));
  });
  const hasPower = s.power?.driver && s.power.driver !== 'none';
  const { evs } = useEvents('Machine', '', name);
  return html`
    ${writer ? html`<div class="row actions" role="toolbar" aria-label="Provisioning">
      <button type="button" disabled=${act.busy || s.approved} onClick=${() => patch({ approved: true })}>Approve</button>
      <button type="button" disabled=${act.busy || !s.approved} onClick=${() => patch({ reinstallRequested: new Date().toISOString() })}>Reinstall</button>
    </div>` : null}
    ${writer && hasPower && me.role === 'cluster-admin' ? html`<div class="row actions" role="toolbar" aria-label="Power">
      <button type="button" disabled=${act.busy} onClick=${() => doPower('on')}>Power on</button>
      <${ConfirmButton} label="Power off" cls="danger" question=${`Cut ${name}'s power now? Its operating system is not asked to shut down.`} onConfirm=${() => doPower('off')} />
      <${ConfirmButton} label="Power cycle" question=${`Turn ${name} off and on again?`} onConfirm=${() => doPower('cycle')} />
      <button type="button" disabled=${act.busy} onClick=${() => doPower('status')}>Read power</button>
      ${power ? html`<span class="muted" role="status" data-power=${power.state || ''}>${power.action}: done${power.state ? ', the machine is ' + power.state : ''} (${power.driver})</span>` : null}
    </div>` : null}
    <${ErrorBox} error=${act.error} />
    <section aria-label="Summary"><${Facts} rows=${[
      ['MAC', s.mac], ['Architecture', s.architecture || st.architecture], ['Profile', st.matchedProfile || s.profile],
      ['Approved', s.approved ? 'yes' : 'no'], ['Firmware', st.firmware], ['Addresses', (st.addresses || []).join(', ')],
      ['Power driver', s.power?.driver], ['Power', st.powerState], ['Installed', st.installedAt && `${age(st.installedAt)} ago`],
      ['Last boot', st.lastBoot && `${age(st.lastBoot)} ago`], ['Last seen', st.lastSeen && `${age(st.lastSeen)} ago`],
    ]} /></section>
    ${s.power?.driver === 'ipmi' ? html`<section aria-labelledby="sn"><h2 id="sn">Sensors</h2><${Sensors} url=${mPath + '/sensors'} /></section>` : null}
    <section aria-labelledby="tl"><h2 id="tl">Boot timeline</h2>
      ${evs.length ? html`<ol class="timeline">${evs.map(e => html`<li key=${e.metadata.name} class=${e.spec.type === 'Warning' ? 'warn' : ''}>
        <time datetime=${e.spec.firstTimestamp}>${new Date(e.spec.lastTimestamp || e.spec.firstTimestamp).toLocaleTimeString()}</time>
        <strong>${e.spec.reason}</strong> <span>${e.spec.message}</span>${e.spec.count > 1 ? html` <span class="muted">×${e.spec.count}</span>` : ''}</li>`)}</ol>`
        : html`<p class="muted">Nothing yet: the timeline fills as the machine boots (DHCP, TFTP, HTTP, report).</p>`}
    </section>`;
}

// Sensors shows a machine's BMC readings (IPMI), read again every 30 s.
function Sensors({ url }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let stop = false, t;
    const load = async () => {
      try { const d = await request('GET', url); if (!stop) { setData(d); setError(null); } } catch (e) { if (!stop) setError(e); }
      if (!stop) t = setTimeout(load, 30000);
    };
    load();
    return () => { stop = true; clearTimeout(t); };
  }, [url]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!data) return html`<p class="muted">Reading the BMC…</p>`;
  if (data.error) return html`<p class="warn">The BMC could not be read: ${data.error}</p>`;
  return html`<table class="grid"><thead><tr><th scope="col">Sensor</th><th scope="col">Reading</th><th scope="col">Status</th></tr></thead>
    <tbody>${data.sensors.map(x => html`<tr><td>${x.name}</td><td>${x.value != null ? x.value + ' ' + x.unit : x.reading}</td>
      <td class=${x.status === 'ok' ? 'ok' : x.status === 'ns' ? '' : 'warn'}>${x.status}</td></tr>`)}</tbody></table>
    <p class="muted">Read ${new Date(data.time).toLocaleTimeString()}.</p>`;
}

function Image({ obj }) {
  const st = obj.status || {};
  return html`<section aria-label="Summary"><${Facts} rows=${[
    ['Source', obj.spec.source?.url || (obj.spec.source?.upload ? 'uploaded' : '')], ['Format', obj.spec.format],
    ['Size', st.size && bytes(st.size)], ['Checksum', st.checksum],
  ]} />
  ${(st.hosts || []).length ? html`<table class="grid"><thead><tr><th scope="col">Host</th><th scope="col">Phase</th><th scope="col">Progress</th></tr></thead>
    <tbody>${st.hosts.map(h => html`<tr><td>${h.host}</td><td><${Badge} phase=${h.phase} /></td><td>${h.progress != null ? h.progress + '%' : ''} ${h.message || ''}</td></tr>`)}</tbody></table>` : null}
  </section>`;
}

const special = { VirtualMachine: VM, Host, Machine, Image };
