// The playground: streams a completion from this server's HTTP API with SeqBoat's
// return_activations, and draws which layers ran attention for each token. No dependencies.
'use strict';

const $ = (id) => document.getElementById(id);
const LEVELS = 8;  // shades lv0..lv8 in playground.css

// Everything the page knows; window.playground, for the console (and the browser test).
const state = {
  info: null,      // GET /model_info
  layers: 0,
  tokens: [],      // this generation's: {text, layers: [0|1 per layer], count}
  activated: [],   // per layer, tokens whose attention ran
  chars: 0,        // code points of generated text so far (activations' text_offset is in these)
  controller: null,
  started: 0,
  first: 0,
  last: 0,
  finish: null,
  usage: null,
  runs: [],
  lastTokenEl: null,
};
window.playground = state;

function authHeaders(json) {
  const h = {};
  if (json) h['Content-Type'] = 'application/json';
  const key = $('api-key').value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function setStatus(text, kind) {
  const pill = $('server-status');
  pill.textContent = text;
  pill.className = `pill ${kind || ''}`;
}

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

// ---- Model info ---------------------------------------------------------------------

function formatCount(n) {
  const v = Number(n);
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)} G`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k`;
  return String(v);
}

function formatBytes(n) {
  const v = Number(n);
  if (v >= 1 << 30) return `${(v / (1 << 30)).toFixed(2)} GiB`;
  if (v >= 1 << 20) return `${(v / (1 << 20)).toFixed(2)} MiB`;
  if (v >= 1 << 10) return `${(v / (1 << 10)).toFixed(1)} KiB`;
  return `${v} B`;
}

function renderInfo(info) {
  const limits = info.limits || {};
  const file = String(info.model_file || '').split('/').pop();
  const rows = [
    ['model', file],
    ['layers L', info.layers],
    ['D/Z/H/N', `${info.embed_dim}/${info.z_dim}/${info.hidden_dim}/${info.n_dim}`],
    ['FIFO slots w', info.window],
    ['vocabulary', `${info.vocab_size} (${info.tokenizer_style})`],
    ['attention', info.attention],
    ['EMA horizon', info.ema_horizon],
    ['parameters', formatCount(info.parameters)],
    ['state / sequence', formatBytes(info.state_bytes_per_sequence)],
    ['backend', info.backend],
    ['max batch', limits.max_batch],
    ['max prompt', `${limits.max_prompt_tokens} tokens`],
    ['bias limit', `±${limits.max_activation_bias}`],
    ['default bias', limits.default_activation_bias],
    ['prefix cache', formatBytes(info.prefix_cache_bytes)],
    ['server', info.server_version],
  ];
  const list = $('model-info');
  list.replaceChildren();
  for (const [name, value] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = name;
    const dd = document.createElement('dd');
    dd.textContent = value === undefined ? '–' : String(value);
    list.append(dt, dd);
  }
}

function renderLegend() {
  const legend = $('legend');
  legend.replaceChildren('attention ran in');
  for (let c = 0; c <= state.layers; ++c) {
    const sw = document.createElement('span');
    sw.className = `sw lv${level(c)}`;
    sw.textContent = String(c);
    legend.append(sw);
  }
  legend.append(`of ${state.layers} layers`);
}

async function loadInfo() {
  try {
    const response = await fetch('/model_info', { headers: authHeaders(false) });
    if (response.status === 401) {
      setStatus('API key needed', 'bad');
      $('key-box').open = true;
      return;
    }
    const info = await response.json();
    if (!response.ok) throw new Error(info.error ? info.error.message : `HTTP ${response.status}`);
    state.info = info;
    state.layers = info.layers;
    renderInfo(info);
    renderLegend();
    resetCounters();
    renderStats();
    const bias = Number((info.limits || {}).default_activation_bias || 0);
    setBias(bias);
    setStatus(`serving · ${info.backend}`, 'ok');
  } catch (error) {
    setStatus('server unreachable', 'bad');
    showError(`model info: ${error.message}`);
  }
}

// ---- Controls ----------------------------------------------------------------------

function setBias(value) {
  $('bias').value = String(value);
  $('bias-slider').value = String(Math.max(-8, Math.min(8, value)));
  $('bias-value').textContent = String(value);
}

// A number field: its value, absent when empty and optional, or an error naming it.
function numberField(id, name, { integer = false, optional = false } = {}) {
  const raw = $(id).value.trim();
  if (raw === '') {
    if (optional) return undefined;
    throw new Error(`${name}: expected a number`);
  }
  const value = Number(raw);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new Error(`${name}: '${raw}' is not ${integer ? 'an integer' : 'a number'}`);
  }
  return value;
}

