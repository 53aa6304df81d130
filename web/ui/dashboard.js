// Levee's queue dashboard: polls /api/v1/queue and /api/v1/queue/history and
// draws the figures and small SVG charts. No framework and no build step, so
// that the page works offline from the files embedded in the binary.
//
// Every figure is an element with data-field="<JSON path in the status>": its
// text is the formatted value and its data-value the raw one, or "—" with
// data-missing when the server does not send that field (an older Levee, a
// process without workers). cmd/levee/dashboard_test.go reads them back.
'use strict';

(function () {
  const POLL_MS = 2000;
  const WINDOW_MS = 15 * 60 * 1000; // what /api/v1/queue/history keeps
  const MIN_SPAN_MS = 60 * 1000; // a young chart still reads left to right as time
  const MISSING = '—';
  const SVGNS = 'http://www.w3.org/2000/svg';

  // Problems in the page itself (a script error, something the content
  // security policy blocked) are shown on it: a dashboard that silently
  // shows stale figures misleads. The script runs from <head>, before the
  // body is parsed, so that a violation in the markup is caught too.
  const problems = [];
  function showProblems() {
    const box = document.getElementById('errors');
    if (!box || problems.length === 0) return;
    box.hidden = false;
    box.textContent = problems.join('\n');
    document.body.dataset.errors = String(problems.length);
  }
  function problem(msg) {
    problems.push(msg);
    showProblems();
  }
  window.addEventListener('error', (e) => problem('script error: ' + e.message));
  window.addEventListener('unhandledrejection', (e) => problem('script error: ' + e.reason));
  document.addEventListener('securitypolicyviolation', (e) =>
    problem('blocked by the content security policy: ' + e.violatedDirective + ' ' + e.blockedURI));

  // Formatting. Decimal figures are rounded half up to one place, the same
  // rule the dashboard test applies, so that the text can be checked exactly.
  function fixed1(x) { return (Math.round(x * 10) / 10).toFixed(1); }
  function count(n) { return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ','); }
  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    if (n < 1024) return count(n) + ' B';
    let v = n, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return fixed1(v) + ' ' + units[i];
  }
  // Under 1% a second decimal shows that a queue is filling at all.
  function percent(r) {
    const p = r * 100;
    return (p < 1 ? (Math.round(p * 100) / 100).toFixed(2) : fixed1(p)) + '%';
  }
  function rate(r) { return fixed1(r) + '/s'; }
  function duration(ns) {
    const s = ns / 1e9;
    if (s < 60) return fixed1(s) + 's';
    const parts = (major, majorUnit, minor, minorUnit) =>
      major + majorUnit + (minor ? ' ' + minor + minorUnit : '');
    if (s < 3600) return parts(Math.floor(s / 60), 'm', Math.floor(s % 60), 's');
    if (s < 86400) return parts(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'm');
    return parts(Math.floor(s / 86400), 'd', Math.floor((s % 86400) / 3600), 'h');
  }
  function seconds(s) { return duration(s * 1e9); }
  // JetStream reports "no limit" as -1 (or 0 for max_age); Levee's per-domain cap uses 0.
  const unlimited = (f) => (n) => (n <= 0 ? 'unlimited' : f(n));
  function text(s) { return s; }

  const FIELDS = {
    'stream': text,
    'dead_stream': text,
    'messages': count,
    'bytes': bytes,
    'oldest_message_age_seconds': seconds,
    'fill.max': percent,
    'fill.messages': percent,
    'fill.bytes': percent,
    'rates.ingest_per_second': rate,
    'rates.drain_per_second': rate,
    'rates.deferrals_per_second': rate,
    'rates.window_seconds': seconds,
    'workers.concurrency': count,
    'workers.processes': count,
    'smtp.processes': count,
    'smtp.accepted_total': count,
    'smtp.deferred_total': count,
    'smtp.rejected_total': count,
    'dead_letters': count,
    'consumer.name': text,
    'consumer.num_pending': count,
    'consumer.num_ack_pending': count,
    'consumer.num_redelivered': count,
    'consumer.num_waiting': count,
    'limits.max_msgs': unlimited(count),
    'limits.max_bytes': unlimited(bytes),
    'limits.max_age_seconds': unlimited(seconds),
    'limits.per_domain_max_msgs': unlimited(count),
    'limits.max_msg_size': unlimited(bytes),
    'limits.discard': text,
    'limits.replicas': count,
  };

  function lookup(obj, path) {
    let v = obj;
    for (const k of path.split('.')) {
      if (v === null || typeof v !== 'object') return undefined;
      v = v[k];
    }
    return v;
  }

  // Rates need two samples; until then the server sends 0 over a window of
  // 0 s, which would read as "nothing arrives".
  function ratesKnown(st) { return !!st.rates && st.rates.window_seconds > 0; }

  function fieldValue(st, path) {
    if (path.startsWith('rates.') && !ratesKnown(st)) return undefined;
    return lookup(st, path);
  }

  function setField(el, v, fmt) {
    const ok = typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v));
    if (ok) {
      el.textContent = fmt(v);
      el.dataset.value = String(v);
      delete el.dataset.missing;
    } else {
      el.textContent = MISSING;
      delete el.dataset.value;
      el.dataset.missing = '';
    }
  }

  function level(r) { return r >= 0.95 ? 'critical' : r >= 0.8 ? 'high' : 'ok'; }

  function render(st) {
    for (const el of document.querySelectorAll('[data-field]')) {
      const path = el.dataset.field;
      const fmt = FIELDS[path];
      if (!fmt) { problem('no formatter for data-field ' + path); continue; }
      const v = fieldValue(st, path);
      setField(el, v, fmt);
      if (path.startsWith('fill.') && typeof v === 'number') el.dataset.level = level(v);
    }
    for (const bar of document.querySelectorAll('[data-bar]')) {
      const v = lookup(st, bar.dataset.bar);
      const ok = typeof v === 'number' && Number.isFinite(v);
      // CSSOM, not a style attribute: the content security policy allows no inline styles.
      bar.style.width = ok ? Math.min(100, Math.max(0, v * 100)) + '%' : '0';
      bar.dataset.level = ok ? level(v) : 'ok';
    }
    renderDomains(st);
    renderPartitions(st);
    const at = new Date(st.at);
    const updated = document.getElementById('updated');
    updated.dateTime = st.at;
    updated.textContent = isNaN(at) ? MISSING : clock(at);
    document.body.dataset.at = st.at;
  }

  function renderDomains(st) {
    const list = st.top_domains;
    barRows('top-domains', list, 'no mail queued', (d) => ({
      attr: 'domain', key: d.domain, name: d.domain, n: d.messages,
      frac: st.messages > 0 ? d.messages / st.messages : 0,
    }));
  }

  // Each partition (a mail stream of its own) with its fill; a stream of
  // another layout, still being drained, is marked so.
  function renderPartitions(st) {
    barRows('partitions', st.partitions, 'no mail stream', (p) => ({
      attr: 'partition', key: p.stream, name: p.draining ? p.stream + ' (draining)' : p.stream,
      n: p.messages, frac: p.fill && typeof p.fill.max === 'number' ? p.fill.max : 0,
    }));
  }

  // barRows fills the table body id with one row per item of list: a
  // name, a count and a bar of frac; empty says why there is none.
  function barRows(id, list, empty, rowOf) {
    const rows = [];
    if (!Array.isArray(list) || list.length === 0) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 3;
      td.className = 'dim';
      td.textContent = Array.isArray(list) ? empty : MISSING;
      tr.append(td);
      rows.push(tr);
    } else {
      for (const item of list) {
        const r = rowOf(item);
        const tr = document.createElement('tr');
        tr.dataset[r.attr] = r.key;
        const name = document.createElement('td');
        name.className = 'domain';
        name.textContent = r.name;
        const n = document.createElement('td');
        n.className = 'num';
        setField(n, r.n, count);
        const share = document.createElement('td');
        share.className = 'share';
        const track = document.createElement('span');
        track.className = 'track';
        const bar = document.createElement('span');
        bar.className = 'sharebar';
        bar.style.width = Math.min(100, Math.max(0, r.frac * 100)) + '%';
        track.append(bar);
        share.append(track);
        tr.append(name, n, share);
        rows.push(tr);
      }
    }
    document.getElementById(id).replaceChildren(...rows);
  }

  function pad2(n) { return String(n).padStart(2, '0'); }
  function clock(d) { return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds()); }

  // History: samples oldest first, at most WINDOW_MS of them.
  let samples = [];
  let historyAPI; // true once /api/v1/queue/history answered, false after a 404

  function addSamples(list) {
    for (const s of list) {
      const t = Date.parse(s.at);
      if (!Number.isFinite(t)) continue;
      if (samples.length && t <= samples[samples.length - 1].t) continue; // already have it
      samples.push(Object.assign({}, s, { t: t }));
    }
    if (samples.length) {
      const oldest = samples[samples.length - 1].t - WINDOW_MS;
      samples = samples.filter((s) => s.t >= oldest);
    }
  }

  // A sample from a status: the charts still move on a server without the
  // history endpoint, from the moment the page was opened.
  function sampleOf(st) {
    const known = ratesKnown(st);
    return {
      at: st.at,
      messages: st.messages,
      bytes: st.bytes,
      fill: st.fill ? st.fill.max : undefined,
      ingest_per_second: known ? st.rates.ingest_per_second : undefined,
      drain_per_second: known ? st.rates.drain_per_second : undefined,
      deferrals_per_second: known ? st.rates.deferrals_per_second : undefined,
      worker_concurrency: st.workers ? st.workers.concurrency : undefined,
      dead_letters: st.dead_letters,
    };
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON: reported by status */ }
    return { status: r.status, ok: r.ok, body: body };
  }

  async function loadHistory() {
    const last = samples.length ? samples[samples.length - 1].at : '';
    const r = await getJSON('/api/v1/queue/history' + (last ? '?since=' + encodeURIComponent(last) : ''));
    if (r.status === 404) { historyAPI = false; return false; }
    if (!r.ok || !r.body || !Array.isArray(r.body.samples)) return false;
    historyAPI = true;
    addSamples(r.body.samples);
    return true;
  }

  // Charts are drawn in CSS pixels (the viewBox is the element's own size),
  // so that lines and labels keep their weight at any width.
  const PAD = { left: 48, right: 10, top: 10, bottom: 20 };

  function node(name, attrs, parent) {
    const n = document.createElementNS(SVGNS, name);
    for (const k in attrs) n.setAttribute(k, attrs[k]);
    if (parent) parent.append(n);
    return n;
  }

  function niceMax(v, floor) {
    v = Math.max(v, floor);
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p * 1.0000001) return m * p;
    return 10 * p;
  }

  function compact(n) {
    const trim = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1));
    if (Math.abs(n) >= 1e6) return trim(Math.round(n / 1e5) / 10) + 'M';
    if (Math.abs(n) >= 1e3) return trim(Math.round(n / 1e2) / 10) + 'k';
    return trim(Math.round(n * 10) / 10);
  }

  const CHARTS = {
    depth: { series: [{ key: 'messages', cls: 's-depth', area: true }], floor: 10, fmt: compact },
    rates: {
      series: [
        { key: 'ingest_per_second', cls: 's-ingest' },
        { key: 'drain_per_second', cls: 's-drain' },
        { key: 'deferrals_per_second', cls: 's-defer' },
      ],
      floor: 1, fmt: (v) => compact(v) + '/s',
    },
    fill: { series: [{ key: 'fill', cls: 's-fill', area: true }], floor: 0.1, fmt: (v) => Math.round(v * 100) + '%', threshold: 0.8 },
    workers: { series: [{ key: 'worker_concurrency', cls: 's-workers', step: true }], floor: 4, fmt: compact },
  };

  function drawCharts() {
    // Where the charts' points came from, for people debugging and for the test.
    document.body.dataset.history = historyAPI ? 'server' : 'polls';
    document.body.dataset.samples = String(samples.length);
    if (samples.length) document.body.dataset.firstSample = samples[0].at;
    for (const svg of document.querySelectorAll('svg[data-chart]')) {
      const spec = CHARTS[svg.dataset.chart];
      if (spec) drawChart(svg, spec);
    }
  }

  function drawChart(svg, spec) {
    svg.replaceChildren();
    const W = Math.max(240, Math.round(svg.clientWidth || 360));
    const H = Math.max(80, Math.round(svg.clientHeight || 120));
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    const series = spec.series.map((s) => ({
      spec: s,
      points: samples.filter((p) => typeof p[s.key] === 'number' && Number.isFinite(p[s.key])).map((p) => [p.t, p[s.key]]),
    }));
    const n = series.reduce((a, s) => Math.max(a, s.points.length), 0);
    svg.dataset.points = String(n);
    const x0 = PAD.left, x1 = W - PAD.right, y0 = H - PAD.bottom, y1 = PAD.top;
    if (n === 0) {
      node('text', { x: (x0 + x1) / 2, y: (y0 + y1) / 2, class: 'empty', 'text-anchor': 'middle' }, svg).textContent = 'no data yet';
      return;
    }
    const tEnd = samples[samples.length - 1].t;
    const tStart = tEnd - Math.max(tEnd - samples[0].t, MIN_SPAN_MS);
    let vmax = 0;
    for (const s of series) for (const p of s.points) vmax = Math.max(vmax, p[1]);
    const top = niceMax(vmax, spec.floor);
    const x = (t) => x0 + ((t - tStart) / (tEnd - tStart)) * (x1 - x0);
    const y = (v) => y0 - (Math.min(v, top) / top) * (y0 - y1);

    for (const f of [0, 0.5, 1]) {
      const v = top * f;
      node('line', { x1: x0, x2: x1, y1: y(v), y2: y(v), class: f === 0 ? 'axis' : 'grid' }, svg);
      node('text', { x: x0 - 4, y: y(v) + 3, class: 'tick', 'text-anchor': 'end' }, svg).textContent = spec.fmt(v);
    }
    if (spec.threshold && spec.threshold <= top) {
      // The fill at which the shipped alert fires (deploy/prometheus).
      node('line', { x1: x0, x2: x1, y1: y(spec.threshold), y2: y(spec.threshold), class: 'threshold' }, svg);
      node('text', { x: x0 + 4, y: y(spec.threshold) - 3, class: 'tick threshold-label', 'text-anchor': 'start' }, svg).textContent =
        'alert ' + spec.fmt(spec.threshold);
    }
    node('text', { x: x0, y: H - 4, class: 'tick', 'text-anchor': 'start' }, svg).textContent = clock(new Date(tStart));
    node('text', { x: x1, y: H - 4, class: 'tick', 'text-anchor': 'end' }, svg).textContent = clock(new Date(tEnd));

    for (const s of series) {
      if (s.points.length === 0) continue;
      const pts = [];
      s.points.forEach((p, i) => {
        if (s.spec.step && i > 0) pts.push([x(p[0]), y(s.points[i - 1][1])]);
        pts.push([x(p[0]), y(p[1])]);
      });
      const coords = pts.map((p) => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' ');
      if (s.spec.area && pts.length > 1) {
        const first = pts[0][0].toFixed(1), last = pts[pts.length - 1][0].toFixed(1);
        node('polygon', { points: first + ',' + y0 + ' ' + coords + ' ' + last + ',' + y0, class: 'area ' + s.spec.cls }, svg);
      }
      if (pts.length === 1) {
        node('circle', { cx: pts[0][0], cy: pts[0][1], r: 2.5, class: 'point ' + s.spec.cls, 'data-series': s.spec.key }, svg);
      } else {
        node('polyline', { points: coords, class: 'line ' + s.spec.cls, 'data-series': s.spec.key }, svg);
      }
    }
  }

  // Polling: the next round starts when this one has finished, so that a
  // slow server gets one request at a time from each open page.
  let polls = 0;
  function setState(state, label) {
    document.body.dataset.state = state;
    const el = document.getElementById('state');
    el.textContent = label;
    el.dataset.state = state;
  }

  async function tick() {
    try {
      const r = await getJSON('/api/v1/queue');
      if (!r.ok || !r.body) {
        const why = r.body && r.body.error ? ': ' + r.body.error : '';
        throw new Error('HTTP ' + r.status + why);
      }
      render(r.body);
      polls++;
      document.body.dataset.polls = String(polls);
      let fromHistory = false;
      if (historyAPI !== false) {
        try { fromHistory = await loadHistory(); } catch (_) { /* a status sample stands in */ }
      }
      if (!fromHistory) addSamples([sampleOf(r.body)]);
      drawCharts();
      setState('live', 'live');
    } catch (e) {
      // Keep the last figures, marked stale, and keep trying.
      setState('error', 'unreachable (' + (e && e.message ? e.message : e) + ')');
    } finally {
      setTimeout(tick, POLL_MS);
    }
  }

  function start() {
    showProblems();
    window.addEventListener('resize', drawCharts);
    drawCharts();
    tick();
  }
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
