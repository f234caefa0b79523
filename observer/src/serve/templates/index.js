// The session page: cards, the coverage-over-time chart, the file list with its filter, modules
// and what was left out, all redrawn from each summary the server sends.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  let shownVersion = 0;

  // Lines of the chart: the measure, its colour (as in the report's chart).
  const SERIES = [
    ['lines', '#1f77b4'],
    ['functions', '#2ca02c'],
    ['branches', '#d62728'],
    ['regions', '#9467bd'],
    ['points', '#8c564b'],
  ];

  function svgEl(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Round tick step (1, 2, 5 times a power of ten) for about n ticks.
  function tickStep(span, n) {
    if (!(span > 0)) return 1;
    const raw = span / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  }

  function fmtNum(x) {
    return Math.abs(x - Math.round(x)) < 1e-9 ? String(Math.round(x)) : x.toFixed(1);
  }

  function drawChart(svg, points) {
    const W = 880, H = 260, L = 48, R = 16, T = 30, B = 36;
    svg.replaceChildren();
    const plotW = W - L - R, plotH = H - T - B;
    const y = (v) => T + (1 - v / 100) * plotH;
    for (let v = 0; v <= 100; v += 20) {
      svg.append(svgEl('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      svg.append(svgEl('text', { class: 'tick', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, v + '%'));
    }
    svg.append(svgEl('line', { class: 'axis', x1: L, x2: L, y1: T, y2: T + plotH }));
    svg.append(svgEl('line', { class: 'axis', x1: L, x2: W - R, y1: T + plotH, y2: T + plotH }));
    if (points.length === 0) {
      svg.append(svgEl('text', { class: 'label', x: L + plotW / 2, y: T + plotH / 2, 'text-anchor': 'middle' },
        'No artifact yet: the chart starts with the first dump.'));
      return;
    }
    // Seconds (minutes, hours) since the first dump when every point has its time.
    const last = points[points.length - 1];
    const timed = points.every((p) => p.t !== null && p.t !== undefined) && last.t > 0;
    let xs, label;
    if (timed) {
      const unit = last.t > 3 * 3600 ? 3600 : last.t > 600 ? 60 : 1;
      label = (unit === 3600 ? 'hours' : unit === 60 ? 'minutes' : 'seconds') + ' since the first dump';
      xs = points.map((p) => p.t / unit);
    } else {
      label = 'artifacts collected';
      xs = points.map((p) => p.index);
    }
    const x0 = timed ? 0 : Math.min(...xs);
    const x1 = Math.max(x0 + (timed ? 1e-9 : 1), ...xs);
    const x = (v) => L + ((v - x0) / (x1 - x0)) * plotW;
    // Artifacts are counted in whole numbers.
    const step = timed ? tickStep(x1 - x0, 6) : Math.max(1, tickStep(x1 - x0, 6));
    for (let v = Math.ceil(x0 / step) * step; v <= x1 + 1e-9; v += step) {
      svg.append(svgEl('text', { class: 'tick', x: x(v), y: T + plotH + 14, 'text-anchor': 'middle' }, fmtNum(v)));
    }
    svg.append(svgEl('text', { class: 'label', x: L + plotW / 2, y: H - 4, 'text-anchor': 'middle' }, label));
    let legendX = L;
    for (const [kind, colour] of SERIES) {
      const have = points.filter((p) => p[kind] && p[kind].percent !== null && p[kind].percent !== undefined);
      if (have.length === 0) continue;
      const coords = [];
      points.forEach((p, i) => {
        if (p[kind] && p[kind].percent !== null && p[kind].percent !== undefined) {
          coords.push([x(xs[i]), y(p[kind].percent), p]);
        }
      });
      svg.append(svgEl('polyline', {
        class: 'series ' + kind, fill: 'none', stroke: colour, 'stroke-width': 2,
        points: coords.map(([a, b]) => a.toFixed(1) + ',' + b.toFixed(1)).join(' '),
      }));
      // Markers for the first measure only, when there are few enough to see.
      if (kind === 'lines' && coords.length <= 200) {
        for (const [a, b, p] of coords) {
          const dot = svgEl('circle', { class: 'pt', cx: a.toFixed(1), cy: b.toFixed(1), r: 3, fill: colour });
          dot.append(svgEl('title', {}, '#' + p.index + ' ' + p.runtime + ' ' + p.module + ' (pid ' + p.pid +
            '): lines ' + covobs.fmtPct(p.lines.percent)));
          svg.append(dot);
        }
      }
      svg.append(svgEl('rect', { x: legendX, y: 8, width: 10, height: 10, fill: colour }));
      svg.append(svgEl('text', { class: 'legend', x: legendX + 14, y: 17 }, kind));
      legendX += 24 + kind.length * 7;
    }
  }

  const filter = $('filter');
  filter.value = new URLSearchParams(location.search).get('filter') || '';
  filter.addEventListener('input', () => {
    applyFilter();
    const u = new URL(location.href);
    if (filter.value) u.searchParams.set('filter', filter.value);
    else u.searchParams.delete('filter');
    history.replaceState(null, '', u);
  });

  // Every word of the filter must appear in the file's path, modules or language.
  function applyFilter() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0, total = 0;
    for (const tr of $('files').tBodies[0].rows) {
      total++;
      const ok = words.every((w) => tr.dataset.search.includes(w));
      tr.hidden = !ok;
      if (ok) shown++;
    }
    $('shown').textContent = words.length ? shown + ' of ' + total + ' files' : total + ' file' + (total === 1 ? '' : 's');
  }

  function renderFiles(s) {
    const table = $('files');
    table.classList.toggle('no-regions', !s.totals.regions);
    table.classList.toggle('no-points', !s.totals.points);
    const rows = s.files.map((f) => {
      const tr = covobs.clone('file-row');
      const a = tr.querySelector('a');
      a.href = '/file?path=' + encodeURIComponent(f.path);
      a.textContent = f.shown;
      a.title = f.path;
      tr.querySelector('.mods').textContent = f.modules.join(', ');
      for (const k of ['lines', 'functions', 'branches', 'regions', 'points']) {
        covobs.pctCell(tr.querySelector('td.' + k), f[k]);
      }
      tr.dataset.search = (f.path + ' ' + f.modules.join(' ') + ' ' + f.language).toLowerCase();
      return tr;
    });
    table.tBodies[0].replaceChildren(...rows);
    const prefix = $('prefix');
    prefix.hidden = !s.prefix;
    prefix.querySelector('code').textContent = s.prefix;
    applyFilter();
  }

  function renderModules(s) {
    $('modules-section').hidden = s.modules.length === 0;
    const rows = s.modules.map((m) => {
      const tr = covobs.clone('module-row');
      tr.querySelector('.name').textContent = m.name;
      tr.querySelector('.mod').title = m.path || '';
      tr.querySelector('.runtime').textContent = m.runtime;
      const about = [m.producer, m.tools && 'read with ' + m.tools, m.build_id && 'build id ' + m.build_id,
        m.unavailable && 'not reported: ' + m.unavailable].filter(Boolean);
      tr.querySelector('.about').textContent = about.join('; ');
      tr.querySelector('.artifacts').textContent = m.artifacts;
      tr.querySelector('.files').textContent = m.files;
      for (const k of ['lines', 'functions', 'branches', 'regions']) covobs.pctCell(tr.querySelector('td.' + k), m[k]);
      return tr;
    });
    $('modules').tBodies[0].replaceChildren(...rows);
  }

  function renderExcluded(s) {
    $('excluded-section').hidden = s.excluded.length === 0;
    const rows = s.excluded.map((e) => {
      const tr = covobs.clone('excluded-row');
      tr.querySelector('.seq').textContent = e.seq;
      tr.querySelector('.pid').textContent = e.pid;
      tr.querySelector('.file').textContent = e.file;
      tr.querySelector('.why').textContent = e.reason;
      return tr;
    });
    $('excluded').tBodies[0].replaceChildren(...rows);
  }

  function render(s) {
    if (!s.version || s.version <= shownVersion) return;
    shownVersion = s.version;
    document.body.dataset.version = s.version;
    const sub = [];
    if (s.command) sub.push(s.command);
    if (s.targets.length) sub.push('targets: ' + s.targets.map((t) => t.comm + ' (pid ' + t.pid + ')').join(', '));
    sub.push(s.artifacts + ' artifact' + (s.artifacts === 1 ? '' : 's') + ', ' + s.reported + ' reported, ' +
      s.excluded.length + ' left out');
    $('sub').textContent = sub.join(' \u00b7 ');
    $('dir').textContent = s.dir;
    document.title = 'covobs: ' + covobs.fmtPct(s.totals.lines.percent) + ' lines \u00b7 ' + s.dir;
    covobs.showError(s.error);
    covobs.cards($('cards'), s.totals);
    drawChart($('chart'), s.timeline);
    $('chart').dataset.points = s.timeline_points;
    $('chart-note').textContent = 'Session coverage after each artifact, in collection order; it grows here as artifacts arrive.' +
      (s.timeline_points > s.timeline.length ? ' ' + s.timeline.length + ' of ' + s.timeline_points + ' points drawn.' : '');
    const warnings = $('warnings');
    warnings.hidden = s.warnings.length === 0;
    warnings.querySelector('ul').replaceChildren(...s.warnings.map((w) => {
      const li = document.createElement('li');
      li.textContent = w;
      return li;
    }));
    renderFiles(s);
    renderModules(s);
    renderExcluded(s);
    $('footer').textContent = 'covobs ' + s.covobs_version + ' \u00b7 updated ' +
      new Date(s.updated_unix_ms).toLocaleTimeString() + ' \u00b7 refresh ' + s.version;
  }

  fetch('/api/summary').then((r) => r.json()).then(render).catch(() => {});
  covobs.connect(render);
})();