function requestBody() {
  const body = {
    prompt: $('prompt').value,
    max_tokens: numberField('max-tokens', 'max tokens', { integer: true }),
    temperature: numberField('temperature', 'temperature'),
    top_p: numberField('top-p', 'top p'),
    top_k: numberField('top-k', 'top k', { integer: true }),
    ignore_eos: $('ignore-eos').checked,
    stream: true,
    stream_options: { include_usage: true },
    return_activations: true,
  };
  const seed = numberField('seed', 'seed', { integer: true, optional: true });
  if (seed !== undefined) body.seed = seed;
  const perLayer = $('layer-bias').value.trim();
  if (perLayer !== '') {
    const values = perLayer.split(/[\s,]+/).filter((s) => s !== '').map(Number);
    if (values.some((v) => !Number.isFinite(v))) {
      throw new Error(`per-layer biases: '${perLayer}' is not a list of numbers`);
    }
    body.routing = { layer_activation_bias: values };
  } else {
    body.routing = { activation_bias: numberField('bias', 'activation bias') };
  }
  return body;
}

// ---- Output ------------------------------------------------------------------------

function level(count) {
  return state.layers > 0 ? Math.round((count / state.layers) * LEVELS) : 0;
}

function resetCounters() {
  state.tokens = [];
  state.activated = new Array(state.layers).fill(0);
  state.chars = 0;
  state.first = 0;
  state.last = 0;
  state.finish = null;
  state.usage = null;
  state.lastTokenEl = null;
}

function addToken(text, layers) {
  const count = layers.reduce((a, b) => a + b, 0);
  const index = state.tokens.length;
  state.tokens.push({ text, layers, count });
  for (let l = 0; l < layers.length && l < state.activated.length; ++l) state.activated[l] += layers[l];
  if (text === '') {
    // A byte inside a character whose first byte's token shows it.
    if (state.lastTokenEl) state.lastTokenEl.dataset.tokens += ` ${index}`;
    return;
  }
  const el = document.createElement('span');
  el.className = 'tok';
  el.dataset.index = String(index);
  el.dataset.tokens = String(index);
  el.dataset.layers = layers.join('');
  el.dataset.count = String(count);
  const ch = document.createElement('span');
  ch.className = `ch lv${level(count)}`;
  ch.textContent = text.replace(/\n/g, '↵').replace(/\t/g, '⇥');
  const strip = document.createElement('span');
  strip.className = 'strip';
  for (const on of layers) {
    const cell = document.createElement('i');
    if (on) cell.className = 'on';
    strip.append(cell);
  }
  el.append(ch, strip);
  const output = $('output');
  output.append(el);
  if (text.includes('\n')) output.append('\n');
  state.lastTokenEl = el;
}

// A delta's text and its tokens' activations (text_offset: code points into the generated text).
function appendChunk(text, activations) {
  const chars = Array.from(text);
  const base = state.chars;
  const offsets = activations ? activations.text_offset : [];
  const layers = activations ? activations.layers : [];
  if (offsets.length === 0) {
    if (chars.length > 0) $('output').append(text);
  } else {
    const lead = offsets[0] - base;
    if (lead > 0) $('output').append(chars.slice(0, lead).join(''));
    for (let i = 0; i < offsets.length; ++i) {
      const start = Math.max(0, offsets[i] - base);
      const end = i + 1 < offsets.length ? offsets[i + 1] - base : chars.length;
      addToken(chars.slice(start, Math.max(start, end)).join(''), layers[i]);
    }
  }
  state.chars += chars.length;
  const output = $('output');
  output.scrollTop = output.scrollHeight;
}

// End to end, as the user sees it: tokens over the time from the request to the latest token
// (a small model's whole answer can arrive in one read, which leaves no decode time to time).
function tokensPerSecond() {
  const seconds = (state.last - state.started) / 1000;
  return seconds > 0 ? state.tokens.length / seconds : 0;
}

function renderStats() {
  const n = state.tokens.length;
  const L = state.layers;
  $('tokens').textContent = n > 0 ? String(n) : '–';
  $('tps').textContent = n > 0 ? tokensPerSecond().toFixed(1) : '–';
  $('ttft').textContent = state.first > 0 ? `${Math.round(state.first - state.started)} ms` : '–';
  const total = state.activated.reduce((a, b) => a + b, 0);
  $('rate').textContent = n > 0 && L > 0 ? `${((100 * total) / (n * L)).toFixed(1)}%` : '–';
  const box = $('layer-rates');
  if (box.children.length !== L) {
    box.replaceChildren();
    for (let l = 0; l < L; ++l) {
      const row = document.createElement('div');
      row.className = 'lr';
      const name = document.createElement('span');
      name.textContent = `L${l}`;
      const bar = document.createElement('div');
      bar.className = 'bar';
      const fill = document.createElement('div');
      fill.className = 'fill';
      bar.append(fill);
      const value = document.createElement('span');
      value.className = 'v';
      row.append(name, bar, value);
      box.append(row);
    }
  }
  for (let l = 0; l < L; ++l) {
    const rate = n > 0 ? state.activated[l] / n : 0;
    const row = box.children[l];
    row.querySelector('.fill').style.width = `${(100 * rate).toFixed(1)}%`;
    row.querySelector('.v').textContent = n > 0 ? `${(100 * rate).toFixed(0)}%` : '–';
    row.dataset.rate = String(rate);
  }
}

