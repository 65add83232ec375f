// toYAML writes a JSON value as YAML for people to read and edit. The
// server reads YAML itself (Content-Type: application/yaml), so the
// editor sends what the person wrote, and parsing stays the server's.
export function toYAML(v) { return emit(v, 0).replace(/^\n/, '') + '\n'; }

const plain = /^[A-Za-z_/.][A-Za-z0-9_./@+-]*( [A-Za-z0-9_./@+()-]+)*$/;
const special = /^(true|false|yes|no|on|off|null|~|y|n)$/i;

function scalar(s) {
  if (typeof s !== 'string') return JSON.stringify(s);
  if (s !== '' && plain.test(s) && !special.test(s) && !/^[0-9.+-]/.test(s)) return s;
  return JSON.stringify(s);
}

function emit(v, ind) {
  const pad = '  '.repeat(ind);
  if (Array.isArray(v)) {
    if (!v.length) return ' []';
    return v.map(x => {
      const body = emit(x, ind + 1);
      if (x && typeof x === 'object' && !Array.isArray(x) && Object.keys(x).length) {
        return '\n' + pad + '- ' + body.replace(/^\n\s*/, '');
      }
      return '\n' + pad + '-' + body;
    }).join('');
  }
  if (v && typeof v === 'object') {
    const keys = Object.keys(v);
    if (!keys.length) return ' {}';
    return keys.map(k => '\n' + pad + scalar(k) + ':' + emit(v[k], ind + 1)).join('');
  }
  if (typeof v === 'string' && v.includes('\n')) {
    const chomp = v.endsWith('\n') ? '' : '-';
    return ' |' + chomp + v.replace(/\n$/, '').split('\n').map(l => '\n' + (l ? pad + l : '')).join('');
  }
  return ' ' + scalar(v);
}

// lineOf finds the line of a field path ("spec.cpus", "spec.nics[0].network")
// in YAML written by toYAML, for pointing at a server's validation error.
export function lineOf(yaml, field) {
  const parts = field.replace(/\[(\d+)\]/g, '.$1').split('.').filter(Boolean);
  const lines = yaml.split('\n');
  let from = 0, ind = -1;
  for (const p of parts) {
    if (/^\d+$/.test(p)) {
      let n = -1;
      for (let i = from; i < lines.length; i++) {
        const m = /^(\s*)- /.exec(lines[i]);
        if (m && m[1].length > ind) { if (++n === Number(p)) { from = i; ind = m[1].length; break; } }
      }
      continue;
    }
    let found = false;
    for (let i = from; i < lines.length; i++) {
      const m = /^(\s*)(- )?([^:#\s][^:]*):/.exec(lines[i]);
      if (m && (m[1].length + (m[2] ? 2 : 0)) > ind && m[3].replace(/"/g, '') === p) {
        from = i; ind = m[1].length + (m[2] ? 2 : 0); found = true; break;
      }
    }
    if (!found) break;
  }
  return from;
}
