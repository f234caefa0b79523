// One file's page: its cards, functions and source lines with hit counts, fetched again each
// time the server says the session's coverage changed.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const path = new URLSearchParams(location.search).get('path') || '';
  let shownVersion = 0;
  let loading = false;
  let scrolled = false;

  function lineClass(l) {
    if (l.hits === undefined) return '';
    if (l.hits === 0) return 'miss';
    if (l.branches && l.branches[0] < l.branches[1]) return 'part';
    return 'hit';
  }

  function render(f) {
    shownVersion = f.version;
    document.body.dataset.version = f.version;
    document.title = 'covobs: ' + f.shown;
    $('name').textContent = f.shown;
    $('sub').textContent = f.path + ' \u00b7 module ' + f.modules.join(', ');
    covobs.cards($('cards'), f.totals);
    $('functions-section').hidden = f.functions.length === 0;
    $('functions').tBodies[0].replaceChildren(...f.functions.map((fn) => {
      const tr = covobs.clone('function-row');
      if (fn.hits === 0) tr.className = 'miss';
      const name = tr.querySelector('.name');
      name.textContent = fn.name;
      name.title = fn.symbol;
      const a = tr.querySelector('a');
      a.href = '#L' + fn.line;
      a.textContent = fn.line;
      tr.querySelector('.calls').textContent = fn.hits;
      return tr;
    }));
    const missing = $('source-missing');
    missing.hidden = !f.source_missing;
    missing.textContent = f.source_missing
      ? 'Source not available: ' + f.path + ' (' + f.source_missing + '). The lines below are those with coverage data.'
      : '';
    $('source').tBodies[0].replaceChildren(...f.lines.map((l) => {
      const tr = covobs.clone('line-row');
      tr.id = 'L' + l.n;
      tr.className = lineClass(l);
      const a = tr.querySelector('a');
      a.href = '#L' + l.n;
      a.textContent = l.n;
      tr.querySelector('.cnt').textContent = l.hits === undefined ? '' : l.hits;
      tr.querySelector('.br').textContent = l.branches ? l.branches[0] + '/' + l.branches[1] : '';
      tr.querySelector('.code').textContent = l.code;
      return tr;
    }));
    $('footer').textContent = 'refresh ' + f.version;
    if (!scrolled && location.hash) {
      scrolled = true;
      const target = document.getElementById(location.hash.slice(1));
      if (target) target.scrollIntoView();
    }
  }

  async function load() {
    if (loading) return;
    loading = true;
    try {
      const r = await fetch('/api/file?path=' + encodeURIComponent(path));
      if (!r.ok) {
        $('error').hidden = false;
        $('error').textContent = path + ': ' + (await r.text());
        return;
      }
      $('error').hidden = true;
      render(await r.json());
    } catch (e) {
      // The server is gone: the state badge says so; the page keeps what it has.
    } finally {
      loading = false;
    }
  }

  load();
  covobs.connect((s) => {
    if (s.version > shownVersion) load();
  });
})();