let statsQueued = false;
function queueStats() {
  if (statsQueued) return;
  statsQueued = true;
  requestAnimationFrame(() => {
    statsQueued = false;
    renderStats();
  });
}

function addRun(label) {
  const n = state.tokens.length;
  const total = state.activated.reduce((a, b) => a + b, 0);
  state.runs.unshift({
    bias: label,
    tokens: n,
    rate: n > 0 && state.layers > 0 ? total / (n * state.layers) : 0,
    tps: n > 0 ? tokensPerSecond() : 0,
  });
  state.runs.length = Math.min(state.runs.length, 12);
  const body = $('runs').tBodies[0];
  body.replaceChildren();
  state.runs.forEach((run, i) => {
    const tr = document.createElement('tr');
    if (i === 0) tr.className = 'current';
    for (const cell of [run.bias, run.tokens, `${(100 * run.rate).toFixed(1)}%`,
      run.tps > 0 ? run.tps.toFixed(1) : '–']) {
      const td = document.createElement('td');
      td.textContent = String(cell);
      tr.append(td);
    }
    body.append(tr);
  });
}

function handleEvent(block) {
  for (const line of block.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const payload = line.slice(5).trim();
    if (payload === '[DONE]') continue;
    const event = JSON.parse(payload);
    if (event.error) {
      showError(event.error.message);
      continue;
    }
    if (event.usage) state.usage = event.usage;
    for (const choice of event.choices || []) {
      if (choice.text || choice.activations) {
        const now = performance.now();
        if (state.first === 0) state.first = now;
        state.last = now;
        appendChunk(choice.text || '', choice.activations);
      }
      if (choice.finish_reason) state.finish = choice.finish_reason;
    }
  }
  queueStats();
}

async function generate() {
  clearError();
  let body;
  try {
    body = requestBody();
  } catch (error) {
    showError(error.message);
    return;
  }
  resetCounters();
  const output = $('output');
  output.replaceChildren();
  const prompt = document.createElement('span');
  prompt.className = 'prompt-text';
  prompt.textContent = body.prompt;
  output.append(prompt);
  output.dataset.state = 'streaming';
  renderStats();
  const label = body.routing.layer_activation_bias
    ? body.routing.layer_activation_bias.join(',') : String(body.routing.activation_bias);
  const controller = new AbortController();
  state.controller = controller;
  $('generate').disabled = true;
  $('stop').disabled = false;
  state.started = performance.now();
  try {
    const response = await fetch('/v1/completions', {
      method: 'POST', headers: authHeaders(true), body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      if (response.status === 401) $('key-box').open = true;
      throw new Error(error.error ? error.error.message : `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        handleEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  } catch (error) {
    if (error.name !== 'AbortError') showError(error.message);
  } finally {
    state.controller = null;
    $('generate').disabled = false;
    $('stop').disabled = true;
    renderStats();
    if (state.tokens.length > 0) addRun(label);
    output.dataset.state = 'done';
  }
}

// ---- Wiring --------------------------------------------------------------------------

function describeToken(el) {
  const indices = el.dataset.tokens.split(' ').map(Number);
  const t = state.tokens[indices[0]];
  const ran = [];
  t.layers.forEach((on, l) => { if (on) ran.push(l); });
  const shown = JSON.stringify(t.text);
  const bytes = indices.length > 1 ? ` (${indices.length} tokens)` : '';
  return `token #${indices[0]}${bytes} ${shown} · attention ran in ${t.count} of ${state.layers} layers` +
    (ran.length > 0 ? `: ${ran.map((l) => `L${l}`).join(' ')}` : '');
}

function wire() {
  $('bias-slider').addEventListener('input', (e) => {
    $('bias').value = e.target.value;
    $('bias-value').textContent = e.target.value;
  });
  $('bias').addEventListener('input', (e) => {
    const v = Number(e.target.value);
    if (Number.isFinite(v)) {
      $('bias-slider').value = String(Math.max(-8, Math.min(8, v)));
      $('bias-value').textContent = e.target.value;
    }
  });
  $('generate').addEventListener('click', generate);
  $('stop').addEventListener('click', () => { if (state.controller) state.controller.abort(); });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !$('generate').disabled) generate();
  });
  $('show-strips').addEventListener('change', (e) => {
    $('output').classList.toggle('strips', e.target.checked);
  });
  $('api-key').addEventListener('change', loadInfo);
  const output = $('output');
  output.addEventListener('mouseover', (e) => {
    const el = e.target.closest('.tok');
    if (el) $('token-info').textContent = describeToken(el);
  });
}

wire();
loadInfo();
