// stepwise dashboard: the browser side.
//
// One plain script, no framework and no build step: the server embeds this file as it is.
// The HTTP API, the JSON shapes and every DOM hook (ids, data-* attributes) are fixed by the
// dashboard contract; browser tests rely on them, so rename nothing without changing both.
//
// Rules kept throughout:
// - Text from the server only ever reaches the DOM through textContent / setAttribute
//   (the helpers below); never through innerHTML.
// - Every render is wrapped (guard) so that a bad payload shows an error in #notice
//   instead of a blank page.
'use strict';

(() => {
  // ---------------------------------------------------------------------------------------
  // DOM helpers
  // ---------------------------------------------------------------------------------------

  const SVG_NS = 'http://www.w3.org/2000/svg';

  /** Appends children (nodes, strings, numbers, nested arrays; null/false skipped) as nodes. */
  function appendAll(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Sets attributes: "class", "text" (textContent), "on<event>" listeners, the rest as attributes. */
  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value == null || value === false) continue;
      if (key === 'class') node.setAttribute('class', value);
      else if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    return node;
  }

  /** h('td', {class: 'x'}, 'text', child) creates an HTML element. */
  function h(tag, attrs, ...children) {
    return appendAll(setAttrs(document.createElement(tag), attrs), children);
  }

  /** Same for SVG elements, which need their namespace. */
  function svg(tag, attrs, ...children) {
    return appendAll(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
  }

  /** Writes text only when it changed: with 1,000 rows most upserts change one or two cells. */
  function setText(node, text) {
    const value = text == null ? '' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------
  // Formatting
  // ---------------------------------------------------------------------------------------

  const pad2 = (n) => String(n).padStart(2, '0');

  function parseTime(value) {
    const ms = value ? Date.parse(value) : NaN;
    return Number.isFinite(ms) ? ms : null;
  }

  /** kubectl-like age: 45s, 12m, 3h, 5d. */
  function ageText(createdMs, now = Date.now()) {
    if (createdMs == null) return '–';
    const s = Math.max(0, Math.floor((now - createdMs) / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m`;
    const hrs = Math.floor(m / 60);
    if (hrs < 24) return `${hrs}h`;
    return `${Math.floor(hrs / 24)}d`;
  }

  /** Countdown text for a pause: 40s, 1m 05s, 1h 02m 03s. */
  function countdownText(untilMs, now = Date.now()) {
    const s = Math.max(0, Math.ceil((untilMs - now) / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${pad2(s % 60)}s`;
    return `${Math.floor(m / 60)}h ${pad2(m % 60)}m ${pad2(s % 60)}s`;
  }

  function clockText(ms) {
    if (ms == null) return '';
    const d = new Date(ms);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function dateTimeText(ms) {
    return ms == null ? '' : new Date(ms).toLocaleString();
  }

  /** Short, stable number text for chart labels and value lists. */
  function numText(value) {
    if (typeof value !== 'number' || !Number.isFinite(value)) return String(value);
    if (Number.isInteger(value)) return String(value);
    if (Math.abs(value) >= 1000) return String(Math.round(value));
    return String(Number(value.toPrecision(4)));
  }

  const stepText = (step) => (step ? `${step.current}/${step.total}` : '–');
  const weightText = (weight) => (weight == null ? '–' : String(weight));
  const phaseName = (phase) => phase || 'Unknown';
  const keyOf = (obj) => `${obj.namespace}/${obj.name}`;
  const rolloutHref = (ns, name) => `#/rollouts/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`;

  /** A coloured badge for a Rollout phase; colours come from the phase-* classes in app.css. */
  function phaseBadge(phase) {
    const name = phaseName(phase);
    return h('span', { class: `badge phase-${cssToken(name)}`, text: name });
  }

  /** Class names are built from server strings; keep only safe characters. */
  function cssToken(text) {
    return String(text || 'none').replace(/[^A-Za-z0-9_-]/g, '');
  }

  // ---------------------------------------------------------------------------------------
  // Notices and error handling
  // ---------------------------------------------------------------------------------------

  /** Shows a message in #notice; kind is "ok" or "error". Never leaves it blank. */
  function showNotice(text, kind) {
    const notice = $('notice');
    let message = text == null ? '' : String(text).trim();
    if (!message) message = kind === 'error' ? 'Something went wrong, and the server gave no reason.' : 'Done.';
    notice.textContent = message;
    notice.className = kind === 'ok' ? 'ok' : 'error';
    delete notice.dataset.connection;
    notice.hidden = false;
  }

  function hideNotice() {
    $('notice').hidden = true;
  }

  /** Runs fn; an exception becomes an error notice instead of a half-drawn or blank page. */
  function guard(fn, what) {
    try {
      return fn();
    } catch (err) {
      console.error(err);
      showNotice(`Error while ${what}: ${err && err.message ? err.message : err}`, 'error');
      return undefined;
    }
  }

  /** Reports a failed API call. A 401 in token mode means the session ended: show the login. */
  function reportError(err) {
    showNotice(err && err.message ? err.message : String(err), 'error');
    // "Cannot reach the server" goes away by itself once the stream is back (see openStream).
    if (err && err.status === 0) $('notice').dataset.connection = '1';
    if (err && err.status === 401 && state.who && state.who.mode === 'token') boot();
  }

  // Last line of defence: anything that escapes still ends up visible, not only in the console.
  window.addEventListener('error', (ev) => {
    showNotice(`Script error: ${ev.message || 'unknown'}`, 'error');
  });
  window.addEventListener('unhandledrejection', (ev) => {
    const reason = ev.reason;
    showNotice(`Script error: ${reason && reason.message ? reason.message : reason}`, 'error');
  });

  // ---------------------------------------------------------------------------------------
  // HTTP
  // ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  /**
   * Calls the JSON API. Resolves with the parsed body; rejects with an ApiError whose message is
   * the server's `error` text (or a plain description when the server sent none).
   */
  async function api(method, path, body) {
    const options = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
    if (method !== 'GET') {
      // The custom header is the server's guard against cross-site form posts.
      options.headers['Content-Type'] = 'application/json';
      options.headers['X-Stepwise-Action'] = '1';
      options.body = JSON.stringify(body || {});
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      throw new ApiError(`Cannot reach the dashboard server (${method} ${path}): ${err.message}`, 0);
    }
    const raw = await response.text().catch(() => '');
    let data = null;
    try {
      data = raw ? JSON.parse(raw) : null;
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const serverText = data && typeof data.error === 'string' && data.error.trim() ? data.error : null;
      const fallback = `${method} ${path} failed: HTTP ${response.status}${raw && !data ? `: ${raw.slice(0, 200)}` : ''}`;
      throw new ApiError(serverText || fallback, response.status);
    }
    if (data === null || typeof data !== 'object') {
      throw new ApiError(`${method} ${path}: the server's answer was not JSON`, response.status);
    }
    return data;
  }

  // ---------------------------------------------------------------------------------------
  // Live indicator and server-sent events
  // ---------------------------------------------------------------------------------------

  function setLive(isLive) {
    const live = $('live');
    live.dataset.state = isLive ? 'live' : 'down';
    setText(live, isLive ? 'live' : 'reconnecting');
  }

  /**
   * Opens one EventSource and dispatches its named events as parsed JSON.
   * EventSource reconnects by itself after a dropped connection and resends Last-Event-ID, so
   * nothing is needed for that. It gives up for good (readyState CLOSED) only when the server
   * answers with an HTTP error; then onClosed can look up why, and we open a fresh one later.
   */
  function openStream(url, events, onClosed) {
    let source = null;
    let closed = false;
    let retry = 0;

    const connect = () => {
      source = new EventSource(url);
      source.onopen = () => {
        setLive(true);
        if ($('notice').dataset.connection) hideNotice();
      };
      source.onerror = () => {
        setLive(false);
        if (source.readyState === EventSource.CLOSED && !closed) {
          if (onClosed) onClosed();
          if (!closed) retry = setTimeout(connect, 5000);
        }
      };
      for (const [name, handler] of Object.entries(events)) {
        source.addEventListener(name, (ev) => {
          let data;
          try {
            data = JSON.parse(ev.data);
          } catch (err) {
            showNotice(`The server sent a malformed "${name}" event: ${err.message}`, 'error');
            return;
          }
          guard(() => handler(data, ev.data), `applying a "${name}" event`);
        });
      }
    };

    connect();
    return {
      close() {
        closed = true;
        clearTimeout(retry);
        if (source) source.close();
      },
    };
  }

  // ---------------------------------------------------------------------------------------
  // Session (whoami, login, logout)
  // ---------------------------------------------------------------------------------------

  const state = {
    who: null, // the last /api/whoami answer
    view: null, // the current page: {teardown()}
  };

  async function boot() {
    teardownView();
    let who;
    try {
      who = await api('GET', '/api/whoami');
    } catch (err) {
      showNotice(err.message, 'error');
      showBootFailure(err.message);
      return;
    }
    state.who = who;
    renderWho();
    if (who.mode === 'token' && !who.authenticated) {
      showLogin();
    } else {
      $('login-page').hidden = true;
      $('live').hidden = false;
      $('app').hidden = false;
      route();
    }
  }

  /** Without whoami there is nothing to show; say so and offer a retry rather than a blank page. */
  function showBootFailure(message) {
    $('login-page').hidden = true;
    const app = $('app');
    app.hidden = false;
    app.replaceChildren(
      h('section', { class: 'card empty-state' },
        h('h1', { text: 'The dashboard could not start' }),
        h('p', { text: message }),
        h('button', { type: 'button', class: 'primary', onclick: () => boot() }, 'Try again')),
    );
  }

  function renderWho() {
    const who = state.who || {};
    const parts = [];
    if (who.user) parts.push(who.user);
    parts.push(who.mode === 'token' ? 'token mode' : `${who.mode || 'unknown'} mode`);
    if (who.actions === false) parts.push('read-only');
    setText($('who'), parts.join(' · '));
    $('logout').hidden = !(who.mode === 'token' && who.authenticated);
  }

  function showLogin() {
    $('app').hidden = true;
    $('login-page').hidden = false;
    $('live').hidden = true; // nothing streams before signing in
    setText($('login-error'), '');
    setText($('crumbs'), '');
    $('login-token').focus();
  }

  async function submitLogin(ev) {
    ev.preventDefault();
    const input = $('login-token');
    const button = $('login-submit');
    const token = input.value.trim();
    if (!token) {
      setText($('login-error'), 'Paste a token first.');
      return;
    }
    button.disabled = true;
    setText($('login-error'), '');
    try {
      await api('POST', '/api/login', { token });
      input.value = '';
      hideNotice();
      await boot();
    } catch (err) {
      setText($('login-error'), err.message);
      if (err.status !== 401) showNotice(err.message, 'error');
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    try {
      await api('POST', '/api/logout', {});
    } catch (err) {
      showNotice(err.message, 'error');
      return;
    }
    await boot();
  }

  // ---------------------------------------------------------------------------------------
  // Routing
  // ---------------------------------------------------------------------------------------

  function safeDecode(part) {
    try {
      return decodeURIComponent(part);
    } catch (_) {
      return part;
    }
  }

  /** "#/" and "#/?ns=a" are the list, "#/rollouts/ns/name" a Rollout. */
  function parseHash() {
    const raw = location.hash.replace(/^#/, '') || '/';
    const q = raw.indexOf('?');
    const path = q >= 0 ? raw.slice(0, q) : raw;
    const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
    const parts = path.split('/').filter(Boolean).map(safeDecode);
    if (parts.length === 0) return { page: 'list', query };
    if (parts[0] === 'rollouts' && parts.length === 3) return { page: 'rollout', ns: parts[1], name: parts[2] };
    return { page: 'unknown', path };
  }

  function teardownView() {
    if (state.view) guard(() => state.view.teardown(), 'leaving the page');
    state.view = null;
    const dialog = $('confirm');
    if (dialog.open) dialog.close();
    $('app').replaceChildren();
  }

  function route() {
    teardownView();
    const target = parseHash();
    guard(() => {
      if (target.page === 'list') state.view = listView(target.query);
      else if (target.page === 'rollout') state.view = rolloutView(target.ns, target.name);
      else state.view = unknownView(target.path);
    }, 'opening the page');
  }

  function setCrumbs(...items) {
    const crumbs = $('crumbs');
    crumbs.replaceChildren();
    items.forEach((item, i) => {
      if (i > 0) crumbs.append(h('span', { class: 'sep', 'aria-hidden': 'true' }, '/'));
      crumbs.append(item.href ? h('a', { href: item.href, text: item.text }) : h('span', { text: item.text }));
    });
  }

  function unknownView(path) {
    setCrumbs({ text: 'Rollouts', href: '#/' });
    $('app').append(h('section', { class: 'card empty-state' },
      h('h1', { text: 'No such page' }),
      h('p', { text: `Nothing lives at #${path}.` }),
      h('a', { href: '#/', text: 'Back to all Rollouts' })));
    return { teardown() {} };
  }

  // ---------------------------------------------------------------------------------------
  // List page
  // ---------------------------------------------------------------------------------------

  const PHASES = ['Healthy', 'Progressing', 'Paused', 'Degraded'];

  // Lower sorts first in "Needs attention": broken things before things that merely wait.
  const ATTENTION_RANK = {
    Degraded: 0,
    Aborted: 1,
    AnalysisFailing: 2,
    AnalysisInconclusive: 3,
    DeadlineNear: 4,
    PausedForPromotion: 5,
  };
  const attentionRank = (reason) => (reason in ATTENTION_RANK ? ATTENTION_RANK[reason] : 6);

  // Keys compare by namespace, then name: "/" would sort "a-b/x" before "a/x".
  const sortKey = (key) => key.replace('/', '\u0000');
  const compareKeys = (a, b) => {
    const x = sortKey(a);
    const y = sortKey(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };

  /** "app=checkout, tier" → [["app","checkout"], ["tier", null]]; every term must match. */
  function parseLabelFilter(text) {
    return text.split(',').map((t) => t.trim()).filter(Boolean).map((term) => {
      const eq = term.indexOf('=');
      return eq < 0 ? [term, null] : [term.slice(0, eq).trim(), term.slice(eq + 1).trim()];
    });
  }

  /**
   * The list keeps one entry per Rollout in a Map keyed "ns/name": {row, all, att}, where all and
   * att are its <tr> in #all and #attention. Stream events only touch the Map and mark keys dirty;
   * one requestAnimationFrame callback then updates just those rows, so a burst of upserts costs
   * one DOM pass and the 1,000-row table is never rebuilt.
   */
  function listView(query) {
    setCrumbs({ text: 'Rollouts' });
    document.title = 'Rollouts · stepwise';

    const entries = new Map();
    let sortedKeys = []; // #all rows in display order
    const dirty = new Set(); // keys whose row changed since the last frame
    let removed = []; // entries deleted since the last frame (their <tr>s still need removing)
    let fullReorder = false; // a snapshot arrived: place every row anew
    let attentionDirty = false;
    let filtersDirty = true;
    let frame = 0;
    let haveStreamData = false; // a snapshot came: the plain GET's answer would be older
    let haveAnyData = false; // until then the empty-table text says "Loading…"
    let alive = true;

    const filters = {
      ns: query.get('ns') || '',
      label: query.get('label') || '',
      name: query.get('name') || '',
    };
    let labelTerms = parseLabelFilter(filters.label);

    // ----- skeleton -----
    const countsEl = h('div', { id: 'counts', class: 'counts', 'aria-label': 'Rollouts by phase' });
    const countEls = new Map();
    const totalEl = h('span', { class: 'count-total' });
    countsEl.append(totalEl);
    for (const phase of PHASES) ensureCountEl(phase);

    const nsSelect = h('select', { id: 'filter-namespace' }, h('option', { value: '', text: 'All namespaces' }));
    const labelInput = h('input', { id: 'filter-label', type: 'search', placeholder: 'app=checkout, tier=web', spellcheck: 'false', value: filters.label });
    const nameInput = h('input', { id: 'filter-name', type: 'search', placeholder: 'part of a name', spellcheck: 'false', value: filters.name });
    const shownEl = h('span', { class: 'shown muted', 'aria-live': 'polite' });
    const clearButton = h('button', { type: 'button', class: 'link-button', onclick: clearFilters }, 'Clear filters');

    const attBody = h('tbody');
    const attCount = h('span', { class: 'muted heading-count' });
    const attEmpty = h('p', { class: 'empty muted', text: 'Nothing needs attention.' });
    const allBody = h('tbody');
    const allEmpty = h('p', { class: 'empty muted', text: 'Loading…' });

    const page = h('section', { id: 'list-page' },
      h('div', { class: 'page-head' }, h('h1', { text: 'Rollouts' }), countsEl),
      h('form', { class: 'filters card', role: 'search', onsubmit: (ev) => ev.preventDefault() },
        h('label', { for: 'filter-namespace' }, 'Namespace'), nsSelect,
        h('label', { for: 'filter-label' }, 'Labels'), labelInput,
        h('label', { for: 'filter-name' }, 'Name'), nameInput,
        clearButton, shownEl),
      h('section', { class: 'card attention-card' },
        h('h2', {}, 'Needs attention ', attCount),
        h('table', { id: 'attention', class: 'grid' },
          h('thead', {}, h('tr', {},
            h('th', { text: 'Rollout' }), h('th', { text: 'Phase' }), h('th', { text: 'Step' }),
            h('th', { text: 'Why' }))),
          attBody),
        attEmpty),
      h('section', { class: 'card' },
        h('h2', { text: 'All Rollouts' }),
        h('table', { id: 'all', class: 'grid' },
          h('thead', {}, h('tr', {},
            h('th', { text: 'Name' }), h('th', { text: 'Namespace' }), h('th', { text: 'Strategy' }),
            h('th', { text: 'Phase' }), h('th', { class: 'num', text: 'Step' }),
            h('th', { class: 'num', text: 'Weight %' }), h('th', { class: 'num', text: 'Age' }),
            h('th', { text: 'Message' }))),
          allBody),
        allEmpty),
    );
    $('app').append(page);

    // ----- filters -----
    nsSelect.addEventListener('change', () => { filters.ns = nsSelect.value; filtersChanged(); });
    labelInput.addEventListener('input', () => { filters.label = labelInput.value; labelTerms = parseLabelFilter(filters.label); filtersChanged(); });
    nameInput.addEventListener('input', () => { filters.name = nameInput.value; filtersChanged(); });
    if (filters.ns) nsSelect.append(h('option', { value: filters.ns, text: filters.ns }));
    nsSelect.value = filters.ns;

    function clearFilters() {
      filters.ns = ''; filters.label = ''; filters.name = '';
      nsSelect.value = ''; labelInput.value = ''; nameInput.value = '';
      labelTerms = [];
      filtersChanged();
    }

    function filtersChanged() {
      filtersDirty = true;
      // replaceState keeps the filters in the address without firing hashchange (a re-route).
      const params = new URLSearchParams();
      if (filters.ns) params.set('ns', filters.ns);
      if (filters.label.trim()) params.set('label', filters.label.trim());
      if (filters.name.trim()) params.set('name', filters.name.trim());
      const qs = params.toString();
      history.replaceState(null, '', `#/${qs ? `?${qs}` : ''}`);
      schedule();
    }

    function matches(row) {
      if (filters.ns && row.namespace !== filters.ns) return false;
      const needle = filters.name.trim().toLowerCase();
      if (needle && !String(row.name).toLowerCase().includes(needle)) return false;
      const labels = row.labels || {};
      for (const [key, value] of labelTerms) {
        if (!Object.prototype.hasOwnProperty.call(labels, key)) return false;
        if (value !== null && labels[key] !== value) return false;
      }
      return true;
    }

    // ----- rows -----
    // Age cells are refreshed each second only for rows on screen, tracked by an observer.
    const onScreen = new Set();
    const observer = new IntersectionObserver((changes) => {
      for (const change of changes) {
        if (change.isIntersecting) onScreen.add(change.target);
        else onScreen.delete(change.target);
      }
    });

    function makeAllRow(key, row) {
      const cells = {
        name: h('td', { class: 'name' }, h('a', { href: rolloutHref(row.namespace, row.name), text: row.name })),
        ns: h('td', { class: 'ns', text: row.namespace }),
        strategy: h('td', { class: 'strategy' }),
        phase: h('td', { class: 'phase' }, phaseBadge(row.phase)),
        step: h('td', { class: 'step num' }),
        weight: h('td', { class: 'weight num' }),
        age: h('td', { class: 'age num' }),
        message: h('td', { class: 'message' }),
      };
      const tr = h('tr', { 'data-rollout': key }, Object.values(cells));
      tr.cells_ = cells;
      observer.observe(tr);
      return tr;
    }

    function makeAttentionRow(key, row) {
      const cells = {
        name: h('td', { class: 'name' }, h('a', { href: rolloutHref(row.namespace, row.name), text: key })),
        phase: h('td', { class: 'phase' }, phaseBadge(row.phase)),
        step: h('td', { class: 'step' }),
        reason: h('td', { class: 'reason' }, h('span', { class: 'tag' }), ' ', h('span', { class: 'why' })),
      };
      const tr = h('tr', { 'data-rollout': key }, Object.values(cells));
      tr.cells_ = cells;
      return tr;
    }

    function updatePhaseCell(td, phase) {
      const name = phaseName(phase);
      const badge = td.firstChild;
      if (badge && badge.textContent === name) return;
      td.replaceChildren(phaseBadge(phase));
    }

    function fillAllRow(tr, row) {
      const c = tr.cells_;
      setText(c.strategy, row.strategy);
      updatePhaseCell(c.phase, row.phase);
      setText(c.step, stepText(row.step));
      setText(c.weight, weightText(row.weight));
      tr.created_ = parseTime(row.created);
      setText(c.age, ageText(tr.created_));
      setText(c.message, row.message || '');
      if (c.message.title !== (row.message || '')) c.message.title = row.message || '';
    }

    function fillAttentionRow(tr, row) {
      const c = tr.cells_;
      updatePhaseCell(c.phase, row.phase);
      setText(c.step, stepText(row.step));
      const attention = row.attention;
      const tag = c.reason.querySelector('.tag');
      setText(tag, attention.reason);
      tag.className = `tag attention-${cssToken(attention.reason)}`;
      setText(c.reason.querySelector('.why'), attention.text || '');
    }

    // ----- applying stream events (state only; DOM work waits for the frame) -----
    function upsert(row) {
      if (!row || typeof row.namespace !== 'string' || typeof row.name !== 'string') return;
      const key = keyOf(row);
      const entry = entries.get(key);
      if (entry) entry.row = row;
      else entries.set(key, { key, row, all: null, att: null, attReason: null });
      dirty.add(key);
      schedule();
    }

    function remove(key) {
      const entry = entries.get(key);
      if (!entry) return;
      entries.delete(key);
      dirty.delete(key);
      removed.push(entry);
      schedule();
    }

    function applySnapshot(rows) {
      const seen = new Set();
      for (const row of rows || []) {
        upsert(row);
        seen.add(keyOf(row));
      }
      for (const key of [...entries.keys()]) if (!seen.has(key)) remove(key);
      fullReorder = true;
      schedule();
    }

    function schedule() {
      if (!frame && alive) frame = requestAnimationFrame(flush);
    }

    // ----- the per-frame DOM pass -----
    function flush() {
      frame = 0;
      guard(() => {
        const membershipChanged = removed.length > 0 || [...dirty].some((k) => !entries.get(k).all);
        flushRemovals();
        flushDirtyRows();
        if (fullReorder) reorderAll();
        if (attentionDirty) reorderAttention();
        if (filtersDirty) applyFilters();
        if (membershipChanged) updateNamespaceOptions();
        updateCounts();
        updateEmptyStates();
      }, 'updating the list');
    }

    function flushRemovals() {
      for (const entry of removed) {
        if (entry.all) {
          observer.unobserve(entry.all);
          onScreen.delete(entry.all);
          entry.all.remove();
          const i = binarySearch(sortedKeys, entry.key);
          if (sortedKeys[i] === entry.key) sortedKeys.splice(i, 1);
        }
        if (entry.att) {
          entry.att.remove();
          attentionDirty = true;
        }
      }
      removed = [];
    }

    function flushDirtyRows() {
      for (const key of dirty) {
        const entry = entries.get(key);
        if (!entry) continue;
        const row = entry.row;
        if (!entry.all) {
          entry.all = makeAllRow(key, row);
          if (!fullReorder) insertSorted(entry);
        }
        fillAllRow(entry.all, row);
        syncAttention(entry);
        const visible = matches(row);
        entry.all.hidden = !visible;
        if (entry.att) entry.att.hidden = !visible;
      }
      dirty.clear();
    }

    /** Adds, updates or drops the entry's #attention row; a changed reason re-sorts that table. */
    function syncAttention(entry) {
      const attention = entry.row.attention;
      if (attention) {
        if (!entry.att) {
          entry.att = makeAttentionRow(entry.key, entry.row);
          attentionDirty = true;
        }
        if (entry.attReason !== attention.reason) attentionDirty = true;
        entry.attReason = attention.reason;
        fillAttentionRow(entry.att, entry.row);
      } else if (entry.att) {
        entry.att.remove();
        entry.att = null;
        entry.attReason = null;
        attentionDirty = true;
      }
    }

    function binarySearch(keys, key) {
      let lo = 0;
      let hi = keys.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (compareKeys(keys[mid], key) < 0) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    }

    function insertSorted(entry) {
      const i = binarySearch(sortedKeys, entry.key);
      sortedKeys.splice(i, 0, entry.key);
      const next = i + 1 < sortedKeys.length ? entries.get(sortedKeys[i + 1]) : null;
      allBody.insertBefore(entry.all, next && next.all ? next.all : null);
    }

    function reorderAll() {
      fullReorder = false;
      sortedKeys = [...entries.keys()].sort(compareKeys);
      const fragment = document.createDocumentFragment();
      for (const key of sortedKeys) fragment.append(entries.get(key).all); // moves existing rows
      allBody.append(fragment);
    }

    function reorderAttention() {
      attentionDirty = false;
      const list = [...entries.values()].filter((e) => e.att);
      list.sort((a, b) => attentionRank(a.attReason) - attentionRank(b.attReason) || compareKeys(a.key, b.key));
      const fragment = document.createDocumentFragment();
      for (const entry of list) fragment.append(entry.att);
      attBody.append(fragment);
    }

    function applyFilters() {
      filtersDirty = false;
      for (const entry of entries.values()) {
        if (!entry.all) continue;
        const visible = matches(entry.row);
        entry.all.hidden = !visible;
        if (entry.att) entry.att.hidden = !visible;
      }
    }

    function ensureCountEl(phase) {
      let el = countEls.get(phase);
      if (!el) {
        el = h('span', { class: `count phase-${cssToken(phase)}`, 'data-phase': phase });
        countEls.set(phase, el);
        countsEl.append(el);
      }
      return el;
    }

    /** Counts are over all Rollouts, not only the filtered ones: they summarise the cluster. */
    function updateCounts() {
      const counts = new Map(PHASES.map((p) => [p, 0]));
      for (const entry of entries.values()) {
        const phase = phaseName(entry.row.phase);
        counts.set(phase, (counts.get(phase) || 0) + 1);
      }
      for (const [phase, n] of counts) setText(ensureCountEl(phase), `${phase} ${n}`);
      for (const [phase, el] of countEls) if (!counts.has(phase)) setText(el, `${phase} 0`);
      setText(totalEl, `Total ${entries.size}`);
    }

    function updateNamespaceOptions() {
      const namespaces = new Set();
      for (const entry of entries.values()) namespaces.add(entry.row.namespace);
      // Keep the chosen namespace selectable even if its last Rollout went away.
      if (filters.ns) namespaces.add(filters.ns);
      const wanted = [...namespaces].sort();
      const current = [...nsSelect.options].slice(1).map((o) => o.value);
      if (wanted.length === current.length && wanted.every((ns, i) => ns === current[i])) return;
      nsSelect.replaceChildren(h('option', { value: '', text: 'All namespaces' }),
        ...wanted.map((ns) => h('option', { value: ns, text: ns })));
      nsSelect.value = filters.ns;
    }

    function updateEmptyStates() {
      let shown = 0;
      let attShown = 0;
      let attTotal = 0;
      for (const entry of entries.values()) {
        if (entry.all && !entry.all.hidden) shown++;
        if (entry.att) {
          attTotal++;
          if (!entry.att.hidden) attShown++;
        }
      }
      const filtering = Boolean(filters.ns || filters.label.trim() || filters.name.trim());
      setText(shownEl, filtering ? `showing ${shown} of ${entries.size}` : `${entries.size} Rollouts`);
      clearButton.hidden = !filtering;
      setText(attCount, attTotal ? `(${attShown}${attShown !== attTotal ? ` of ${attTotal}` : ''})` : '');
      attEmpty.hidden = attShown > 0;
      setText(attEmpty, attTotal ? 'Nothing that matches the filters needs attention.' : 'Nothing needs attention.');
      allEmpty.hidden = shown > 0;
      if (haveAnyData) setText(allEmpty, entries.size ? 'No Rollout matches the filters.' : 'No Rollouts found.');
    }

    // ----- age ticker: once a second, rows on screen only, and only when the text changes -----
    const ticker = setInterval(() => {
      const now = Date.now();
      for (const tr of onScreen) {
        if (!tr.hidden && tr.cells_) setText(tr.cells_.age, ageText(tr.created_, now));
      }
    }, 1000);

    // ----- data -----
    const stream = openStream('/api/stream/rollouts', {
      snapshot(data) {
        haveStreamData = true;
        haveAnyData = true;
        applySnapshot(data.rollouts);
      },
      upsert(data) {
        haveAnyData = true;
        upsert(data);
      },
      delete(data) {
        remove(keyOf(data));
      },
    }, () => {
      // The stream was refused; the JSON endpoint tells us why (e.g. "forbidden: ...").
      api('GET', '/api/rollouts').catch(reportError);
    });

    // The plain GET both paints fast and, unlike EventSource, reports the server's error text.
    api('GET', '/api/rollouts').then((data) => {
      if (!alive || haveStreamData) return; // the stream's snapshot is newer
      haveAnyData = true;
      applySnapshot(data.rollouts);
    }).catch((err) => {
      if (!alive) return;
      setText(allEmpty, 'Could not load the Rollouts.');
      reportError(err);
    });

    return {
      teardown() {
        alive = false;
        stream.close();
        if (frame) cancelAnimationFrame(frame);
        clearInterval(ticker);
        observer.disconnect();
      },
    };
  }

  // ---------------------------------------------------------------------------------------
  // Rollout page
  // ---------------------------------------------------------------------------------------

  // Order, labels and the plain-words effect shown in the confirmation dialog.
  const ACTIONS = [
    { name: 'promote', label: 'Promote', effect: 'move on to the next step' },
    { name: 'promote-full', label: 'Promote fully', effect: 'skip the remaining steps and analysis and make the new revision stable now' },
    { name: 'abort', label: 'Abort', effect: 'stop the update and send all traffic back to the stable revision' },
    { name: 'retry', label: 'Retry', effect: 'start the aborted update again from the first step' },
    { name: 'pause', label: 'Pause', effect: 'pause the update where it is' },
    { name: 'resume', label: 'Resume', effect: 'resume the paused update' },
    { name: 'restart', label: 'Restart', effect: 'restart all pods, one ReplicaSet at a time' },
    { name: 'undo', label: 'Undo…', effect: 'roll back to an earlier revision' },
    { name: 'set-image', label: 'Set image…', effect: 'change a container image, which starts a new update' },
  ];

  const MEASUREMENT_PHASES = ['Successful', 'Failed', 'Error', 'Inconclusive', 'Running', 'Pending'];

  function rolloutView(ns, name) {
    const key = `${ns}/${name}`;
    const path = `${encodeURIComponent(ns)}/${encodeURIComponent(name)}`;
    const base = `/api/rollouts/${path}`;
    setCrumbs({ text: 'Rollouts', href: '#/' }, { text: ns }, { text: name });
    document.title = `${key} · stepwise`;

    let detail = null; // the last Detail received: its resourceVersion goes with every action
    let lastRaw = null; // identical events are skipped without touching the DOM
    let frame = 0;
    let alive = true;
    let haveStreamData = false;
    let busy = false; // an action POST is in flight

    // ----- skeleton: every hook exists from the start and is filled in by render() -----
    const el = {
      title: h('h1', { id: 'title', text: key }),
      phase: h('span', { id: 'phase', class: 'badge phase-Unknown', text: '…' }),
      strategy: h('span', { class: 'strategy muted' }),
      step: h('span', { id: 'step', text: '–' }),
      weight: h('span', { id: 'weight', text: '–' }),
      generation: h('span', { class: 'mono' }),
      rv: h('span', { class: 'mono' }),
      message: h('p', { id: 'message', class: 'message' }),
      banner: h('p', { class: 'attention-banner', hidden: true }),
      gone: h('p', { class: 'gone-banner', hidden: true }),
      actions: h('div', { id: 'actions', class: 'actions', role: 'toolbar', 'aria-label': 'Actions' }),
      reasons: h('ul', { class: 'reasons' }),
      steps: h('ol', { id: 'steps', class: 'steps' }),
      stepsEmpty: h('p', { class: 'muted', hidden: true, text: 'This strategy has no steps.' }),
      waiting: h('ul', { id: 'waiting', class: 'waiting' }),
      waitingEmpty: h('p', { class: 'muted', hidden: true, text: 'Not waiting on anything.' }),
      traffic: h('div', { id: 'traffic', class: 'traffic' }),
      revisions: h('table', { id: 'revisions', class: 'grid' }),
      diffCaption: h('p', { class: 'muted' }),
      diff: h('pre', { id: 'diff', class: 'diff', hidden: true }),
      analysis: h('div', { id: 'analysis', class: 'analysis' }, h('p', { class: 'muted', text: 'Loading…' })),
      events: h('table', { id: 'events', class: 'grid' }),
      eventsEmpty: h('p', { class: 'muted', hidden: true, text: 'No events.' }),
      history: h('ul', { id: 'history', class: 'history' }),
      historyEmpty: h('p', { class: 'muted', hidden: true, text: 'No actions taken from here yet.' }),
    };

    const card = (title, ...children) => h('section', { class: 'card' }, h('h2', { text: title }), children);

    const page = h('section', { id: 'rollout-page' },
      h('section', { class: 'card summary' },
        h('div', { class: 'summary-head' }, el.title, el.phase, el.strategy),
        h('dl', { class: 'facts' },
          h('div', {}, h('dt', { text: 'Step' }), h('dd', {}, el.step)),
          h('div', {}, h('dt', { text: 'Canary weight %' }), h('dd', {}, el.weight)),
          h('div', {}, h('dt', { text: 'Generation' }), h('dd', {}, el.generation)),
          h('div', {}, h('dt', { text: 'resourceVersion' }), h('dd', {}, el.rv))),
        el.message, el.banner, el.gone,
        el.actions, el.reasons),
      h('div', { class: 'columns' },
        h('div', { class: 'column' },
          card('Steps', el.steps, el.stepsEmpty),
          card('Waiting on', el.waiting, el.waitingEmpty),
          card('Traffic', el.traffic)),
        h('div', { class: 'column wide' },
          card('Revisions', h('div', { class: 'table-scroll' }, el.revisions)),
          card('Template change', el.diffCaption, el.diff))),
      card('Analysis', el.analysis),
      h('div', { class: 'columns' },
        h('div', { class: 'column wide' }, card('Events', el.events, el.eventsEmpty)),
        h('div', { class: 'column' }, card('History', el.history, el.historyEmpty))),
    );
    $('app').append(page);
    buildActionButtons();

    // ----- summary -----
    function renderSummary(d) {
      const row = d.row || {};
      const phase = phaseName(row.phase);
      setText(el.phase, phase);
      el.phase.className = `badge phase-${cssToken(phase)}`;
      setText(el.strategy, row.strategy || '');
      setText(el.step, stepText(row.step));
      setText(el.weight, weightText(row.weight));
      setText(el.generation, d.generation == null ? '–' : d.generation);
      setText(el.rv, d.resourceVersion || '–');
      setText(el.message, row.message || '');
      el.message.hidden = !row.message;
      el.banner.hidden = !row.attention;
      if (row.attention) {
        el.banner.replaceChildren(
          h('span', { class: `tag attention-${cssToken(row.attention.reason)}`, text: row.attention.reason }),
          ' ', row.attention.text || '');
      }
    }

    // ----- actions -----
    function buildActionButtons() {
      for (const action of ACTIONS) {
        el.actions.append(h('button', {
          type: 'button',
          'data-action': action.name,
          class: action.name === 'abort' ? 'danger' : '',
          disabled: true,
          onclick: () => openConfirm(action),
        }, action.label));
      }
    }

    function renderActions(d) {
      const states = d.actions || {};
      const reasons = [];
      for (const action of ACTIONS) {
        const button = el.actions.querySelector(`[data-action="${action.name}"]`);
        const info = states[action.name] || { enabled: false, reason: 'not offered by the server' };
        const enabled = Boolean(info.enabled) && !busy && !el.gone.dataset.gone;
        button.disabled = !enabled;
        // A disabled button says why on hover and in the visible list under the bar.
        button.title = info.reason || (enabled ? action.effect : '');
        if (!info.enabled) {
          reasons.push(h('li', { class: 'reason', 'data-reason-for': action.name },
            h('strong', { text: action.label.replace('…', '') }), ': ', info.reason || 'not available now'));
        }
      }
      el.reasons.replaceChildren(...reasons);
      el.reasons.hidden = reasons.length === 0;
    }

    /** Opens #confirm for one action; the POST happens only on #confirm-yes. */
    function openConfirm(action) {
      if (!detail) return;
      const info = (detail.actions || {})[action.name] || {};
      if (!info.enabled) return;
      const fields = $('confirm-fields');
      fields.replaceChildren();
      setText($('confirm-title'), `${action.label.replace('…', '')} ${key}?`);
      setText($('confirm-text'), `This will ${action.effect}.${info.reason ? ` ${info.reason}` : ''}`);
      setText($('confirm-error'), '');
      $('confirm-yes').disabled = false;

      if (action.name === 'undo') {
        const revisions = [...(detail.undoRevisions || [])].sort((a, b) => b - a);
        const select = h('select', { id: 'undo-revision' },
          revisions.map((r) => h('option', { value: r, text: `revision ${r}${revisionImages(r)}` })));
        const preview = h('pre', { id: 'undo-diff', class: 'diff' });
        select.addEventListener('change', () => showUndoDiff(select.value, preview));
        fields.append(h('label', { for: 'undo-revision', text: 'Roll back to' }), select, preview);
        if (revisions.length === 0) {
          setText($('confirm-error'), 'There is no earlier revision to go back to.');
          $('confirm-yes').disabled = true;
        } else {
          showUndoDiff(select.value, preview);
        }
      } else if (action.name === 'set-image') {
        fields.append(
          h('label', { for: 'set-image-container', text: 'Container' }),
          h('input', { id: 'set-image-container', type: 'text', placeholder: 'container name', spellcheck: 'false', autocomplete: 'off' }),
          h('label', { for: 'set-image-image', text: 'Image' }),
          h('input', { id: 'set-image-image', type: 'text', placeholder: 'e.g. registry/app:2', spellcheck: 'false', autocomplete: 'off' }));
      }

      confirmHandler = () => submitAction(action);
      const dialog = $('confirm');
      if (typeof dialog.showModal === 'function') dialog.showModal();
      else dialog.setAttribute('open', '');
      const first = fields.querySelector('input, select');
      (first || $('confirm-yes')).focus();
    }

    /** What an undo to `revision` would change, from the server, before the person confirms. */
    async function showUndoDiff(revision, preview) {
      preview.replaceChildren(h('span', { class: 'line ctx', text: 'loading the change…' }));
      try {
        const diff = await api('GET', `${base}/undo/${encodeURIComponent(revision)}`);
        const lines = diff.lines || [];
        if (lines.length === 0) {
          preview.replaceChildren(h('span', { class: 'line ctx', text: 'The pod template would not change.' }));
          return;
        }
        preview.replaceChildren(...lines.map((line) => {
          const op = line.op === '+' || line.op === '-' ? line.op : ' ';
          const cls = op === '+' ? 'add' : op === '-' ? 'del' : 'ctx';
          return h('span', { class: `line ${cls}`, text: `${op} ${line.text}\n` });
        }));
      } catch (err) {
        preview.replaceChildren();
        setText($('confirm-error'), err.message);
      }
    }

    /** For the undo list: "revision 2 (app:1)" when the revision is still among the ReplicaSets. */
    function revisionImages(revision) {
      const rev = (detail.revisions || []).find((r) => r.revision === revision);
      return rev && rev.images && rev.images.length ? ` (${rev.images.join(', ')})` : '';
    }

    /** Builds the body, closes the dialog and POSTs. Returns false to keep the dialog open. */
    function submitAction(action) {
      const body = { resourceVersion: detail.resourceVersion };
      if (action.name === 'undo') {
        const value = Number($('undo-revision').value);
        if (!Number.isInteger(value)) {
          setText($('confirm-error'), 'Choose a revision.');
          return false;
        }
        body.revision = value;
      } else if (action.name === 'set-image') {
        const container = $('set-image-container').value.trim();
        const image = $('set-image-image').value.trim();
        if (!container || !image) {
          setText($('confirm-error'), 'Both a container name and an image are needed.');
          return false;
        }
        body.container = container;
        body.image = image;
      }
      postAction(action, body);
      return true;
    }

    async function postAction(action, body) {
      busy = true;
      guard(() => renderActions(detail), 'showing the actions');
      try {
        const result = await api('POST', `${base}/actions/${encodeURIComponent(action.name)}`, body);
        showNotice(result.message || `${action.label.replace('…', '')}: done.`, 'ok');
      } catch (err) {
        reportError(err);
      } finally {
        busy = false;
        if (alive && detail) guard(() => renderActions(detail), 'showing the actions');
      }
    }

    // ----- steps, waiting, traffic -----
    function renderSteps(d) {
      const steps = d.steps || [];
      el.steps.replaceChildren(...steps.map((step) => h('li', { 'data-state': step.state || 'next' },
        h('span', { class: 'step-text', text: step.text }))));
      el.stepsEmpty.hidden = steps.length > 0;
    }

    function renderWaiting(d) {
      const waiting = d.waiting || [];
      el.waiting.replaceChildren(...waiting.map((w) => {
        const until = parseTime(w.until);
        return h('li', { 'data-kind': w.kind },
          h('span', { class: `tag kind-${cssToken(w.kind)}`, text: w.kind }), ' ',
          h('span', { class: 'wait-text', text: w.text }),
          until == null ? null : h('span', { class: 'muted countdown-label', text: ' · remaining ' }),
          until == null ? null : h('span', {
            class: 'countdown', 'data-countdown': '', 'data-until': String(until),
            title: `until ${dateTimeText(until)}`, text: countdownText(until),
          }));
      }));
      el.waitingEmpty.hidden = waiting.length > 0;
    }

    function renderTraffic(d) {
      const t = d.traffic;
      if (!t) {
        el.traffic.replaceChildren(h('p', { class: 'muted', text: 'No traffic split reported.' }));
        return;
      }
      const canary = clampPercent(t.canary);
      const stable = clampPercent(t.stable);
      const canaryBar = h('div', { class: 'bar-canary', title: `canary ${canary}%` });
      const stableBar = h('div', { class: 'bar-stable', title: `stable ${stable}%` });
      canaryBar.style.width = `${canary}%`;
      stableBar.style.width = `${stable}%`;
      let verified = null;
      if (t.verified === true) verified = h('span', { class: 'tag ok', text: 'verified' });
      else if (t.verified === false) verified = h('span', { class: 'tag bad', text: 'not verified' });
      el.traffic.replaceChildren(
        h('div', { class: 'bar', role: 'img', 'aria-label': `canary ${canary}%, stable ${stable}%` }, canaryBar, stableBar),
        h('p', { class: 'traffic-text' }, h('span', { text: `canary ${t.canary}% / stable ${t.stable}%` }), verified ? ' ' : null, verified));
    }

    function clampPercent(value) {
      const n = Number(value);
      return Number.isFinite(n) ? Math.min(100, Math.max(0, n)) : 0;
    }

    // ----- revisions and template diff -----
    function renderRevisions(d) {
      const revisions = d.revisions || [];
      el.revisions.replaceChildren(
        h('thead', {}, h('tr', {},
          ['Revision', 'Role', 'Images and change cause', 'ReplicaSet', 'Desired', 'Ready', 'Available'].map((t) =>
            h('th', { class: ['Desired', 'Ready', 'Available', 'Revision'].includes(t) ? 'num' : null, text: t })))),
        h('tbody', {}, revisions.length === 0
          ? h('tr', {}, h('td', { colspan: 7, class: 'muted', text: 'No ReplicaSets.' }))
          : revisions.map((r) => {
            const rs = r.replicaSet || {};
            return h('tr', { 'data-revision': r.revision },
              h('td', { class: 'num', text: r.revision }),
              h('td', {}, (r.roles || []).map((role) => h('span', { class: `tag role-${cssToken(role)}`, text: role }))),
              h('td', { class: 'images' },
                h('div', { class: 'mono', text: (r.images || []).join(', ') }),
                r.changeCause ? h('div', { class: 'cause', text: r.changeCause }) : null),
              h('td', { class: 'mono', text: rs.name || '–', title: r.podTemplateHash ? `pod-template-hash ${r.podTemplateHash}` : null }),
              h('td', { class: 'num', text: rs.desired ?? '–' }),
              h('td', { class: 'num', text: rs.ready ?? '–' }),
              h('td', { class: 'num', text: rs.available ?? '–' }));
          })));
    }

    function renderDiff(d) {
      const diff = d.templateDiff;
      if (!diff || !diff.lines || diff.lines.length === 0) {
        setText(el.diffCaption, 'The stable and the new revision have the same pod template.');
        el.diff.replaceChildren();
        el.diff.hidden = true;
        return;
      }
      el.diff.hidden = false;
      setText(el.diffCaption, `Pod template, revision ${diff.from} → ${diff.to}`);
      el.diff.replaceChildren(...diff.lines.map((line) => {
        const op = line.op === '+' || line.op === '-' ? line.op : ' ';
        const cls = op === '+' ? 'add' : op === '-' ? 'del' : 'ctx';
        return h('span', { class: `line ${cls}`, text: `${op} ${line.text}\n` });
      }));
    }

    // ----- analysis -----
    function renderAnalysis(d) {
      const runs = d.analysisRuns || [];
      if (runs.length === 0) {
        el.analysis.replaceChildren(h('p', { class: 'muted', text: 'No analysis runs for this Rollout.' }));
        return;
      }
      el.analysis.replaceChildren(...runs.map(renderRun));
    }

    function renderRun(run) {
      const phase = run.phase || 'Pending';
      return h('section', { class: 'run', 'data-run': run.name },
        h('header', { class: 'run-head' },
          h('h3', { class: 'mono', text: run.name }),
          h('span', { class: `badge m-${cssToken(phase)}`, text: phase }),
          run.revision != null ? h('span', { class: 'muted', text: `revision ${run.revision}` }) : null),
        run.message ? h('p', { class: 'run-message', text: run.message }) : null,
        h('div', { class: 'metrics' }, (run.metrics || []).map(renderMetric)));
    }

    function renderMetric(metric) {
      const phase = metric.phase || 'Pending';
      const measurements = metric.measurements || [];
      const counts = [`${metric.count ?? measurements.length} measured`];
      if (metric.failed) counts.push(`${metric.failed} failed`);
      if (metric.limit) counts.push(metric.limit);
      return h('div', { class: 'metric', 'data-metric': metric.name },
        h('header', { class: 'metric-head' },
          h('h4', { class: 'mono', text: metric.name }),
          h('span', { class: `badge m-${cssToken(phase)}`, text: phase }),
          h('span', { class: 'muted', text: counts.join(', ') })),
        h('ul', { class: 'conditions' },
          metric.successCondition ? h('li', {}, h('span', { class: 'muted', text: 'success when ' }), h('code', { text: metric.successCondition })) : null,
          metric.failureCondition ? h('li', {}, h('span', { class: 'muted', text: 'failure when ' }), h('code', { text: metric.failureCondition })) : null,
          !metric.successCondition && !metric.failureCondition ? h('li', { class: 'muted', text: 'no condition' }) : null),
        metric.message ? h('p', { class: 'metric-message', text: metric.message }) : null,
        metricChart(metric),
        valuesList(measurements));
    }

    /** The last ten measurements, newest last; a null value still takes its place in the list. */
    function valuesList(measurements) {
      const last = measurements.slice(-10);
      return h('div', { class: 'values-wrap' },
        h('span', { class: 'muted', text: last.length ? `last ${last.length}: ` : 'no measurements yet' }),
        h('ol', { class: 'values' }, last.map((m, i) => {
          const numeric = typeof m.value === 'number' && Number.isFinite(m.value);
          const phase = m.phase || 'Pending';
          const item = h('li', {
            class: `m-${cssToken(phase)}${numeric ? '' : ' no-value'}`,
            title: `${dateTimeText(parseTime(m.at))} · ${phase}${m.raw != null ? ` · raw ${m.raw}` : ''}`,
            text: numeric ? numText(m.value) : 'no value',
          });
          // A space between items keeps the list's text readable ("0.01 0.02"), e.g. when copied.
          return i === 0 ? item : [' ', item];
        })));
    }

    /**
     * A y-axis from lo to hi widened to round numbers (steps of 1, 2, 2.5 or 5 times a power of
     * ten), with its ticks. Every value passed in stays inside.
     */
    function niceScale(lo, hi) {
      if (lo === hi) {
        const pad = Math.abs(lo) * 0.1 || 1;
        lo -= pad;
        hi += pad;
      }
      const rough = (hi - lo) / 4;
      const magnitude = 10 ** Math.floor(Math.log10(rough));
      const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= rough);
      const first = Math.floor(lo / step);
      const last = Math.ceil(hi / step);
      // toPrecision trims float noise such as 0.30000000000000004.
      const ticks = [];
      for (let i = first; i <= last; i++) ticks.push(Number((i * step).toPrecision(12)));
      return { lo: ticks[0], hi: ticks[ticks.length - 1], ticks };
    }

    /** "pass below 0.05" for a success upper bound, "fail above 0.1" for a failure lower bound, ... */
    function boundLabel(bound) {
      // kind says on which side of the line the condition holds: upper = below it,
      // lower = above it, equal = only at it.
      const side = { upper: 'below', lower: 'above', equal: 'at' }[bound.kind] || 'at';
      return `${bound.of === 'failure' ? 'fail' : 'pass'} ${side} ${numText(bound.value)}`;
    }

    /**
     * An inline SVG: measurements as points (coloured by their phase) joined by a line that
     * breaks at missing values, and every bound as a dashed line carrying data-threshold.
     * The y-axis spans every value and every bound, so a threshold is never off the chart.
     */
    function metricChart(metric) {
      const W = 560;
      const H = 170;
      const left = 52;
      const right = 118; // room for the bound labels
      const top = 12;
      const bottom = 24;
      const plotW = W - left - right;
      const plotH = H - top - bottom;

      const measurements = metric.measurements || [];
      const bounds = (metric.bounds || []).filter((b) => typeof b.value === 'number' && Number.isFinite(b.value));
      const numbers = measurements.map((m) => m.value).filter((v) => typeof v === 'number' && Number.isFinite(v));
      const all = numbers.concat(bounds.map((b) => b.value));

      const chart = svg('svg', {
        class: 'chart', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
        'aria-label': `${metric.name}: ${numbers.length} numeric measurements, ${bounds.length} thresholds`,
      });
      if (all.length === 0) {
        chart.append(svg('text', { x: W / 2, y: H / 2, class: 'chart-empty', 'text-anchor': 'middle', text: 'no numeric measurements yet' }));
        return chart;
      }

      let lo = Math.min(...all);
      const max = Math.max(...all);
      // Rates and latencies read better from zero when the data sits well above it.
      if (lo > 0 && lo <= max / 2) lo = 0;
      const scale = niceScale(lo, max);
      const hi = scale.hi;
      lo = scale.lo;
      const y = (v) => top + ((hi - v) / (hi - lo)) * plotH;
      const n = measurements.length;
      const x = (i) => left + (n <= 1 ? plotW / 2 : (i * plotW) / (n - 1));

      // Axis and grid at round values.
      for (const v of scale.ticks) {
        chart.append(
          svg('line', { class: 'grid-line', x1: left, x2: left + plotW, y1: y(v), y2: y(v) }),
          svg('text', { class: 'tick', x: left - 6, y: y(v) + 3, 'text-anchor': 'end', text: numText(v) }));
      }
      chart.append(svg('line', { class: 'axis', x1: left, x2: left, y1: top, y2: top + plotH }));

      // Bounds, with labels nudged apart when two thresholds are close.
      let lastLabelY = -Infinity;
      for (const bound of [...bounds].sort((a, b) => b.value - a.value)) {
        const by = y(bound.value);
        const labelY = Math.max(by + 3, lastLabelY + 11);
        lastLabelY = labelY;
        // The group carries the value and the dash pattern (which its line inherits), so it reads
        // as one dashed threshold whose text is its label.
        chart.append(svg('g', { class: `bound bound-${cssToken(bound.of)}`, 'data-threshold': String(bound.value), 'stroke-dasharray': '6 4' },
          svg('line', { x1: left, x2: left + plotW, y1: by, y2: by }),
          svg('text', { class: 'bound-label', x: left + plotW + 6, y: labelY, text: boundLabel(bound) })));
      }

      // The line, broken where a measurement has no numeric value.
      let path = '';
      let penDown = false;
      measurements.forEach((m, i) => {
        if (typeof m.value === 'number' && Number.isFinite(m.value)) {
          path += `${penDown ? 'L' : 'M'}${x(i).toFixed(1)} ${y(m.value).toFixed(1)} `;
          penDown = true;
        } else {
          penDown = false;
        }
      });
      if (path) chart.append(svg('path', { class: 'series', d: path.trim() }));

      measurements.forEach((m, i) => {
        if (typeof m.value !== 'number' || !Number.isFinite(m.value)) return;
        const phase = m.phase || 'Pending';
        chart.append(svg('circle', { class: `point m-${cssToken(phase)}`, cx: x(i), cy: y(m.value), r: 4 },
          svg('title', { text: `${numText(m.value)} · ${phase} · ${dateTimeText(parseTime(m.at))}` })));
      });

      // First and last measurement times under the plot.
      if (n > 0) {
        const first = parseTime(measurements[0].at);
        const last = parseTime(measurements[n - 1].at);
        chart.append(svg('text', { class: 'tick', x: left, y: H - 6, text: clockText(first) }));
        if (n > 1) chart.append(svg('text', { class: 'tick', x: left + plotW, y: H - 6, 'text-anchor': 'end', text: clockText(last) }));
      }
      return chart;
    }

    // ----- events and history -----
    function renderEvents(d) {
      const events = d.events || [];
      el.events.replaceChildren(
        h('thead', {}, h('tr', {}, ['Type', 'Reason', 'Message', 'Count', 'Age'].map((t) =>
          h('th', { class: t === 'Count' || t === 'Age' ? 'num' : null, text: t })))),
        h('tbody', {}, events.map((e) => {
          const at = parseTime(e.at);
          return h('tr', { class: e.type === 'Warning' ? 'warning' : null },
            h('td', {}, h('span', { class: `tag ${e.type === 'Warning' ? 'bad' : 'neutral'}`, text: e.type })),
            h('td', { text: e.reason }),
            h('td', { class: 'message-wrap', text: e.message }),
            h('td', { class: 'num', text: e.count ?? 1 }),
            h('td', { class: 'num', 'data-age-of': at ?? '', title: dateTimeText(at), text: ageText(at) }));
        })));
      el.eventsEmpty.hidden = events.length > 0;
    }

    function renderHistory(d) {
      const history = d.history || [];
      el.history.replaceChildren(...history.map((item) => {
        const at = parseTime(item.at);
        return h('li', {},
          h('span', { class: 'when muted', 'data-age-of': at ?? '', title: dateTimeText(at), text: ageText(at) }),
          h('strong', { text: item.action }),
          item.by ? h('span', { class: 'muted', text: ` by ${item.by}` }) : null,
          item.message ? h('div', { class: 'history-message', text: item.message }) : null);
      }));
      el.historyEmpty.hidden = history.length > 0;
    }

    // ----- render all sections; one failing section must not take the others down -----
    const SECTIONS = [
      ['the summary', renderSummary], ['the actions', renderActions], ['the steps', renderSteps],
      ['what it waits on', renderWaiting], ['the traffic', renderTraffic], ['the revisions', renderRevisions],
      ['the template diff', renderDiff], ['the analysis', renderAnalysis], ['the events', renderEvents],
      ['the history', renderHistory],
    ];

    function render() {
      frame = 0;
      if (!detail || !alive) return;
      for (const [what, fn] of SECTIONS) guard(() => fn(detail), `showing ${what}`);
    }

    function accept(data, raw) {
      if (raw != null && raw === lastRaw) return;
      lastRaw = raw;
      if (!data || typeof data !== 'object' || !data.row) throw new Error('the Detail has no row');
      detail = data;
      if (el.gone.dataset.gone) {
        delete el.gone.dataset.gone;
        el.gone.hidden = true;
      }
      if (!frame) frame = requestAnimationFrame(render);
    }

    function markGone(message) {
      el.gone.dataset.gone = '1';
      el.gone.hidden = false;
      setText(el.gone, message || 'This Rollout was deleted.');
      if (detail) guard(() => renderActions(detail), 'showing the actions');
    }

    // ----- the countdowns and ages tick on the client, once a second -----
    const ticker = setInterval(() => {
      const now = Date.now();
      for (const span of page.querySelectorAll('[data-countdown]')) {
        setText(span, countdownText(Number(span.dataset.until), now));
      }
      for (const cell of page.querySelectorAll('[data-age-of]')) {
        const at = Number(cell.dataset.ageOf);
        if (cell.dataset.ageOf && Number.isFinite(at)) setText(cell, ageText(at, now));
      }
    }, 1000);

    // ----- data -----
    const stream = openStream(`/api/stream/rollouts/${path}`, {
      detail(data, raw) {
        haveStreamData = true;
        accept(data, raw);
      },
      gone(data) {
        const message = data && data.error ? data.error : `${key} was deleted.`;
        showNotice(message, 'error');
        markGone(message);
      },
    }, () => {
      // The stream was refused. Ask the JSON endpoint why; a 404 will not heal by retrying.
      api('GET', base).then((data) => accept(data, null)).catch((err) => {
        reportError(err);
        if (err.status === 404) {
          stream.close();
          markGone(err.message);
        }
      });
    });

    api('GET', base).then((data) => {
      if (alive && !haveStreamData) accept(data, null);
    }).catch((err) => {
      if (!alive) return;
      reportError(err);
      if (err.status === 404) markGone(err.message);
    });

    return {
      teardown() {
        alive = false;
        stream.close();
        if (frame) cancelAnimationFrame(frame);
        clearInterval(ticker);
        confirmHandler = null;
      },
    };
  }

  // ---------------------------------------------------------------------------------------
  // The confirmation dialog (one, shared; the Rollout page sets confirmHandler)
  // ---------------------------------------------------------------------------------------

  let confirmHandler = null;

  function closeConfirm() {
    const dialog = $('confirm');
    if (typeof dialog.close === 'function' && dialog.open) dialog.close();
    else dialog.removeAttribute('open');
  }

  function wireStaticElements() {
    $('notice').addEventListener('click', hideNotice);
    $('login').addEventListener('submit', submitLogin);
    $('logout').addEventListener('click', logout);
    $('confirm-no').addEventListener('click', () => {
      confirmHandler = null;
      closeConfirm();
    });
    $('confirm-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const handler = confirmHandler;
      if (!handler) {
        closeConfirm();
        return;
      }
      const done = guard(handler, 'starting the action');
      if (done !== false) {
        confirmHandler = null;
        closeConfirm();
      }
    });
    window.addEventListener('hashchange', () => {
      if (!$('app').hidden) route();
    });
  }

  function start() {
    guard(wireStaticElements, 'starting');
    boot().catch(reportError);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
