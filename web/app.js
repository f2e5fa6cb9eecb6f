// NeuralForge dashboard: a single page driven by the `neuralforge serve` API
// (docs/dashboard.md). Plain JavaScript, no build step. Every piece of data
// reaches the page through textContent or attributes, never innerHTML.
'use strict';
(() => {

// ---------------------------------------------------------------- helpers

const tid = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

/** Builds an element: h('td', {testid: 'x', class: 'y', onclick: f}, 'text', child). */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'testid') el.setAttribute('data-testid', v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

function fmtNum(x, digits = 4) {
  if (x == null || !Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a >= 1e5) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(1);
  if (a !== 0 && a < 1e-3) return x.toExponential(2);
  return String(Number(x.toPrecision(digits)));
}

function fmtBytes(n) {
  if (n == null || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(n >= 100 ? 0 : 1)} ${units[i]}`;
}

function fmtDuration(s) {
  if (s == null || !Number.isFinite(s) || s < 0) return '–';
  s = Math.round(s);
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  if (hh) return `${hh}h ${String(mm).padStart(2, '0')}m`;
  if (mm) return `${mm}m ${String(ss).padStart(2, '0')}s`;
  return `${ss}s`;
}

/** A timestamp from the API as milliseconds: unix seconds or ms, ISO 8601, or SQLite's UTC "YYYY-MM-DD HH:MM:SS". */
function parseTime(v) {
  if (v == null || v === '' || v === 0) return null;  // serve writes 0 for "not yet"
  if (typeof v === 'number') return v > 1e11 ? v : v * 1000;
  if (/^\d+(\.\d+)?$/.test(v)) return parseTime(Number(v));
  if (/^\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(v)) v = v.replace(' ', 'T') + 'Z';
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
}

function fmtTime(v) {
  const t = parseTime(v);
  if (t == null) return v == null ? '–' : String(v);
  return new Date(t).toLocaleString();
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

function basename(p) {
  return typeof p === 'string' ? p.replace(/\/+$/, '').split('/').pop() : null;
}

/** The value after `flag` in a run's argument array, or null. */
function argOf(run, flag) {
  const a = Array.isArray(run && run.args) ? run.args : [];
  const i = a.indexOf(flag);
  return i >= 0 && i + 1 < a.length ? a[i + 1] : null;
}

const ACTIVE = new Set(['queued', 'starting', 'running', 'restarting']); // queued: waiting for a slot (serve --max-trainings, --max-jobs)
const isActive = (run) => !!run && ACTIVE.has(run.status);

// ---------------------------------------------------------------- auth and API

// The page never sees the token: GET /?token=… traded it for an HttpOnly session
// cookie and redirected here, and same-origin fetch, EventSource and download
// links send that cookie by themselves. A 401 means the cookie is missing or
// from an earlier start of the server: open the printed URL again.

function showAuthError() {
  tid('auth-error').hidden = false;
}

function showGlobalError(msg) {
  const el = tid('global-error');
  el.textContent = msg;
  el.hidden = !msg;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = {};
  const init = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `cannot reach the server (${e.message}); is neuralforge serve still running?`);
  }
  if (res.status === 401) {
    showAuthError();
    throw new ApiError(401, 'not authorized: open the URL printed by neuralforge serve');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const msg = data && typeof data.error === 'string' ? data.error : `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, msg);
  }
  return data;
}

const runPath = (id) => `/api/runs/${encodeURIComponent(id)}`;
const projPath = (id) => `/api/projects/${encodeURIComponent(id)}`;

/**
 * Follows one run's Server-Sent Events: every message once (deduplicated by
 * its sequence number), and status changes. The server ends the stream after
 * the run ends; then the run is fetched to learn whether more is to come
 * (it reconnects with since=<last seq> otherwise). reopen() after a resume.
 */
class RunStream {
  constructor(run, { onMessage, onStatus, onEnd } = {}) {
    this.run = run;
    this.onMessage = onMessage || (() => {});
    this.onStatus = onStatus || (() => {});
    this.onEnd = onEnd || (() => {});
    this.lastSeq = 0;
    this.received = 0;
    this.retry = 0;
    this.es = null;
    this.timer = null;
    this.closed = false;
    this.ended = false;
  }

  open() {
    if (this.closed || this.es) return;
    this.ended = false;
    let url = `${runPath(this.run.id)}/events`;
    if (this.lastSeq > 0) url += `?since=${this.lastSeq}`;
    const es = this.es = new EventSource(url);
    es.onmessage = (e) => {
      const seq = Number(e.lastEventId);
      if (Number.isFinite(seq) && seq > 0) {
        if (seq <= this.lastSeq) return;
        this.lastSeq = seq;
      }
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      if (!msg || typeof msg !== 'object') return;
      this.received++;
      this.retry = 0;
      this.onMessage(msg, seq);
    };
    es.addEventListener('status', (e) => {
      let run;
      try { run = JSON.parse(e.data); } catch { return; }
      if (run && run.id != null) { this.run = run; this.onStatus(run); }
    });
    es.onerror = () => {
      es.close();
      if (this.es === es) this.es = null;
      this.afterDrop();
    };
  }

  async afterDrop() {
    if (this.closed) return;
    let run = null;
    try {
      run = await api('GET', runPath(this.run.id));
    } catch (e) {
      if (e.status === 401 || e.status === 404) { this.close(); return; }
    }
    if (this.closed) return;
    if (run) { this.run = run; this.onStatus(run); }
    const seen = Math.max(this.received, this.lastSeq);
    if (run && !isActive(run) && (typeof run.messages !== 'number' || run.messages <= seen || this.retry >= 2)) {
      this.ended = true;
      this.onEnd(run);
      return;
    }
    const delay = Math.min(5000, 300 * 2 ** this.retry++);
    this.timer = setTimeout(() => { this.timer = null; this.open(); }, delay);
  }

  /** Reconnects after the run became active again (resume). */
  reopen() {
    if (this.closed || this.es) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.retry = 0;
    this.open();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
  }
}

// ---------------------------------------------------------------- charts

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563'];

/** A uPlot chart in a container, created once the container has a width. */
class Chart {
  constructor(el, makeOpts, height = 260) {
    this.el = el;
    this.makeOpts = makeOpts;
    this.height = height;
    this.u = null;
    this.data = null;
    this.key = null;
  }

  /** data: uPlot's [xs, ...ys]; key: rebuild when the series change. */
  set(data, key = '') {
    this.data = data;
    this.el.dataset.points = String(data[0].length);
    if (key !== this.key) { this.destroy(); this.key = key; }
    this.draw();
  }

  draw() {
    if (!this.data) return;
    const width = this.el.clientWidth;
    if (!width) return;  // hidden: drawn when its view is shown
    if (typeof window.uPlot !== 'function') {
      if (!this.el.querySelector('.chart-missing')) {
        this.el.append(h('p', { class: 'chart-missing' }, 'Charts need uPlot (/vendor/uPlot.iife.min.js), which did not load.'));
      }
      return;
    }
    if (!this.u) {
      this.el.replaceChildren();
      this.u = new window.uPlot({ ...this.makeOpts(), width, height: this.height }, this.data, this.el);
    } else {
      if (Math.abs(this.u.width - width) > 1) this.u.setSize({ width, height: this.height });
      this.u.setData(this.data);
    }
  }

  destroy() {
    if (this.u) { this.u.destroy(); this.u = null; }
  }
}

const axis = (extra) => ({ stroke: '#555', grid: { stroke: '#eee' }, ticks: { stroke: '#ddd' }, ...extra });

/** Short tick labels: 12k, 3.4M. */
function compact(v) {
  if (v == null) return '';
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toPrecision(3)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  return String(+v.toPrecision(4));
}
const compactValues = (u, vals) => vals.map(compact);
// Steps are integers: no 2.5 on the x axis.
const STEP_INCRS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8].map((p) => m * p)).sort((a, b) => a - b);
const stepAxis = () => axis({ label: 'step', incrs: STEP_INCRS });

// ---------------------------------------------------------------- state, routing

const state = {
  status: null,       // GET /api/status
  projects: [],
  project: null,      // the current project object
  projectId: null,
  view: 'projects',
};

