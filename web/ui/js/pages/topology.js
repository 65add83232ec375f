// The network topology of a tenant: which hosts carry which networks
// (through each network's router on each host, with its address on the
// external network), the subnets of each network, the VMs on them and the
// floating IPs that reach them, drawn as columns joined by lines.
import { html, useMemo } from '../lib.js';
import { useCollection } from '../store.js';
import { byPlural } from '../kinds.js';
import { collectionURL } from './list.js';
import { ErrorBox } from '../components.js';

export function Topology({ tenant }) {
  const nets = useCollection(collectionURL(byPlural.networks, tenant));
  const subs = useCollection(collectionURL(byPlural.subnets, tenant));
  const vms = useCollection(collectionURL(byPlural.virtualmachines, tenant));
  const fips = useCollection(collectionURL(byPlural.floatingips, tenant));
  const g = useMemo(() => {
    const id = (t, o) => t + ':' + (o.metadata.tenant || '') + '/' + o.metadata.name;
    const cols = [[], [], [], [], [], []], edges = [];
    const hosts = new Map();
    for (const n of nets.items.values()) {
      cols[2].push({ id: id('net', n), label: n.metadata.name, sub: (tenant ? '' : n.metadata.tenant + ' · ') + (n.status?.vni ? 'VNI ' + n.status.vni : ''), href: `#/k/networks/${n.metadata.tenant}/${n.metadata.name}` });
      // Every host that carries the network routes it: one router each.
      const routed = new Set();
      for (const r of n.status?.routers || []) {
        const rid = 'rtr:' + n.metadata.tenant + '/' + n.metadata.name + '@' + r.host;
        cols[1].push({ id: rid, label: n.metadata.name + ' on ' + r.host, sub: r.externalAddress ? 'out via ' + r.externalAddress : 'no external address' });
        hosts.set(r.host, true);
        routed.add(r.host);
        edges.push(['host:' + r.host, rid], [rid, id('net', n)]);
      }
      for (const h of n.status?.hosts || []) {
        hosts.set(h, true);
        if (!routed.has(h)) edges.push(['host:' + h, id('net', n)]);
      }
    }
    for (const s of subs.items.values()) {
      cols[3].push({ id: id('sub', s), label: s.metadata.name, sub: s.spec.cidr, href: `#/k/subnets/${s.metadata.tenant}/${s.metadata.name}` });
      edges.push(['net:' + s.metadata.tenant + '/' + s.spec.network, id('sub', s)]);
    }
    for (const v of vms.items.values()) {
      const nics = v.spec.nics || [];
      if (!nics.length) continue;
      cols[4].push({ id: id('vm', v), label: v.metadata.name, sub: (v.status?.interfaces || []).map(i => i.ip).filter(Boolean).join(', '), href: `#/k/virtualmachines/${v.metadata.tenant}/${v.metadata.name}` });
      nics.forEach((n, i) => {
        const subnet = v.status?.interfaces?.[i]?.subnet || n.subnet;
        edges.push([subnet ? 'sub:' + v.metadata.tenant + '/' + subnet : 'net:' + v.metadata.tenant + '/' + n.network, id('vm', v)]);
      });
    }
    for (const f of fips.items.values()) {
      cols[5].push({ id: id('fip', f), label: f.status?.address || f.spec.address || f.metadata.name, sub: f.metadata.name, href: `#/k/floatingips/${f.metadata.tenant}/${f.metadata.name}` });
      if (f.spec.target?.vm) edges.push(['vm:' + f.metadata.tenant + '/' + f.spec.target.vm, id('fip', f)]);
    }
    for (const h of hosts.keys()) cols[0].push({ id: 'host:' + h, label: h, sub: 'host' });
    return { cols, edges };
  }, [nets.version, subs.version, vms.version, fips.version]);
  const colW = 172, nodeW = 150, rowH = 56, titles = ['Hosts', 'Routers', 'Networks', 'Subnets', 'VMs', 'Floating IPs'];
  const pos = new Map();
  g.cols.forEach((col, c) => col.forEach((n, r) => pos.set(n.id, [c * colW + 10, r * rowH + 40])));
  const height = Math.max(...g.cols.map(c => c.length), 1) * rowH + 50;
  const err = nets.error || subs.error || vms.error || fips.error;
  return html`<section aria-labelledby="topo"><h1 id="topo">Network topology${tenant ? ' of tenant ' + tenant : ''}</h1>
    <${ErrorBox} error=${err} />
    <div class="table-wrap"><svg class="topology" viewBox=${`0 0 ${colW * 6} ${height}`} width=${colW * 6} height=${height} role="img"
      aria-label=${`${g.cols[0].length} hosts, ${g.cols[1].length} routers, ${g.cols[2].length} networks, ${g.cols[3].length} subnets, ${g.cols[4].length} VMs with interfaces, ${g.cols[5].length} floating IPs`}>
      ${titles.map((t, c) => html`<text x=${c * colW + 10} y="20" class="coltitle">${t}</text>`)}
      ${g.edges.filter(([a, b]) => pos.has(a) && pos.has(b)).map(([a, b]) => {
        const [x1, y1] = pos.get(a), [x2, y2] = pos.get(b);
        return html`<path class="edge" d=${`M${x1 + nodeW} ${y1 + 18} C${x1 + nodeW + 20} ${y1 + 18} ${x2 - 20} ${y2 + 18} ${x2} ${y2 + 18}`} />`;
      })}
      ${g.cols.flat().map(n => { const [x, y] = pos.get(n.id); const body = html`<rect x=${x} y=${y} width=${nodeW} height="38" rx="6" class=${'node ' + n.id.split(':')[0]} />
        <text x=${x + 8} y=${y + 16} class="nlabel">${n.label}</text><text x=${x + 8} y=${y + 31} class="nsub">${n.sub}</text>`;
        return n.href ? html`<a href=${n.href} data-node=${n.id}>${body}</a>` : html`<g data-node=${n.id}>${body}</g>`; })}
    </svg></div>
    ${!g.cols[2].length ? html`<p class="empty">No networks yet.</p>` : null}
  </section>`;
}
