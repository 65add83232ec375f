// The kinds the dashboard shows, with their list columns. Scope is as in
// the API: cluster, tenant, or optional (an Image may be shared or a
// tenant's).
import { age, bytes, cond } from './lib.js';

const phase = o => o.status?.phase || '';
const ipOf = vm => (vm.status?.interfaces || []).map(i => i.ip).filter(Boolean).join(', ');

export const kinds = [
  { kind: 'VirtualMachine', plural: 'virtualmachines', scope: 'tenant', title: 'Virtual machines', group: 'Compute',
    cols: [['Phase', phase], ['Host', o => o.status?.host || o.spec.host || ''], ['CPUs', o => o.spec.cpus],
      ['Memory', o => o.spec.memory], ['IP', ipOf]] },
  { kind: 'VirtualMachineSet', plural: 'virtualmachinesets', scope: 'tenant', title: 'VM sets', group: 'Compute',
    cols: [['Replicas', o => `${o.status?.readyReplicas || 0}/${o.spec.replicas ?? ''}`]] },
  { kind: 'Host', plural: 'hosts', scope: 'cluster', title: 'Hosts', group: 'Infrastructure', admin: true,
    cols: [['Phase', phase], ['Site', o => o.spec.site || ''], ['CPUs', o => `${o.status?.allocatedCPUs || 0}/${o.status?.cpus || '?'}`],
      ['Memory', o => `${bytes(o.status?.allocatedMemory || 0)}/${bytes(o.status?.memory)}`], ['Address', o => o.spec.address || '']] },
  { kind: 'Machine', plural: 'machines', scope: 'cluster', title: 'Machines', group: 'Infrastructure', admin: true,
    cols: [['Phase', phase], ['MAC', o => o.spec.mac || ''], ['Profile', o => o.status?.matchedProfile || o.spec.profile || ''],
      ['Approved', o => o.spec.approved ? 'yes' : 'no'], ['Power', o => o.status?.powerState || '']] },
  { kind: 'MachineProfile', plural: 'machineprofiles', scope: 'cluster', title: 'Machine profiles', group: 'Infrastructure', admin: true, cols: [] },
  { kind: 'Site', plural: 'sites', scope: 'cluster', title: 'Sites', group: 'Infrastructure', admin: true,
    cols: [['Description', o => o.spec.description || '']] },
  { kind: 'Network', plural: 'networks', scope: 'tenant', title: 'Networks', group: 'Networking',
    cols: [['VNI', o => o.status?.vni || ''], ['Hosts', o => (o.status?.hosts || []).join(', ')]] },
  { kind: 'Subnet', plural: 'subnets', scope: 'tenant', title: 'Subnets', group: 'Networking',
    cols: [['Network', o => o.spec.network], ['CIDR', o => o.spec.cidr], ['Gateway', o => o.spec.gateway || '']] },
  { kind: 'SecurityGroup', plural: 'securitygroups', scope: 'tenant', title: 'Security groups', group: 'Networking',
    cols: [['Rules', o => (o.spec.rules || []).length]] },
  { kind: 'FloatingIP', plural: 'floatingips', scope: 'tenant', title: 'Floating IPs', group: 'Networking',
    cols: [['Address', o => o.status?.address || o.spec.address || ''], ['Target', o => o.spec.target?.vm || '']] },
  { kind: 'ExternalNetwork', plural: 'externalnetworks', scope: 'cluster', title: 'External networks', group: 'Networking', admin: true, cols: [] },
  { kind: 'Volume', plural: 'volumes', scope: 'tenant', title: 'Volumes', group: 'Storage',
    cols: [['Phase', phase], ['Size', o => o.spec.size], ['Host', o => o.status?.host || o.spec.host || ''], ['Attached to', o => o.status?.attachedTo || '']] },
  { kind: 'Snapshot', plural: 'snapshots', scope: 'tenant', title: 'Snapshots', group: 'Storage', cols: [['Phase', phase]] },
  { kind: 'Image', plural: 'images', scope: 'optional', title: 'Images', group: 'Storage',
    cols: [['Phase', phase], ['Size', o => bytes(o.status?.size)], ['Source', o => o.spec.source?.url || (o.spec.source?.upload ? 'upload' : '')]] },
  { kind: 'SSHKey', plural: 'sshkeys', scope: 'tenant', title: 'SSH keys', group: 'Access',
    cols: [['Key', o => (o.spec.publicKey || '').slice(0, 40) + '…']] },
  { kind: 'Tenant', plural: 'tenants', scope: 'cluster', title: 'Tenants', group: 'Access',
    cols: [['Display name', o => o.spec.displayName || '']] },
  { kind: 'User', plural: 'users', scope: 'cluster', title: 'Users', group: 'Access',
    cols: [['Tenant', o => o.spec.tenant || '(cluster)'], ['Role', o => o.spec.role]] },
  { kind: 'Event', plural: 'events', scope: 'optional', title: 'Events', group: 'Activity',
    cols: [['Type', o => o.spec.type], ['Reason', o => o.spec.reason], ['Object', o => `${o.spec.involvedObject?.kind}/${o.spec.involvedObject?.name}`],
      ['Message', o => o.spec.message]] },
];

export const byPlural = Object.fromEntries(kinds.map(k => [k.plural, k]));
export const byKind = Object.fromEntries(kinds.map(k => [k.kind, k]));

// phaseClass colours a phase: good, busy, bad or idle.
export function phaseClass(p) {
  switch (p) {
    case 'Running': case 'Ready': case 'Installed': case 'Bound': case 'InUse': case 'Active': return 'good';
    case 'Starting': case 'Pending': case 'Provisioning': case 'Downloading': case 'Approved': case 'Discovered': case 'Scheduling': return 'busy';
    case 'Failed': case 'NotReady': case 'Error': return 'bad';
    default: return 'idle';
  }
}
export { age, cond };