const VIEWS = {};
const PROJECT_VIEWS = ['config', 'dashboard', 'generate', 'data', 'export', 'history'];

function go(view, pid = state.projectId) {
  location.hash = PROJECT_VIEWS.includes(view) && pid != null ? `#/p/${encodeURIComponent(pid)}/${view}` : `#/${view}`;
}

function parseHash() {
  let m = location.hash.match(/^#\/p\/([^/]+)\/(\w+)/);
  if (m) return { pid: decodeURIComponent(m[1]), view: m[2] };
  m = location.hash.match(/^#\/(\w+)/);
  return { pid: null, view: m ? m[1] : 'projects' };
}

let routeSeq = 0;
async function route() {
  const seq = ++routeSeq;
  let { pid, view } = parseHash();
  if (!VIEWS[view] || view === 'noproject') view = 'projects';
  if (PROJECT_VIEWS.includes(view) && pid == null) {
    if (state.projectId != null) { go(view, state.projectId); return; }
  }
  const prev = VIEWS[state.view];
  if (prev && prev.leave) prev.leave();
  state.view = view;
  for (const a of document.querySelectorAll('.tabs a')) a.classList.toggle('active', a.dataset.view === view);

  if (pid != null && String(pid) !== String(state.projectId)) selectProject(pid);
  if (PROJECT_VIEWS.includes(view)) {
    if (state.projectId == null) { show('noproject'); return; }
    try {
      await loadProject();
    } catch (e) {
      if (seq !== routeSeq) return;
      if (e.status === 404) {
        selectProject(null);
        showGlobalError('That project no longer exists.');
        go('projects');
      } else showGlobalError(e.message);
      return;
    }
    if (seq !== routeSeq) return;
  }
  // Shown at once, and aria-busy until its content has loaded (a first visit fetches, say, the
  // option table): assistive technology and the browser tests wait for it to clear.
  const section = document.querySelector(`section.view[data-view="${view}"]`);
  section.setAttribute('aria-busy', 'true');
  show(view);
  try {
    await VIEWS[view].enter();
  } catch (e) {
    if (e.status !== 401) showGlobalError(e.message);
  } finally {
    if (seq === routeSeq) section.removeAttribute('aria-busy');
  }
}

function show(view) {
  for (const s of document.querySelectorAll('section.view')) s.hidden = s.dataset.view !== view;
}

function selectProject(pid) {
  if (String(pid) === String(state.projectId)) return;
  state.projectId = pid == null ? null : String(pid);
  state.project = null;
  if (pid == null) sessionStorage.removeItem('neuralforge.project');
  else sessionStorage.setItem('neuralforge.project', state.projectId);
  for (const v of Object.values(VIEWS)) if (v.reset) v.reset();
  updateNav();
}

function updateNav() {
  for (const a of document.querySelectorAll('.tabs a')) {
    const v = a.dataset.view;
    a.href = PROJECT_VIEWS.includes(v) && state.projectId != null
      ? `#/p/${encodeURIComponent(state.projectId)}/${v}` : `#/${v}`;
  }
  const sel = tid('project-select');
  sel.replaceChildren(h('option', { value: '' }, state.projects.length ? '— pick a project —' : '— no projects —'));
  for (const p of state.projects) sel.append(h('option', { value: String(p.id) }, p.name));
  sel.value = state.projectId != null && state.projects.some((p) => String(p.id) === state.projectId) ? state.projectId : '';
}

async function loadStatus() {
  state.status = await api('GET', '/api/status');
  const s = state.status || {};
  tid('server-info').textContent = `${s.version || ''}${s.active_runs ? ` · ${s.active_runs} active run${s.active_runs === 1 ? '' : 's'}` : ''}`;
}

async function loadProjects() {
  state.projects = (await api('GET', '/api/projects')) || [];
  updateNav();
}

async function loadProject() {
  const p = await api('GET', projPath(state.projectId));
  state.project = p;
  const i = state.projects.findIndex((q) => String(q.id) === String(p.id));
  if (i >= 0) state.projects[i] = p; else state.projects.push(p);
  updateNav();
  return p;
}

async function loadRuns() {
  return (await api('GET', `${projPath(state.projectId)}/runs`)) || [];
}

// A base model in D/models: {name, kind: 'llama2c'|'hf'|'gguf', has_tokenizer} (GET /api/status).
const MODEL_KINDS = { llama2c: 'llama2.c file', hf: 'Hugging Face directory', gguf: 'GGUF file' };
const modelInfo = (name) => ((state.status && state.status.models) || []).find((m) => m.name === name) || null;
// The tokenizer select's value for "the base model's own" (the API's null): no tokenizer name can be empty.
const OWN_TOKENIZER = '';

function fillModelSelect(sel, current) {
  const models = (state.status && state.status.models) || [];
  sel.replaceChildren(h('option', { value: '' }, 'from scratch'));
  for (const m of models) sel.append(h('option', { value: m.name, dataset: { kind: m.kind } }, `${m.name} (${MODEL_KINDS[m.kind] || m.kind})`));
  if (current && !modelInfo(current)) sel.append(h('option', { value: current }, `${current} (missing)`));
  sel.value = current || '';
}

/** The tokenizers a project on `model` may take; `current` null is the model's own (an HF directory's tokenizer.json). */
function fillTokenizerSelect(sel, current, model) {
  const toks = (state.status && state.status.tokenizers) || [];
  const info = model ? modelInfo(model) : null;
  sel.replaceChildren();
  if ((info && info.has_tokenizer) || current === null)
    sel.append(h('option', { value: OWN_TOKENIZER, testid: 'tokenizer-own' }, `the model's own (models/${model || '?'}/tokenizer.json)`));
  sel.append(h('option', { value: 'builtin:bytes' }, 'builtin:bytes (259 byte pieces)'));
  for (const t of toks) sel.append(h('option', { value: t }, t));
  if (current && current !== 'builtin:bytes' && !toks.includes(current)) sel.append(h('option', { value: current }, `${current} (missing)`));
  sel.value = current === null ? OWN_TOKENIZER : current || 'builtin:bytes';
}

/** A new choice of base model: a model with a tokenizer of its own takes it, one without leaves the model's own. */
function syncTokenizerToModel(tokSel, model) {
  const info = model ? modelInfo(model) : null;
  let keep = tokSel.value === OWN_TOKENIZER ? null : tokSel.value;
  if (info && info.has_tokenizer) keep = null;
  else if (keep === null) keep = 'builtin:bytes';
  fillTokenizerSelect(tokSel, keep, model);
}

const tokenizerValue = (sel) => (sel.value === OWN_TOKENIZER ? null : sel.value || 'builtin:bytes');

// ---------------------------------------------------------------- Projects

VIEWS.projects = (() => {
  const form = tid('project-form');
  const err = tid('project-error');
  tid('project-model').addEventListener('change', () => syncTokenizerToModel(tid('project-tokenizer'), tid('project-model').value));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    const name = tid('project-name').value.trim();
    if (!name || name.length > 100) { err.textContent = 'name must be 1 to 100 characters'; return; }
    const model = tid('project-model').value || null;
    const body = { name, model, tokenizer: tokenizerValue(tid('project-tokenizer')) };
    const btn = tid('project-create');
    btn.disabled = true;
    try {
      const p = await api('POST', '/api/projects', body);
      tid('project-name').value = '';
      await loadProjects();
      selectProject(p.id);
      go('config', p.id);
    } catch (ex) {
      err.textContent = ex.message;
    } finally {
      btn.disabled = false;
    }
  });

  function row(p) {
    const nameCell = h('td', { testid: 'project-row-name' },
      h('a', { href: `#/p/${encodeURIComponent(p.id)}/dashboard` }, p.name));
    const renameBtn = h('button', { type: 'button', class: 'secondary', testid: 'project-rename' }, 'Rename');
    const deleteBtn = h('button', { type: 'button', class: 'danger', testid: 'project-delete' }, 'Delete');
    const tr = h('tr', { testid: 'project-row', dataset: { id: String(p.id), name: p.name } },
      nameCell,
      h('td', {}, p.model || 'from scratch'),
      h('td', { testid: 'project-row-tokenizer' }, p.effective_tokenizer || `${p.tokenizer === null ? "the model's own" : p.tokenizer} (unusable)`),
      h('td', {}, `${plural((p.uploads || []).length, 'upload')}, ${plural((p.data || []).length, 'token file')}`),
      h('td', {}, fmtTime(p.created_at)),
      h('td', {}, h('div', { class: 'row-actions' },
        h('a', { class: 'button', href: `#/p/${encodeURIComponent(p.id)}/dashboard`, testid: 'project-open' }, 'Open'),
        renameBtn, deleteBtn)));

    renameBtn.addEventListener('click', () => {
      const input = h('input', { value: p.name, maxlength: 100, testid: 'project-rename-input', 'aria-label': 'New name' });
      const save = async () => {
        const name = input.value.trim();
        if (!name || name.length > 100) { err.textContent = 'name must be 1 to 100 characters'; return; }
        try {
          await api('PATCH', projPath(p.id), { name });
          err.textContent = '';
          await loadProjects();
          render();
        } catch (ex) { err.textContent = ex.message; }
      };
      input.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') { e.preventDefault(); save(); }
        if (e.key === 'Escape') render();
      });
      nameCell.replaceChildren(input,
        h('button', { type: 'button', testid: 'project-rename-save', onclick: save }, 'Save'),
        h('button', { type: 'button', class: 'secondary', onclick: render }, 'Cancel'));
      input.focus();
      input.select();
    });

    let armed = null;
    deleteBtn.addEventListener('click', async () => {
      if (!armed) {  // a second click within 4 s confirms
        deleteBtn.textContent = 'Really delete?';
        deleteBtn.dataset.armed = '1';
        armed = setTimeout(() => { armed = null; deleteBtn.textContent = 'Delete'; delete deleteBtn.dataset.armed; }, 4000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      try {
        await api('DELETE', projPath(p.id));
        err.textContent = '';
        if (String(p.id) === state.projectId) selectProject(null);
        await loadProjects();
        render();
      } catch (ex) {
        err.textContent = ex.message;
        deleteBtn.textContent = 'Delete';
        delete deleteBtn.dataset.armed;
      }
    });
    return tr;
  }

  function render() {
    const tbody = tid('project-list').tBodies[0];
    tbody.replaceChildren(...state.projects.map(row));
    tid('project-empty').hidden = state.projects.length > 0;
  }

  return {
    async enter() {
      await Promise.all([loadStatus(), loadProjects()]);
      const ms = tid('project-model'), ts = tid('project-tokenizer');
      const keepM = ms.value, keepT = ts.options.length ? tokenizerValue(ts) : 'builtin:bytes';
      fillModelSelect(ms, keepM);
      const own = !!(modelInfo(ms.value) && modelInfo(ms.value).has_tokenizer);
      fillTokenizerSelect(ts, keepT === null && !own ? 'builtin:bytes' : keepT, ms.value);
      render();
    },
  };
})();

