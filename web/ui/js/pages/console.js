// A VM's serial console in the browser: xterm.js (loaded only when a
// console opens) over the API's console websocket, the one `hearth
// console` uses. Typing and pasting go to the guest as typed.
import { html, useEffect, useRef, useState } from '../lib.js';
import { consoleSocket } from '../api.js';

let xterm;
function loadXterm() {
  if (!xterm) {
    const css = document.createElement('link');
    css.rel = 'stylesheet'; css.href = 'vendor/xterm/xterm.css';
    document.head.append(css);
    xterm = Promise.all([import('../../vendor/xterm/xterm.js'), import('../../vendor/xterm/addon-fit.js')]);
  }
  return xterm;
}

export function Console({ tenant, name, running }) {
  const box = useRef();
  const term = useRef(null);
  const [ready, setReady] = useState(false);
  const [state, setState] = useState('connecting');
  const [why, setWhy] = useState('');
  const [attempt, setAttempt] = useState(0);
  // The terminal lives as long as the page shows this VM, so what the
  // guest said last stays readable after its console closes.
  useEffect(() => {
    let t, onResize, gone = false;
    loadXterm().then(([{ Terminal }, { FitAddon }]) => {
      if (gone) return;
      t = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, screenReaderMode: true, theme: { background: '#10151b' } });
      const fit = new FitAddon();
      t.loadAddon(fit);
      t.open(box.current);
      fit.fit();
      onResize = () => fit.fit();
      window.addEventListener('resize', onResize);
      term.current = t;
      // What the terminal holds, for the browser tests (xterm.js draws only
      // what is on screen, and nothing while the terminal is scrolled away).
      box.current.screenText = () => { const b = t.buffer.active, out = []; for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true)); return out.join('\n'); };
      setReady(true);
    });
    return () => { gone = true; t?.dispose(); term.current = null; if (onResize) window.removeEventListener('resize', onResize); };
  }, [tenant, name]);
  // The websocket is opened while the VM runs, again (a little later each
  // time) when it closes while the VM still runs, and on request.
  useEffect(() => {
    if (!ready) return;
    if (!running) { setState('closed'); setWhy('the VM is not running'); return; }
    const t = term.current, enc = new TextEncoder();
    let ws, sub, timer, stopped = false, delay = 1000;
    const connect = () => {
      setState('connecting');
      ws = consoleSocket(tenant, name);
      ws.onopen = () => { setState('open'); setWhy(''); delay = 1000; t.focus(); };
      ws.onmessage = ev => t.write(new Uint8Array(ev.data));
      ws.onclose = ev => {
        sub?.dispose();
        if (stopped) return;
        setState('closed');
        setWhy((ev.reason || (ev.code === 1006 ? 'the server refused the console or it dropped' : 'closed')) + `; trying again in ${delay / 1000}s`);
        timer = setTimeout(connect, delay);
        delay = Math.min(delay * 2, 15000);
      };
      sub = t.onData(d => { if (ws.readyState === 1) ws.send(enc.encode(d)); });
    };
    connect();
    return () => { stopped = true; clearTimeout(timer); sub?.dispose(); ws?.close(); };
  }, [ready, tenant, name, running, attempt]);
  // Paste types the clipboard into the guest as xterm.js pastes (line ends
  // as Enter, bracketed when the guest asked for it).
  const paste = async () => {
    try { term.current?.paste(await navigator.clipboard.readText()); term.current?.focus(); }
    catch (e) { setWhy('the browser did not give the clipboard: ' + e.message); }
  };
  return html`<div class="console">
    <p class="muted" aria-live="polite"><span class=${'dot ' + state}></span> Console ${state}${why ? ': ' + why : ''}
      ${state === 'closed' && running ? html` <button type="button" onClick=${() => setAttempt(attempt + 1)}>Reconnect</button>` : null}
      ${state === 'open' ? html` <button type="button" onClick=${paste} title="Type the clipboard's text into the console (Ctrl+Shift+V in the terminal does the same)">Paste</button>` : null}</p>
    <div class="term" ref=${box} data-state=${state} aria-label=${`Serial console of ${name}`}></div>
  </div>`;
}
