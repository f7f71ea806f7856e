// sgctl dashboard: live updates over server-sent events, and the actions.
// Everything read from Redis is put in the page with textContent, never as
// HTML; the server's Content-Security-Policy allows no inline script.
'use strict';
(() => {
  const cfgEl = document.getElementById('config');
  if (!cfgEl) return; // the login page
  const cfg = JSON.parse(cfgEl.textContent);

  // clean writes what a reader cannot see as an escape, by the server's
  // rule (package visible): every code point outside Unicode's graphic
  // categories (\p{C}: controls, format characters such as bidi overrides
  // and zero-width spaces, private use, unassigned; line and paragraph
  // separators) or rendered as nothing (default ignorable: Hangul fillers,
  // variation selectors) as a Go escape, and a backslash as \\.
  const hidden = /[\p{C}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}\\]/gu;
  const short = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\u0007': '\\a', '\b': '\\b', '\f': '\\f', '\v': '\\v', '\\': '\\\\' };
  const hex = (n, w) => n.toString(16).padStart(w, '0');
  const clean = (s) => String(s ?? '').replace(hidden, (c) => {
    if (short[c]) return short[c];
    const n = c.codePointAt(0);
    if (n < 0x80) return '\\x' + hex(n, 2);
    return n > 0xffff ? '\\U' + hex(n, 8) : '\\u' + hex(n, 4);
  });
  // jsonText does the same inside JSON text (JSON.stringify escapes the C0
  // controls itself): \u escapes, so that it stays JSON.
  const jsonText = (s) => s.replace(hidden, (c) => {
    if (c.codePointAt(0) < 0x7f) return c;
    return Array.from({ length: c.length }, (_, i) => '\\u' + hex(c.charCodeAt(i), 4)).join('');
  });

  // age renders milliseconds as sgctl does: 850ms, 42s, 5m3s, 3h12m, 2d5h.
  const age = (ms) => {
    if (ms < 0) ms = 0;
    const s = Math.floor(ms / 1000), m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    if (ms < 1000) return Math.floor(ms) + 'ms';
    if (s < 60) return s + 's';
    if (m < 60) return m + 'm' + (s % 60) + 's';
    if (h < 24) return h + 'h' + (m % 60) + 'm';
    return d + 'd' + (h % 24) + 'h';
  };
  const groupOf = (st) => cfg.groups[st] || 'unknown';
  const stClass = (st) => 'st g-' + groupOf(st) + (st === 'failed' ? ' s-failed' : '');
  const setStatus = (el, st) => {
    if (!el) return;
    el.textContent = clean(st) || '-';
    el.className = stClass(st);
  };
  const millis = (t) => {
    const v = t ? Date.parse(t) : 0;
    return v > 0 ? v : 0;
  };
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ---- live status ----------------------------------------------------
  const live = document.getElementById('live');
  const setLive = (on, text) => {
    live.textContent = text;
    live.className = 'live ' + (on ? 'on' : 'off');
  };

  // ---- log out --------------------------------------------------------
  // With a session (SG_DASHBOARD_TOKEN), Log out ends it on the server:
  // its cookie is refused from then on. The POST carries the CSRF token.
  if (cfg.session) {
    const out = el('button', 'logout', 'Log out');
    out.type = 'button';
    out.id = 'logout';
    out.addEventListener('click', async () => {
      try {
        await fetch('/logout', { method: 'POST', headers: { 'X-CSRF-Token': cfg.csrf } });
      } finally {
        location.assign('/login');
      }
    });
    live.after(out);
  }

  const rows = new Map(); // service \0 instance -> tr
  const rowKey = (s, i) => s + '\u0000' + i;
  document.querySelectorAll('tr.inst').forEach((tr) => rows.set(rowKey(tr.dataset.service, tr.dataset.instance), tr));
  const sections = () => Array.from(document.querySelectorAll('section.service'));
  const sectionOf = (service) => sections().find((s) => s.dataset.service === service);

  // The ops a row offers, with their labels. Drain and undrain are shown
  // only where the status accepts them (they toggle); pull and restart are
  // always shown, and disabled where the status does not accept them.
  const rowOps = [['pull', 'Pull', ''], ['restart', 'Restart', 'danger'], ['drain', 'Drain', ''], ['undrain', 'Undrain', '']];
  const shownOnlyWhenAccepted = new Set(['drain', 'undrain']);

  // actionState says whether op is shown and enabled for an instance of
  // service in status and control mode, and why (the button's title).
  // cfg.ops holds the statuses each op runs from; cfg.denied, per service,
  // why the dashboard's Redis user cannot send ops to it.
  function actionState(op, service, status, control) {
    if (cfg.read_only) return [false, false, 'read-only'];
    const from = cfg.ops[op] || [];
    const accepted = from.includes(status);
    const shown = accepted || !shownOnlyWhenAccepted.has(op);
    const denied = (cfg.denied || {})[service];
    if (denied) return [shown, false, clean(denied)];
    if (!accepted) return [shown, false, 'only a ' + from.join(' or ') + ' instance runs ' + op];
    if (control === 'insecure') return [shown, true, cfg.signed ? 'sends a signed op' : 'sends an unsigned op (the instance is in insecure mode)'];
    if (control === 'signed') return cfg.signed ? [shown, true, 'sends a signed op'] : [shown, false, 'the instance accepts signed ops only: start the dashboard with SG_CONTROL_KEY'];
    return [shown, false, 'control ops are disabled on this instance (no SG_CONTROL_KEY)'];
  }
  function applyActions(holder) {
    if (!holder) return;
    holder.querySelectorAll('button[data-op]').forEach((b) => {
      const [shown, ok, why] = actionState(b.dataset.op, holder.dataset.service, holder.dataset.status, holder.dataset.control);
      b.hidden = !shown;
      b.disabled = !ok;
      b.title = why;
    });
  }

  function newRow(service, instance) {
    const sec = sectionOf(service);
    if (!sec) {
      if (cfg.page === 'fleet') scheduleRefresh(0);
      return null;
    }
    const tr = el('tr', 'inst');
    tr.dataset.service = service;
    tr.dataset.instance = instance;
    const a = el('a', '', clean(instance));
    a.href = '/instance?service=' + encodeURIComponent(service) + '&id=' + encodeURIComponent(instance);
    const first = el('td', 'instance');
    first.append(a);
    tr.append(first);
    const st = el('td', 'status');
    st.append(el('span'));
    tr.append(st);
    for (const c of ['phase', 'host', 'pid', 'addr', 'version', 'uptime', 'hb', 'degraded', 'control', 'error']) tr.append(el('td', c));
    const act = el('td', 'actions');
    for (const [op, label, cls] of rowOps) {
      const b = el('button', cls, label);
      b.type = 'button';
      b.dataset.op = op;
      act.append(b, ' ');
    }
    tr.append(act);
    // Keep the rows in instance order, as the server renders them.
    const body = sec.querySelector('tbody');
    const after = Array.from(body.rows).find((r) => r.dataset.instance > instance);
    body.insertBefore(tr, after || null);
    rows.set(rowKey(service, instance), tr);
    return tr;
  }

  function fillRow(tr, e) {
    tr.classList.remove('gone');
    delete tr.dataset.missed;
    tr.dataset.status = e.status;
    tr.dataset.control = e.control || '';
    tr.dataset.started = millis(e.started_at);
    tr.dataset.hb = millis(e.heartbeat_at);
    setStatus(tr.querySelector('td.status span'), e.status);
    const set = (c, v) => { tr.querySelector('td.' + c).textContent = v; };
    set('phase', clean(e.phase));
    set('host', clean(e.host));
    set('pid', e.pid ? String(e.pid) : '');
    set('addr', clean(e.addr));
    set('version', clean(e.version));
    set('degraded', e.degraded ? 'degraded' : '');
    set('control', clean(e.control));
    tr.querySelector('td.control').className = 'control c-' + (e.control || '');
    set('error', clean(e.error));
    tickRow(tr, Date.now());
    applyActions(tr);
  }

  function markGone(tr, status) {
    tr.dataset.status = status;
    setStatus(tr.querySelector('td.status span'), status);
    tr.classList.add('gone');
    applyActions(tr);
  }

  function tickRow(tr, now) {
    const st = Number(tr.dataset.started), hb = Number(tr.dataset.hb);
    tr.querySelector('td.uptime').textContent = st > 0 ? age(now - st) : '';
    tr.querySelector('td.hb').textContent = hb > 0 ? age(now - hb) : '';
  }

  function recount() {
    let total = 0;
    for (const sec of sections()) {
      const n = new Map();
      sec.querySelectorAll('tr.inst:not(.gone)').forEach((tr) => {
        n.set(tr.dataset.status, (n.get(tr.dataset.status) || 0) + 1);
        total++;
      });
      const p = sec.querySelector('p.counts');
      p.replaceChildren();
      const order = Object.keys(cfg.groups);
      const states = Array.from(n.keys()).sort((a, b) => {
        const ia = order.indexOf(a), ib = order.indexOf(b);
        return (ia < 0 ? 1e9 : ia) - (ib < 0 ? 1e9 : ib) || (a < b ? -1 : 1);
      });
      for (const st of states) {
        const chip = el('span', 'chip g-' + groupOf(st) + (st === 'failed' ? ' s-failed' : ''), clean(st) + ' ');
        chip.append(el('b', '', String(n.get(st))));
        p.append(chip, ' ');
      }
    }
    const t = document.getElementById('total');
    if (t) t.textContent = total + ' instances';
  }

  // ---- the transitions list -----------------------------------------------
  const eventlog = document.getElementById('eventlog');
  function logEvent(ev) {
    if (!eventlog) return;
    const li = el('li');
    li.dataset.id = ev.id;
    const t = new Date(ev.time);
    const time = el('time', '', isNaN(t) ? '-' : t.toISOString().slice(11, 23));
    const who = el('span', 'who', clean(ev.service) + '/' + clean(ev.instance));
    const from = el('span', stClass(ev.from), clean(ev.from));
    const to = el('span', stClass(ev.to), clean(ev.to));
    const what = el('span', 'ev', clean(ev.event) + (ev.guard ? ' [' + clean(ev.guard) + ']' : ''));
    li.append(time, ' ', who, ' ', from, ' → ', to, ' ', what);
    if (ev.error) li.append(' ', el('span', 'err', clean(ev.error)));
    eventlog.prepend(li);
    while (eventlog.children.length > 100) eventlog.lastElementChild.remove();
  }

  // ---- the instance page ---------------------------------------------------
  let waterfallTimer = 0;
  function refreshWaterfall() {
    clearTimeout(waterfallTimer);
    waterfallTimer = setTimeout(async () => {
      const q = '?service=' + encodeURIComponent(cfg.service) + '&id=' + encodeURIComponent(cfg.instance);
      try {
        const res = await fetch('/instance/waterfall' + q, { headers: { Accept: 'text/html' } });
        if (!res.ok) return;
        // The fragment is the server's own template output, escaped there.
        const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
        document.getElementById('waterfall').replaceChildren(...Array.from(doc.body.childNodes).map((n) => document.importNode(n, true)));
      } catch (_) { /* the next transition retries */ }
    }, 150);
  }

  function applyInstance(u) {
    const status = u.entry ? u.entry.status : u.event.to;
    setStatus(document.getElementById('state'), status);
    const img = document.getElementById('diagram');
    const src = '/diagram.svg?state=' + encodeURIComponent(status);
    if (img && img.getAttribute('src') !== src) img.setAttribute('src', src);
    const pre = document.getElementById('entry');
    if (u.entry) {
      const e = Object.assign({}, u.entry);
      delete e.heartbeat_at;
      delete e.group;
      pre.textContent = jsonText(JSON.stringify(e, null, 2));
    } else {
      pre.textContent = 'no entry: the instance stopped, or its entry expired';
    }
    const acts = document.getElementById('inst-actions');
    if (acts) {
      acts.dataset.status = status;
      if (u.entry) acts.dataset.control = u.entry.control || '';
      applyActions(acts);
    }
    refreshWaterfall();
  }

  // ---- the stream ----------------------------------------------------------
  function apply(u) {
    const ev = u.event;
    if (cfg.page !== 'fleet' && ev.service !== cfg.service) return;
    if (cfg.page === 'instance') {
      if (ev.instance !== cfg.instance) return;
      logEvent(ev);
      applyInstance(u);
      return;
    }
    logEvent(ev);
    let tr = rows.get(rowKey(ev.service, ev.instance));
    if (u.entry) {
      if (!tr) tr = newRow(ev.service, ev.instance);
      if (tr) fillRow(tr, u.entry);
    } else if (tr) {
      markGone(tr, ev.to);
    }
    recount();
  }

  // EventSource reconnects by itself after a dropped stream, but gives up
  // on a refusal (a 503 past the dashboard's cap of live streams, which
  // says Retry-After: 10): then a new one tries again after 10s, from the
  // last transition seen.
  let lastID = cfg.after;
  function connect() {
    const es = new EventSource('/events?after=' + encodeURIComponent(lastID));
    es.addEventListener('open', () => setLive(true, 'live'));
    es.addEventListener('error', () => {
      if (es.readyState !== EventSource.CLOSED) {
        setLive(false, 'reconnecting…');
        return;
      }
      setLive(false, 'disconnected: trying again in 10s');
      setTimeout(connect, 10000);
    });
    es.addEventListener('transition', (m) => {
      lastID = m.lastEventId || lastID;
      apply(JSON.parse(m.data));
    });
    es.addEventListener('reset', () => location.reload());
  }

  // ---- the periodic refresh: heartbeats, expiries -----------------------
  let refreshTimer = 0;
  function scheduleRefresh(ms) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, ms);
  }
  async function refresh() {
    try {
      const q = cfg.page === 'service' ? '?service=' + encodeURIComponent(cfg.service) : '';
      const res = await fetch('/api/fleet' + q);
      if (!res.ok) return;
      const data = await res.json();
      const seen = new Set();
      for (const svc of data.services) {
        if (!sectionOf(svc.name) && cfg.page === 'fleet') {
          location.reload(); // a new service: the server lays it out
          return;
        }
        if (!cfg.read_only && Boolean((cfg.denied || {})[svc.name]) !== Boolean(svc.denied)) {
          location.reload(); // the Redis user's permissions changed: the server words it
          return;
        }
        for (const e of svc.instances) {
          const k = rowKey(e.service, e.instance);
          seen.add(k);
          const tr = rows.get(k) || newRow(e.service, e.instance);
          if (tr) fillRow(tr, e);
        }
      }
      // An instance gone from the registry is greyed, then dropped at the
      // next refresh that still misses it.
      for (const [k, tr] of rows) {
        if (seen.has(k)) continue;
        if (tr.dataset.missed) {
          tr.remove();
          rows.delete(k);
        } else {
          tr.dataset.missed = '1';
          tr.classList.add('gone');
        }
      }
      recount();
    } catch (_) {
      /* the next refresh retries */
    } finally {
      scheduleRefresh(5000);
    }
  }

  // ---- actions ---------------------------------------------------------------
  const dialog = document.getElementById('confirm');
  function confirmAction(text) {
    return new Promise((resolve) => {
      document.getElementById('confirm-text').textContent = text;
      dialog.returnValue = '';
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.showModal();
    });
  }

  const oplog = document.getElementById('oplog');
  async function runOp(req, what) {
    const li = el('li');
    const head = el('div', '', what + ': sending…');
    const list = el('ul');
    li.append(head, list);
    oplog.prepend(li);
    const line = (text, cls) => list.append(el('li', cls || '', text));
    let until = 'serving';
    let signed = false;
    let res;
    try {
      res = await fetch('/api/op', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': cfg.csrf }, body: JSON.stringify(req) });
    } catch (err) {
      head.textContent = what + ': not sent: ' + err;
      head.className = 'bad';
      return;
    }
    if (!res.ok) {
      head.textContent = what + ': not sent: ' + clean((await res.text()).trim());
      head.className = 'bad';
      return;
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!text) continue;
        const m = JSON.parse(text);
        switch (m.type) {
          case 'rollout': // a rolling restart, run by the dashboard: one op per instance
            signed = m.signed;
            head.textContent = what + ': ' + m.instances.map(clean).join(', ') + '; ' + (m.max_unavailable ? 'at most ' + m.max_unavailable + ' out of running at a time' : 'all at once') + ', ' + (m.signed ? 'signed' : 'unsigned');
            until = m.until || until;
            for (const w of m.warnings || []) line(w, 'bad');
            break;
          case 'sent':
            if (m.instance) { line(clean(m.instance) + ': op ' + m.op_id.slice(0, 8) + ' sent'); break; }
            signed = m.signed;
            head.textContent = what + ': op ' + m.op_id.slice(0, 8) + ' sent ' + (m.signed ? 'signed' : 'unsigned') + ' to ' + m.instances.map(clean).join(', ');
            until = m.until || until;
            for (const w of m.warnings || []) line(w, 'bad');
            break;
          case 'result': {
            const forged = m.status === 'done' && signed && !m.verified; // not the instance's word
            line(clean(m.instance) + ': ' + clean(m.status) + (m.state ? ' (' + clean(m.state) + ', pid ' + m.pid + ')' : '') + (m.reason ? ': ' + clean(m.reason) : '') +
              (forged ? ' — not signed with the dashboard\'s key: ignored' : ''),
              forged ? 'bad' : (m.status === 'done' ? 'ok' : (m.status === 'accepted' ? '' : 'bad')));
            break;
          }
          case 'back':
            line(clean(m.instance) + ' is back', 'ok');
            break;
          case 'status':
            line(clean(m.instance) + ' is ' + clean(m.status) + (m.new_process ? ' (new process)' : ''));
            break;
          case 'summary':
            if (m.ok) line('every instance done and ' + clean(until) + ', in ' + age(m.seconds * 1000), 'ok');
            else line('not complete: ' + [].concat((m.failed || []).map((i) => clean(i) + ' failed'), (m.missing || []).map((i) => clean(i) + ' not back'),
              (m.not_sent || []).map((i) => clean(i) + ' not restarted')).join(', ') + (m.error ? ' (' + clean(m.error) + ')' : ''), 'bad');
            li.dataset.done = m.ok ? 'ok' : 'failed';
            break;
        }
      }
    }
  }

  // The service an action addresses is the page's: the one in its URL
  // (cfg.service), or on the fleet page the section's (a service name from
  // the registry's set). The instance is the row's, whose name is its
  // registry key's. The server refuses an action without a valid instance.
  const pageService = (holder) => {
    if (cfg.page !== 'fleet') return cfg.service;
    const sec = holder.closest('section.service');
    return sec ? sec.dataset.service : '';
  };

  document.addEventListener('click', async (e) => {
    const b = e.target.closest('button[data-op]');
    if (!b || b.disabled) return;
    const holder = b.closest('[data-instance]');
    const service = pageService(holder), instance = holder.dataset.instance, op = b.dataset.op;
    if (!service || !instance) return;
    const name = clean(service) + '/' + clean(instance);
    const text = {
      restart: 'Restart ' + name + '? It leaves running through the shutdown states and comes back as a new process.',
      pull: 'Pull on ' + name + '? It re-reads its settings (running → pulling → running).',
      drain: 'Drain ' + name + '? It leaves rotation (readiness 503, status draining) and keeps running until it is undrained, restarted or stopped.',
      undrain: 'Undrain ' + name + '? It goes back into rotation (draining → running).',
    }[op];
    if (!text) return;
    if (await confirmAction(text)) runOp({ service, instance, op }, op + ' ' + name);
  });

  // The rolling restart is the one action for a whole service: its
  // confirmation says how many instances the listing shows.
  document.addEventListener('submit', async (e) => {
    const f = e.target.closest('form.rolling');
    if (!f) return;
    e.preventDefault();
    const sec = f.closest('section.service');
    const service = cfg.page === 'service' ? cfg.service : sec.dataset.service;
    if ((cfg.denied || {})[service]) return;
    const n = sec.querySelectorAll('tr.inst:not(.gone)').length;
    const max = Math.max(0, parseInt(f.elements.max.value, 10) || 0);
    const text = 'Restart all ' + n + ' instance' + (n === 1 ? '' : 's') + ' of ' + clean(service) + ', ' +
      (max ? 'at most ' + max + ' out of running at a time' : 'all at once (no limit)') + '?';
    if (await confirmAction(text)) runOp({ service, op: 'restart', rolling: true, max_unavailable: max }, 'rolling restart of ' + clean(service));
  });

  // ---- start -----------------------------------------------------------------
  rows.forEach((tr) => applyActions(tr));
  applyActions(document.getElementById('inst-actions'));
  setInterval(() => {
    const now = Date.now();
    rows.forEach((tr) => tickRow(tr, now));
  }, 1000);
  if (cfg.page !== 'instance') scheduleRefresh(5000);
  connect();
})();