// ---------------------------------------------------------------- Config

// The training options come from the server (GET /api/options: train's own option table,
// src/train_options.c), so the form shows exactly the options a project may set, with train's
// ranges, defaults and LoRA target names. Filled by loadOptions() before the Config view is built.
let OPTIONS = [];         // the rows the dashboard may set, in train --help order
let SHAPE_KEYS = [], LORA_KEYS = [];
let LORA_NAMES = {};      // target name or alias -> its bit in the mask
let LORA_MASK_MAX = 0;

async function loadOptions() {
  if (OPTIONS.length) return;
  const { options } = await api('GET', '/api/options');
  OPTIONS = options.filter((o) => o.dashboard).map((o) => ({
    ...o,
    type: o.syntax === 'lora_targets' ? 'targets' : o.type === 'float' ? 'num' : o.type,
    // what an empty field means: a dashboard run's own default (serve passes it), else train's
    def: o.dashboard_default != null ? o.dashboard_default : o.default != null ? o.default : o.default_text,
  }));
  SHAPE_KEYS = OPTIONS.filter((o) => o.group === 'shape').map((o) => o.key);
  LORA_KEYS = OPTIONS.filter((o) => o.group === 'lora').map((o) => o.key);
  const targets = (options.find((o) => o.syntax === 'lora_targets') || {}).targets || [];
  LORA_NAMES = {};
  for (const t of targets) { LORA_NAMES[t.name] = t.bit; LORA_NAMES[t.alias] = t.bit; }
  LORA_MASK_MAX = targets.reduce((m, t) => m | t.bit, 0);
}

function fmtRange(o) {
  const f = (x) => (x >= 1e6 && Number.isInteger(x) ? (x === 9007199254740991 ? '2⁵³−1' : x.toExponential(0).replace('e+', 'e')) : String(x));
  return `${f(o.min)} … ${f(o.max)}`;
}

/** Parses one text field: {value} (undefined when empty) or {error}. */
function parseField(o, text) {
  const s = text.trim();
  if (s === '') return { value: undefined };
  if (o.type === 'int') {
    if (!/^[+-]?\d+$/.test(s)) return { error: `${o.key} must be an integer, got "${s}"` };
    const v = Number(s);
    if (v < o.min || v > o.max) return { error: `${o.key} must be between ${o.min} and ${o.max}, got ${s}` };
    return { value: v };
  }
  if (o.type === 'num') {
    if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) return { error: `${o.key} must be a number, got "${s}"` };
    const v = Number(s);
    if (!(v >= o.min && v <= o.max)) return { error: `${o.key} must be between ${o.min} and ${o.max}, got ${s}` };
    return { value: v };
  }
  if (o.type === 'choice') {
    if (!o.choices.includes(s)) return { error: `${o.key} must be one of ${o.choices.join(', ')}` };
    return { value: s };
  }
  if (o.type === 'targets') {
    if (/^\d+$/.test(s)) {
      const v = Number(s);
      if (v < 1 || v > LORA_MASK_MAX) return { error: `lora_targets as a mask must be between 1 and ${LORA_MASK_MAX}, got ${s}` };
      return { value: s };
    }
    let mask = 0;
    for (const name of s.split(',').map((x) => x.trim())) {
      const bit = LORA_NAMES[name];
      if (!bit) return { error: `lora_targets: unknown projection "${name}"` };
      if (mask & bit) return { error: `lora_targets: projection "${name}" named twice` };
      mask |= bit;
    }
    return { value: s.split(',').map((x) => x.trim()).join(',') };
  }
  return { value: s };
}

/** Cross-field rules of train (README "Rules between the flags"); returns {key: message}. */
function crossCheck(opts, fromScratch) {
  const errs = {};
  const get = (k) => (opts[k] !== undefined ? opts[k] : OPTIONS.find((o) => o.key === k).def);
  if (get('lr_min') > get('lr')) errs.lr_min = `lr_min (${get('lr_min')}) may not be above lr (${get('lr')})`;
  if (fromScratch) {
    const dim = get('dim'), nh = get('n_heads'), nkv = get('n_kv_heads');
    if (dim % nh !== 0) errs.n_heads = `dim (${dim}) must be a multiple of n_heads (${nh})`;
    else if ((dim / nh) % 2 !== 0) errs.n_heads = `the head size dim / n_heads (${dim / nh}) must be even`;
    if (nkv > 0 && nh % nkv !== 0) errs.n_kv_heads = `n_heads (${nh}) must be a multiple of n_kv_heads (${nkv})`;
    if (get('seq') > get('seq_len')) errs.seq = `seq (${get('seq')}) may not be above the model's seq_len (${get('seq_len')})`;
  } else {
    const rank = opts.lora_rank || 0;
    if (!rank) {
      if (opts.lora_alpha !== undefined) errs.lora_alpha = 'lora_alpha needs lora_rank above 0';
      if (opts.lora_targets !== undefined) errs.lora_targets = 'lora_targets needs lora_rank above 0';
      if (opts.lora_dropout > 0) errs.lora_dropout = 'lora_dropout needs lora_rank above 0';
      if (opts.lora_train_norms) errs.lora_train_norms = 'lora_train_norms needs lora_rank above 0';
    }
  }
  return errs;
}

VIEWS.config = (() => {
  const form = tid('config-form');
  const inputs = {};
  const errSpans = {};
  let formReady = null;  // the promise of the fields, built once

  /** One field per option, in its group's fieldset (once the options have come from the server). */
  function buildFields() {
    for (const o of OPTIONS) {
      const grid = form.querySelector(`[data-fields="${o.group}"]`);
      let input;
      if (o.type === 'choice') {
        input = h('select', { name: o.key, testid: `opt-${o.key}` },
          h('option', { value: '' }, `default (${o.def})`), ...o.choices.map((c) => h('option', { value: c }, c)));
      } else if (o.type === 'flag') {
        input = h('input', { type: 'checkbox', name: o.key, testid: `opt-${o.key}` });
      } else {
        input = h('input', {
          name: o.key, testid: `opt-${o.key}`, placeholder: String(o.def), autocomplete: 'off',
          inputmode: o.type === 'int' ? 'numeric' : o.type === 'num' ? 'decimal' : 'text',
        });
      }
      inputs[o.key] = input;
      errSpans[o.key] = h('span', { class: 'field-error', testid: `opt-${o.key}-error` });
      grid.append(h('label', { class: o.type === 'flag' ? 'field field-flag' : 'field', dataset: { key: o.key } },
        h('span', { class: 'field-name' }, o.key),
        input,
        h('small', { class: 'hint', testid: `opt-${o.key}-hint` }, o.min !== undefined ? `${fmtRange(o)} · ${o.help}` : o.help),
        errSpans[o.key]));
      input.addEventListener('input', () => { tid('config-saved').hidden = true; validate(); });
      input.addEventListener('change', () => validate());
    }
  }
  const modelSel = tid('config-model'), tokSel = tid('config-tokenizer');
  modelSel.addEventListener('change', () => { syncTokenizerToModel(tokSel, modelSel.value); syncGroups(); validate(); });
  tokSel.addEventListener('change', () => { tid('config-saved').hidden = true; });

  function fromScratch() { return !modelSel.value; }

  function syncGroups() {
    form.querySelector('[data-group="shape"]').hidden = !fromScratch();
    form.querySelector('[data-group="lora"]').hidden = fromScratch();
  }

  /** The options the form holds, and the client-side errors. */
  function collect() {
    const opts = {}, errs = {};
    const skip = new Set(fromScratch() ? LORA_KEYS : SHAPE_KEYS);
    for (const o of OPTIONS) {
      if (skip.has(o.key)) continue;
      if (o.type === 'flag') {
        if (inputs[o.key].checked) opts[o.key] = true;
        continue;
      }
      const r = parseField(o, inputs[o.key].value);
      if (r.error) errs[o.key] = r.error;
      else if (r.value !== undefined) opts[o.key] = r.value;
    }
    const cross = crossCheck(opts, fromScratch());
    for (const [k, m] of Object.entries(cross)) if (!errs[k]) errs[k] = m;
    return { opts, errs };
  }

  function validate() {
    const { errs } = collect();
    for (const o of OPTIONS) {
      errSpans[o.key].textContent = errs[o.key] || '';
      inputs[o.key].classList.toggle('invalid', !!errs[o.key]);
    }
    const n = Object.keys(errs).length;
    tid('config-client-error').textContent = n ? `${n} field${n > 1 ? 's' : ''} to fix before saving.` : '';
    return n === 0;
  }

  function load(p) {
    tid('config-project').textContent = p.name;
    fillModelSelect(modelSel, p.model);
    fillTokenizerSelect(tokSel, p.tokenizer, p.model);
    const opts = p.options || {};
    for (const o of OPTIONS) {
      if (o.type === 'flag') inputs[o.key].checked = opts[o.key] === true;
      else inputs[o.key].value = opts[o.key] == null ? '' : String(opts[o.key]);
    }
    tid('config-server-error').textContent = '';
    tid('config-saved').hidden = true;
    syncGroups();
    validate();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    tid('config-server-error').textContent = '';
    tid('config-saved').hidden = true;
    if (!validate()) return;
    const { opts } = collect();
    const body = { model: modelSel.value || null, tokenizer: tokenizerValue(tokSel), options: opts };
    const btn = tid('config-save');
    btn.disabled = true;
    try {
      const p = await api('PATCH', projPath(state.projectId), body);
      if (p && p.id != null) state.project = p;
      load(state.project);
      tid('config-saved').hidden = false;
    } catch (ex) {
      tid('config-server-error').textContent = ex.message;
      // Point at the field the server's message names.
      for (const o of OPTIONS) {
        const names = [o.key, o.key.replace(/_/g, '-')];
        if (names.some((n) => new RegExp(`(^|[^a-z_-])(--)?${n}([^a-z_-]|$)`).test(ex.message))) {
          errSpans[o.key].textContent = ex.message;
          inputs[o.key].classList.add('invalid');
        }
      }
    } finally {
      btn.disabled = false;
    }
  });
  tid('config-reset').addEventListener('click', () => state.project && load(state.project));

  return {
    async enter() {
      if (!state.status) await loadStatus();
      formReady = formReady || loadOptions().then(buildFields).catch((e) => { formReady = null; throw e; });
      await formReady;
      load(state.project);
    },
  };
})();

// ---------------------------------------------------------------- Dashboard

const EMA_BETA = 0.95;

/** Everything the dashboard shows about one train run, built from its messages. */
class TrainState {
  constructor(run) {
    this.run = run;
    this.steps = []; this.loss = []; this.ema = []; this.emaRaw = [];
    this.lr = []; this.tok = []; this.gflops = []; this.ms = [];
    this.val = new Map();
    this.total = null;
    this.best = null;
    this.lastVal = null;
    this.checkpoints = 0;
    this.lastCkpt = null;
    this.restarts = 0;
    this.error = null;
    this.done = null;
    this.init = null;
    // One per process (init): its step time, and done's total_time_s once it ends.
    this.segments = [];
  }

  add(m) {
    switch (m.type) {
      case 'init':
        this.init = m;
        this.total = m.total_steps;
        this.done = null;
        this.error = null;
        this.segments.push({ stepMs: 0, time: null });
        break;
      case 'step': {
        // A resume from an older checkpoint repeats steps: drop what follows it.
        if (this.steps.length && this.steps[this.steps.length - 1] >= m.step) {
          while (this.steps.length && this.steps[this.steps.length - 1] >= m.step) {
            for (const a of [this.steps, this.loss, this.ema, this.emaRaw, this.lr, this.tok, this.gflops, this.ms]) a.pop();
          }
          const kept = this.loss.filter((x) => x != null);
          this.best = kept.length ? Math.min(...kept) : null;
        }
        for (const k of [...this.val.keys()]) if (k >= m.step) this.val.delete(k);
        const loss = Number.isFinite(m.loss) ? m.loss : null;
        const prev = this.emaRaw.length ? this.emaRaw[this.emaRaw.length - 1] : 0;
        const raw = loss == null ? prev : EMA_BETA * prev + (1 - EMA_BETA) * loss;
        this.steps.push(m.step);
        this.loss.push(loss);
        this.emaRaw.push(raw);
        const n = this.emaRaw.length;
        this.ema.push(raw / (1 - EMA_BETA ** n));  // bias-corrected
        this.lr.push(m.lr);
        this.tok.push(m.tok_s);
        this.gflops.push(Number.isFinite(m.tflops) ? m.tflops * 1000 : null);
        this.ms.push(m.ms);
        if (!this.segments.length) this.segments.push({ stepMs: 0, time: null });
        if (Number.isFinite(m.ms)) this.segments[this.segments.length - 1].stepMs += m.ms;
        if (m.total) this.total = m.total;
        if (loss != null && (this.best == null || loss < this.best)) this.best = loss;
        break;
      }
      case 'val':
        this.val.set(m.step, m.val_loss);
        this.lastVal = m;
        break;
      case 'checkpoint':
        this.checkpoints++;
        this.lastCkpt = m;
        break;
      case 'restart':
        this.restarts++;
        break;
      case 'done':
        this.done = m;
        if (this.segments.length && Number.isFinite(m.total_time_s)) this.segments[this.segments.length - 1].time = m.total_time_s;
        break;
      case 'error':
        this.error = m;
        break;
      default:
        break;
    }
  }

  get step() { return this.steps.length ? this.steps[this.steps.length - 1] : (this.init ? this.init.resume_step : null); }
  last(a) { return a.length ? a[a.length - 1] : null; }

  /** Mean of the last n entries of a series. */
  recentMean(a, n = 20) {
    const s = a.slice(-n).filter(Number.isFinite);
    return s.length ? s.reduce((x, y) => x + y, 0) / s.length : null;
  }
}

VIEWS.dashboard = (() => {
  const d = { run: null, st: null, stream: null, timer: null, poll: null, renderQueued: false, visible: false };
  const errEl = tid('dashboard-error');

  const lossChart = new Chart(tid('chart-loss'), () => ({
    scales: { x: { time: false } },
    axes: [stepAxis(), axis({ label: 'loss' })],
    series: [
      { label: 'step' },
      { label: 'loss', stroke: 'rgba(37,99,235,0.35)', width: 1, points: { show: false } },
      { label: 'EMA', stroke: '#1d4ed8', width: 2, points: { show: false } },
      { label: 'val loss', stroke: '#dc2626', width: 1.5, spanGaps: true, points: { show: true, size: 7, fill: '#dc2626' } },
    ],
  }));
  const speedChart = new Chart(tid('chart-speed'), () => ({
    scales: { x: { time: false }, tok: {}, gf: {} },
    axes: [stepAxis(), axis({ label: 'tokens/s', scale: 'tok', values: compactValues, size: 60 }),
      axis({ label: 'GFLOP/s', scale: 'gf', side: 1, grid: { show: false }, values: compactValues, size: 60 })],
    series: [
      { label: 'step' },
      { label: 'tokens/s', stroke: '#16a34a', width: 1.5, scale: 'tok', points: { show: false } },
      { label: 'GFLOP/s', stroke: '#9333ea', width: 1.5, scale: 'gf', points: { show: false } },
    ],
  }), 200);

  tid('loss-window').addEventListener('change', () => renderCharts());
  window.addEventListener('resize', () => { if (d.visible) { lossChart.draw(); speedChart.draw(); } });

  function follow(run) {
    if (d.run && String(d.run.id) === String(run.id) && d.stream) {
      d.run = run;
      d.st.run = run;
      if (isActive(run)) d.stream.reopen();
      render();
      return;
    }
    if (d.stream) d.stream.close();
    d.run = run;
    d.st = new TrainState(run);
    d.stream = new RunStream(run, {
      onMessage: (m) => { d.st.add(m); queueRender(); },
      onStatus: (r) => { d.run = r; d.st.run = r; queueRender(); },
      onEnd: (r) => { d.run = r; d.st.run = r; queueRender(); },
    });
    d.stream.open();
    render();
  }

  function queueRender() {
    if (d.renderQueued) return;
    d.renderQueued = true;
    setTimeout(() => { d.renderQueued = false; render(); }, 150);
  }

  function setMetric(name, text) {
    tid(`metric-${name}`).textContent = text;
  }

  function bannerText(run, st) {
    const step = st.step, total = st.total;
    const at = step != null ? ` at step ${step}${total ? ` of ${total}` : ''}` : '';
    switch (run.status) {
      case 'queued': return ['Queued', 'Queued: another training holds the slot (one at a time by default: serve --max-trainings); this one starts by itself when it ends. Stop cancels it.'];
      case 'starting': return ['Starting', 'Starting…'];
      case 'running': return ['Training', `Training: step ${step ?? 0}${total ? ` of ${total}` : ''}`];
      case 'restarting': return ['Restarting', `Restarting${at} (self-restart from the checkpoint)…`];
      case 'stopped': {
        const c = run.checkpoint || st.lastCkpt;
        return ['Stopped', `Stopped${at}.${c ? ` Checkpoint at step ${c.step}: Resume to continue.` : ' No checkpoint was written.'}`];
      }
      case 'interrupted': {
        const c = run.checkpoint || st.lastCkpt;
        return ['Interrupted', `Interrupted${at}: the training process went away.${c && run.resumable !== false ? ` Resume goes on from the checkpoint at step ${c.step}.` : ''}`];
      }
      case 'done': {
        const f = run.final || st.done || {};
        return ['Done', `Done: ${f.total_steps ?? step ?? '?'} steps, final loss ${fmtNum(f.final_loss ?? st.last(st.loss))}${f.best_val_loss != null ? `, best val loss ${fmtNum(f.best_val_loss)}` : ''}.`];
      }
      case 'error': {
        const msg = run.error || (st.error && st.error.message) || `exit code ${run.exit_code}`;
        return ['Error', `Error: ${msg}`];
      }
      default: return [run.status, String(run.status)];
    }
  }

  function render() {
    const run = d.run, st = d.st;
    const banner = tid('status-banner');
    const start = tid('btn-start'), stop = tid('btn-stop'), resume = tid('btn-resume');
    if (!run) {
      banner.dataset.status = 'none';
      tid('status-text').textContent = 'No training run yet: add data (Data), then Start.';
      tid('dashboard-run').textContent = '';
      start.disabled = false; stop.disabled = true; resume.disabled = true;
      for (const m of ['step', 'loss', 'best-loss', 'val-loss', 'lr', 'tok-s', 'ms', 'eta', 'elapsed', 'checkpoints', 'restarts']) setMetric(m, '–');
      lossChart.set([[], [], [], []]);
      speedChart.set([[], [], []]);
      return;
    }
    const active = isActive(run);
    banner.dataset.status = run.status;
    const [label, text] = bannerText(run, st);
    banner.dataset.label = label;
    tid('status-text').textContent = text;
    // a run of several data-parallel processes (train --processes, or mpirun): init's world size
    const world = st.init && st.init.world_size > 1 ? st.init.world_size : 0;
    tid('dashboard-run').textContent = `run ${run.id}${world ? ` · ${world} processes` : ''}`;
    start.disabled = active;
    stop.disabled = !active;
    resume.disabled = active || !run.resumable;

    const step = st.step;
    setMetric('step', step == null ? '–' : `${step}${st.total ? ` / ${st.total}` : ''}`);
    setMetric('loss', fmtNum(st.last(st.loss)));
    setMetric('best-loss', fmtNum(st.best));
    setMetric('val-loss', st.lastVal ? fmtNum(st.lastVal.val_loss) : '–');
    setMetric('lr', fmtNum(st.last(st.lr), 3));
    const tok = st.recentMean(st.tok, 10);
    setMetric('tok-s', tok == null ? '–' : Math.round(tok).toLocaleString('en-US'));
    setMetric('ms', fmtNum(st.recentMean(st.ms, 10), 3));
    const ms = st.recentMean(st.ms, 50);
    setMetric('eta', active && ms != null && st.total && step != null ? fmtDuration(((st.total - step) * ms) / 1000)
      : run.status === 'done' ? 'done' : '–');
    setMetric('elapsed', fmtDuration(elapsed(run, st)));
    const ck = st.lastCkpt || run.checkpoint;
    setMetric('checkpoints', `${Math.max(st.checkpoints, run.checkpoint ? 1 : 0)}${ck ? ` (step ${ck.step})` : ''}`);
    setMetric('restarts', String(st.restarts));
    renderCharts();
  }

  /**
   * Seconds of training over every process of the run (resumes included):
   * each ended process's done.total_time_s (the sum of its step times if it
   * vanished without one), and the running one's wall time since started_at.
   */
  function elapsed(run, st) {
    if (!st.segments.length) return null;
    let total = 0;
    st.segments.forEach((seg, i) => {
      let t = seg.time != null ? seg.time : seg.stepMs / 1000;
      if (i === st.segments.length - 1 && isActive(run) && seg.time == null) {
        const t0 = parseTime(run.started_at);
        if (t0) t = Math.max(t, (Date.now() - t0) / 1000);
      }
      total += t;
    });
    return total;
  }

  function renderCharts() {
    const st = d.st;
    if (!st) return;
    const win = Number(tid('loss-window').value) || 0;
    let i0 = 0;
    if (win > 0 && st.steps.length) {
      const last = st.steps[st.steps.length - 1];
      while (i0 < st.steps.length && st.steps[i0] <= last - win) i0++;
    }
    const xs = st.steps.slice(i0);
    const vals = xs.map((s) => (st.val.has(s) ? st.val.get(s) : null));
    lossChart.set([xs, st.loss.slice(i0), st.ema.slice(i0), vals]);
    tid('chart-loss').dataset.valPoints = String(vals.filter((v) => v != null).length);
    speedChart.set([xs, st.tok.slice(i0), st.gflops.slice(i0)]);
  }

  async function refresh() {
    const runs = await loadRuns();
    const train = runs.find((r) => r.kind === 'train');
    if (train) follow(train);
    else { if (d.stream) d.stream.close(); d.stream = null; d.run = null; d.st = null; render(); }
  }

  async function action(btn, fn) {
    errEl.textContent = '';
    btn.disabled = true;
    try {
      await fn();
    } catch (e) {
      errEl.textContent = e.message;
    } finally {
      render();
    }
  }

  tid('btn-start').addEventListener('click', (e) => action(e.currentTarget, async () => {
    const run = await api('POST', `${projPath(state.projectId)}/train`);
    follow(run);
  }));
  tid('btn-stop').addEventListener('click', (e) => action(e.currentTarget, async () => {
    if (!d.run) return;
    const run = await api('POST', `${runPath(d.run.id)}/stop`);
    if (run && run.id != null) { d.run = run; d.st.run = run; }
  }));
  tid('btn-resume').addEventListener('click', (e) => action(e.currentTarget, async () => {
    if (!d.run) return;
    const run = await api('POST', `${runPath(d.run.id)}/resume`);
    follow(run && run.id != null ? run : { ...d.run, status: 'starting' });
  }));

  return {
    async enter() {
      d.visible = true;
      errEl.textContent = '';
      render();
      await refresh();
      lossChart.draw();
      speedChart.draw();
      clearInterval(d.timer);
      d.timer = setInterval(() => { if (d.run && isActive(d.run)) render(); }, 1000);
      clearInterval(d.poll);
      // Notice runs started elsewhere (another tab, the API) while idle.
      d.poll = setInterval(() => { if (!d.run || !isActive(d.run)) refresh().catch(() => {}); }, 5000);
    },
    leave() {
      d.visible = false;
      clearInterval(d.timer);
      clearInterval(d.poll);
    },
    reset() {
      if (d.stream) d.stream.close();
      d.stream = null; d.run = null; d.st = null;
      lossChart.destroy(); speedChart.destroy();
    },
  };
})();

// ---------------------------------------------------------------- Generate

VIEWS.generate = (() => {
  const form = tid('gen-form');
  const out = tid('gen-output');
  const stats = tid('gen-stats');
  const errEl = tid('gen-error');
  const log = tid('chat-log');
  const input = tid('chat-input');
  const g = { stream: null, run: null, tokens: 0, t0: null };
  // The conversation: the turns whose reply has come, as the API takes them ({role, content}). A turn
  // being answered is only on screen; a failed one goes back to the message box.
  const chat = { turns: [] };
  const FIELDS = [
    { key: 'temperature', testid: 'gen-temperature', type: 'num', min: 0, max: 100 },
    { key: 'top_p', testid: 'gen-top-p', type: 'num', min: 1e-6, max: 1 },
    { key: 'top_k', testid: 'gen-top-k', type: 'int', min: 0, max: 4194304 },
    { key: 'max_tokens', testid: 'gen-max-tokens', type: 'int', min: 1, max: 1048576 },
  ];

  function syncSources() {
    const p = state.project;
    const sel = tid('gen-source');
    const hasModel = !!(p && p.model);
    const lora = hasModel && p.options && p.options.lora_rank > 0;
    sel.querySelector('option[value="base"]').disabled = !hasModel;
    sel.querySelector('option[value="lora"]').disabled = !lora;
    if (sel.selectedOptions[0] && sel.selectedOptions[0].disabled) sel.value = 'checkpoint';
  }

  const chatMode = () => tid('gen-mode-chat').checked;

  function syncMode() {
    const on = chatMode();
    tid('gen-prompt-field').hidden = on;
    tid('chat').hidden = !on;
    tid('chat-clear').hidden = !on;
    out.hidden = on;
    tid('gen-run').textContent = on ? 'Send' : 'Generate';
    errEl.textContent = '';
  }
  for (const radio of form.querySelectorAll('input[name="mode"]')) radio.addEventListener('change', syncMode);

  function turnEl(role, text) {
    return h('li', { class: `chat-turn ${role}`, testid: 'chat-turn', dataset: { role } },
      h('div', { class: 'chat-role' }, role === 'user' ? 'You' : 'Assistant'),
      h('div', { class: 'chat-text', testid: 'chat-text' }, text));
  }

  function renderChat() {
    log.replaceChildren(...chat.turns.map((t) => turnEl(t.role, t.content)));
    tid('chat-empty').hidden = chat.turns.length > 0;
  }

  function setStats(done) {
    if (done) {
      stats.textContent = `${done.tokens} tokens · ${fmtNum(done.tok_s, 4)} tok/s · first token ${fmtNum(done.first_token_ms, 3)} ms · stop: ${done.stop_reason} · seed ${done.seed}`;
      stats.dataset.done = '1';
      return;
    }
    const secs = g.t0 == null ? 0 : (performance.now() - g.t0) / 1000;
    const rate = g.tokens > 1 && secs > 0 ? (g.tokens - 1) / secs : null;
    stats.textContent = `${g.tokens} tokens${rate ? ` · ${fmtNum(rate, 4)} tok/s` : ''} · generating…`;
  }

  function busy(on) {
    tid('gen-run').disabled = on;
    tid('gen-stop').disabled = !on;
    tid('chat-clear').disabled = on;
  }

  /** The sampling fields and source as a request body, or null when a field is invalid (marked at it). */
  function readParams() {
    const body = { source: tid('gen-source').value };
    let bad = false;
    for (const f of FIELDS) {
      const el = tid(f.testid);
      const span = el.parentElement.querySelector('.field-error');
      const r = parseField({ ...f, key: f.key }, el.value);
      span.textContent = r.error || '';
      el.classList.toggle('invalid', !!r.error);
      if (r.error) bad = true;
      else if (r.value !== undefined) body[f.key] = r.value;
    }
    return bad ? null : body;
  }

  /** Starts a generate run and follows it: onText(text) for each token, then onFinish(run), with null when
   * the server refused the request. Text and chat runs stream alike. */
  async function runGenerate(body, onText, onFinish) {
    if (g.stream) g.stream.close();
    busy(true);
    delete stats.dataset.done;
    stats.textContent = 'starting…';
    g.tokens = 0;
    g.t0 = null;
    let run;
    try {
      run = await api('POST', `${projPath(state.projectId)}/generate`, body);
    } catch (ex) {
      errEl.textContent = ex.message;
      stats.textContent = '';
      busy(false);
      onFinish(null);
      return;
    }
    g.run = run;
    let finished = false;
    const finish = (r) => {
      busy(false);
      if (!finished) { finished = true; onFinish(r); }
    };
    g.stream = new RunStream(run, {
      onMessage: (m) => {
        if (m.type === 'token') {
          if (g.t0 == null) g.t0 = performance.now();
          g.tokens++;
          out.dataset.tokens = String(g.tokens);
          if (m.text) onText(m.text);
          setStats(null);
        } else if (m.type === 'generate_done') {
          setStats(m);
        } else if (m.type === 'error') {
          errEl.textContent = m.message;
        }
      },
      onStatus: (r) => {
        g.run = r;
        if (r.status === 'queued') stats.textContent = 'queued: waits for a free slot';
        if (!isActive(r)) {
          if (r.status === 'error' && !errEl.textContent) errEl.textContent = r.error || `generate failed (exit code ${r.exit_code})`;
          if (r.status === 'error' && !stats.dataset.done) stats.textContent = g.tokens ? `${g.tokens} tokens · failed` : '';
          if (r.status === 'stopped' && !stats.dataset.done) stats.textContent = `${g.tokens} tokens · stopped`;
          finish(r);
        }
      },
      onEnd: (r) => {
        if (r.final && r.final.type === 'generate_done' && !stats.dataset.done) setStats(r.final);
        finish(r);
      },
    });
    g.stream.open();
  }

  function generateText(body) {
    body.prompt = tid('gen-prompt').value;
    out.replaceChildren(h('span', { class: 'prompt' }, body.prompt));
    out.dataset.tokens = '0';
    const gen = h('span', { class: 'generated', testid: 'gen-text' });
    out.append(gen);
    runGenerate(body, (text) => gen.append(text), () => {});
  }

  /** One chat turn: the user's message and the reply to the whole conversation (generate --chat). */
  function sendTurn(body) {
    const message = input.value;
    if (!message.trim()) { errEl.textContent = 'type a message first'; return; }
    const user = { role: 'user', content: message };
    body.messages = [...chat.turns, user];
    const system = tid('chat-system').value;
    if (system.trim()) body.system = system;
    input.value = '';
    const replyEl = turnEl('assistant', '');
    replyEl.dataset.pending = '1';
    log.append(turnEl('user', message), replyEl);
    tid('chat-empty').hidden = true;
    let reply = '';
    runGenerate(body, (text) => {
      reply += text;
      replyEl.querySelector('.chat-text').append(text);
    }, (run) => {
      const answered = run && (run.status === 'done' || run.status === 'stopped') && reply.length > 0;
      if (answered) chat.turns.push(user, { role: 'assistant', content: reply });
      else if (!input.value) input.value = message;  // not answered: the message goes back to the box
      renderChat();
    });
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    errEl.textContent = '';
    if (!tid('gen-stop').disabled) return;  // a run is going
    const body = readParams();
    if (!body) return;
    if (chatMode()) sendTurn(body);
    else generateText(body);
  });

  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  tid('chat-clear').addEventListener('click', () => {
    chat.turns = [];
    renderChat();
    stats.textContent = '';
    errEl.textContent = '';
  });

  tid('gen-stop').addEventListener('click', async () => {
    if (!g.run) return;
    try { await api('POST', `${runPath(g.run.id)}/stop`); } catch (e) { errEl.textContent = e.message; }
  });

  return {
    async enter() { syncSources(); syncMode(); },
    reset() {
      if (g.stream) g.stream.close();
      g.stream = null; g.run = null;
      out.replaceChildren();
      chat.turns = [];
      renderChat();
      stats.textContent = '';
      errEl.textContent = '';
      busy(false);
    },
  };
})();

// ---------------------------------------------------------------- Data

const MAX_UPLOAD = 64 * 1024 * 1024;

VIEWS.data = (() => {
  const errEl = tid('upload-error');
  const progress = tid('upload-progress');
  const watching = new Map();   // upload name -> {run, stream}

  function uploadOf(run) {
    return basename(argOf(run, '--input')) || basename(run.final && run.final.input);
  }

  function statusCell(name) {
    const w = watching.get(name);
    const cell = h('td', { testid: 'tokenize-status' });
    if (!w) return cell;
    const r = w.run;
    cell.dataset.status = r.status;
    if (isActive(r)) cell.append(h('progress', {}), ' tokenizing…');
    else if (r.status === 'done') cell.append(`done: ${r.final && r.final.tokens != null ? r.final.tokens.toLocaleString('en-US') : '?'} tokens`);
    else if (r.status === 'error') cell.append(`error: ${r.error || 'exit code ' + r.exit_code}`);
    else cell.append(r.status);
    return cell;
  }

  function render() {
    const p = state.project;
    const uploads = (p && p.uploads) || [];
    const data = (p && p.data) || [];
    tid('uploads-list').tBodies[0].replaceChildren(...uploads.map((u) => {
      const w = watching.get(u.name);
      return h('tr', { testid: 'upload-row', dataset: { name: u.name } },
        h('td', {}, u.name),
        h('td', {}, fmtBytes(u.bytes)),
        h('td', {}, h('button', {
          type: 'button', testid: 'tokenize-btn', disabled: !!(w && isActive(w.run)),
          onclick: () => tokenize(u.name),
        }, 'Tokenize')),
        statusCell(u.name));
    }));
    tid('uploads-empty').hidden = uploads.length > 0;
    tid('data-list').tBodies[0].replaceChildren(...data.map((f) =>
      h('tr', { testid: 'data-row', dataset: { name: f.name } },
        h('td', {}, f.name),
        h('td', { testid: 'data-tokens' }, f.tokens == null ? '–' : Number(f.tokens).toLocaleString('en-US')))));
    tid('data-empty').hidden = data.length > 0;
  }

  function watch(name, run) {
    const old = watching.get(name);
    if (old && old.stream) old.stream.close();
    const w = { run, stream: null };
    watching.set(name, w);
    if (isActive(run)) {
      w.stream = new RunStream(run, {
        onStatus: (r) => { w.run = r; render(); },
        onEnd: async (r) => {
          w.run = r;
          try { await loadProject(); } catch { /* shown elsewhere */ }
          if (state.view === 'data') render();
        },
      });
      w.stream.open();
    }
  }

  async function tokenize(name) {
    errEl.textContent = '';
    try {
      const run = await api('POST', `${projPath(state.projectId)}/tokenize`, { upload: name });
      watch(name, run);
    } catch (e) {
      errEl.textContent = e.message;
    }
    render();
  }

  /** A plain name the server accepts: letters, digits, . _ -, not starting with '.'. */
  function plainName(name) {
    return name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '');
  }

  tid('upload-form').addEventListener('submit', (e) => {
    e.preventDefault();
    errEl.textContent = '';
    const file = tid('upload-input').files[0];
    if (!file) { errEl.textContent = 'choose a .txt, .md or .jsonl file first'; return; }
    const name = plainName(file.name);
    if (!/\.(txt|md|jsonl)$/i.test(name)) { errEl.textContent = `${file.name}: only .txt, .md and .jsonl files can be uploaded`; return; }
    if (file.size > MAX_UPLOAD) { errEl.textContent = `${file.name} is ${fmtBytes(file.size)}: the limit is 64 MiB`; return; }
    if (file.size === 0) { errEl.textContent = `${file.name} is empty`; return; }
    // XMLHttpRequest rather than fetch, for the upload's progress events.
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `${projPath(state.projectId)}/uploads?name=${encodeURIComponent(name)}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    progress.hidden = false;
    progress.value = 0;
    tid('upload-button').disabled = true;
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) progress.value = ev.loaded / ev.total; };
    const finish = async () => {
      progress.hidden = true;
      tid('upload-button').disabled = false;
    };
    xhr.onerror = () => { finish(); errEl.textContent = 'upload failed: cannot reach the server'; };
    xhr.onload = async () => {
      finish();
      if (xhr.status === 401) { showAuthError(); errEl.textContent = 'not authorized'; return; }
      if (xhr.status < 200 || xhr.status >= 300) {
        let msg = `${xhr.status} ${xhr.statusText}`;
        try { msg = JSON.parse(xhr.responseText).error || msg; } catch { /* not JSON */ }
        errEl.textContent = xhr.status === 413 ? `too large: ${msg}` : msg;
        return;
      }
      tid('upload-input').value = '';
      try { await loadProject(); } catch (ex) { errEl.textContent = ex.message; }
      render();
    };
    xhr.send(file);
  });

  return {
    async enter() {
      render();
      const runs = await loadRuns();
      // The newest tokenize run of each upload (runs come newest first).
      const newest = new Map();
      for (const r of runs) {
        const name = r.kind === 'tokenize' ? uploadOf(r) : null;
        if (name && !newest.has(name)) newest.set(name, r);
      }
      for (const [name, r] of newest) {
        const w = watching.get(name);
        if (w && String(w.run.id) === String(r.id) && w.stream && !w.stream.ended && !w.stream.closed) continue;
        watch(name, r);
      }
      render();
    },
    reset() {
      for (const w of watching.values()) if (w.stream) w.stream.close();
      watching.clear();
      errEl.textContent = '';
    },
  };
})();

// ---------------------------------------------------------------- Export

const DIR_FORMATS = new Set(['safetensors', 'peft']);

VIEWS.export = (() => {
  const errEl = tid('export-error');
  const fmtSel = tid('export-format');
  const dtypeSel = tid('export-dtype');
  const streams = new Map();  // run id -> RunStream
  let runs = [];

  fmtSel.addEventListener('change', () => { dtypeSel.disabled = fmtSel.value !== 'gguf'; });
  dtypeSel.disabled = fmtSel.value !== 'gguf';

  function render() {
    tid('export-list').tBodies[0].replaceChildren(...runs.map((r) => {
      const fmt = (r.final && r.final.format) || argOf(r, '--format') || '?';
      const dtype = (r.final && r.final.dtype) || (fmt === 'gguf' ? argOf(r, '--dtype') : null);
      let file = '–';
      if (r.status === 'done' && DIR_FORMATS.has(fmt)) {
        file = h('span', { class: 'hint' }, `a directory: exports/${basename(r.output) || r.id} in the data directory`);
      } else if (r.status === 'done') {
        const name = basename(r.output) || basename(r.final && r.final.output) || `export-${r.id}`;
        file = h('a', { href: `${runPath(r.id)}/download`, download: name, testid: 'export-download' },
          `Download ${name}`);
      } else if (r.status === 'error') {
        file = h('span', { class: 'field-error' }, r.error || `exit code ${r.exit_code}`);
      }
      return h('tr', { testid: 'export-row', dataset: { id: String(r.id), status: r.status } },
        h('td', {}, String(r.id)),
        h('td', {}, dtype ? `${fmt} (${dtype})` : fmt),
        h('td', { testid: 'export-status' }, isActive(r) ? [h('progress', {}), ` ${r.status}`] : r.status),
        h('td', {}, r.final && r.final.bytes != null ? fmtBytes(r.final.bytes) : '–'),
        h('td', {}, fmtTime(r.created_at)),
        h('td', {}, file));
    }));
    tid('export-empty').hidden = runs.length > 0;
  }

  function watch(run) {
    if (!isActive(run) || streams.has(String(run.id))) return;
    const update = (r) => {
      const i = runs.findIndex((x) => String(x.id) === String(r.id));
      if (i >= 0) runs[i] = r; else runs.unshift(r);
      render();
    };
    const s = new RunStream(run, {
      onStatus: update,
      onEnd: (r) => { update(r); streams.delete(String(r.id)); },
    });
    streams.set(String(run.id), s);
    s.open();
  }

  tid('export-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    errEl.textContent = '';
    const body = { format: fmtSel.value };
    if (body.format === 'gguf') body.dtype = dtypeSel.value;
    const btn = tid('export-run');
    btn.disabled = true;
    try {
      const run = await api('POST', `${projPath(state.projectId)}/export`, body);
      runs.unshift(run);
      render();
      watch(run);
    } catch (ex) {
      errEl.textContent = ex.message;
    } finally {
      btn.disabled = false;
    }
  });

  return {
    async enter() {
      runs = (await loadRuns()).filter((r) => r.kind === 'export');
      render();
      for (const r of runs) watch(r);
    },
    reset() {
      for (const s of streams.values()) s.close();
      streams.clear();
      runs = [];
      errEl.textContent = '';
    },
  };
})();

// ---------------------------------------------------------------- History

VIEWS.history = (() => {
  const checked = new Set();
  const curves = new Map();   // run id -> {messages, steps, loss}
  let runs = [];
  let touched = false;
  const chart = new Chart(tid('history-chart'), () => ({
    scales: { x: { time: false } },
    axes: [stepAxis(), axis({ label: 'loss' })],
    series: [{ label: 'step' }, ...runs.filter((r) => checked.has(String(r.id))).map((r, i) => ({
      label: `run ${r.id}`, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true, points: { show: false },
    }))],
  }), 300);
  window.addEventListener('resize', () => { if (state.view === 'history') chart.draw(); });

  async function curve(run) {
    const key = String(run.id);
    const c = curves.get(key);
    if (c && c.messages === run.messages && !isActive(run)) return c;
    const list = (await api('GET', `${runPath(run.id)}/messages?type=step`)) || [];
    const steps = [], loss = [];
    for (const item of list) {
      const m = item && item.message ? item.message : item;
      if (!m || m.type !== 'step') continue;
      while (steps.length && steps[steps.length - 1] >= m.step) { steps.pop(); loss.pop(); }
      steps.push(m.step);
      loss.push(Number.isFinite(m.loss) ? m.loss : null);
    }
    const out = { messages: run.messages, steps, loss };
    curves.set(key, out);
    return out;
  }

  async function drawChart() {
    const sel = runs.filter((r) => checked.has(String(r.id)));
    const cs = await Promise.all(sel.map(curve));
    const xs = [...new Set(cs.flatMap((c) => c.steps))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const ys = cs.map((c) => {
      const y = new Array(xs.length).fill(null);
      c.steps.forEach((s, i) => { y[index.get(s)] = c.loss[i]; });
      return y;
    });
    const el = tid('history-chart');
    el.dataset.series = String(sel.length);
    chart.set([xs, ...ys], sel.map((r) => r.id).join(','));
  }

  function render() {
    const tbody = tid('history-list').tBodies[0];
    tbody.replaceChildren(...runs.map((r) => {
      const isTrain = r.kind === 'train';
      const box = isTrain ? h('input', {
        type: 'checkbox', testid: 'history-check', checked: checked.has(String(r.id)), 'aria-label': `overlay run ${r.id}`,
        onchange: (e) => {
          touched = true;
          if (e.target.checked) checked.add(String(r.id)); else checked.delete(String(r.id));
          drawChart().catch((ex) => showGlobalError(ex.message));
        },
      }) : '';
      const last = r.last || {};
      const fin = r.final || {};
      let note = '';
      if (r.status === 'error') note = r.error || '';
      else if (r.kind === 'export') note = [fin.format || argOf(r, '--format'), fin.dtype].filter(Boolean).join(' ');
      else if (r.kind === 'tokenize') note = basename(argOf(r, '--input') || fin.input) || '';
      else if (r.kind === 'generate' && fin.tokens != null) note = `${fin.tokens} tokens`;
      else if (isTrain && r.checkpoint) note = `checkpoint at step ${r.checkpoint.step}`;
      return h('tr', { testid: 'history-row', dataset: { id: String(r.id), kind: r.kind, status: r.status } },
        h('td', {}, box),
        h('td', {}, String(r.id)),
        h('td', {}, r.kind),
        h('td', {}, r.status),
        h('td', {}, isTrain ? `${fin.total_steps ?? last.step ?? '–'}${last.total ? ` / ${last.total}` : ''}` : '–'),
        h('td', {}, isTrain ? fmtNum(fin.final_loss ?? last.loss) : '–'),
        h('td', {}, fmtTime(r.created_at)),
        h('td', { class: 'note' }, note));
    }));
    tid('history-empty').hidden = runs.length > 0;
  }

  return {
    async enter() {
      runs = await loadRuns();
      const trains = runs.filter((r) => r.kind === 'train');
      for (const id of [...checked]) if (!trains.some((r) => String(r.id) === id)) checked.delete(id);
      if (!touched && trains.length) checked.add(String(trains[0].id));  // the newest, until the user picks
      render();
      await drawChart();
    },
    reset() {
      checked.clear();
      curves.clear();
      runs = [];
      touched = false;
      chart.destroy();
    },
  };
})();

VIEWS.noproject = { async enter() {} };

// ---------------------------------------------------------------- start

tid('project-select').addEventListener('change', (e) => {
  const pid = e.target.value;
  if (!pid) { selectProject(null); go('projects'); return; }
  selectProject(pid);
  go(PROJECT_VIEWS.includes(state.view) ? state.view : 'dashboard', pid);
});
for (const a of document.querySelectorAll('.tabs a')) {
  a.addEventListener('click', (e) => {
    const v = a.dataset.view;
    if (PROJECT_VIEWS.includes(v) && state.projectId == null) { e.preventDefault(); go('projects'); showGlobalError('Pick or create a project first.'); }
    else showGlobalError('');
  });
}
window.addEventListener('hashchange', () => { route(); });

async function main() {
  const saved = sessionStorage.getItem('neuralforge.project');
  if (saved) state.projectId = saved;
  try {
    await Promise.all([loadStatus(), loadProjects()]);
  } catch (e) {
    if (e.status !== 401) showGlobalError(e.message);
  }
  if (state.projectId != null && !state.projects.some((p) => String(p.id) === state.projectId)) selectProject(null);
  updateNav();
  await route();
}

main();
})();
