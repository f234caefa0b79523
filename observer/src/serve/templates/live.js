// Shared by the live pages: figures, cards, percentage cells, and the server-sent events that
// bring each new summary (the page never reloads).
'use strict';

const covobs = (() => {
  // One decimal, but a partial coverage never shows as 100.0% or 0.0% (as the report does).
  function fmtPct(p) {
    if (p === null || p === undefined) return '-';
    let s = p.toFixed(1);
    if (s === '100.0' && p < 100) s = '99.9';
    else if (s === '0.0' && p > 0) s = '0.1';
    return s + '%';
  }

  function level(p) {
    if (p === null || p === undefined) return 'lo';
    return p >= 80 ? 'hi' : p >= 50 ? 'mid' : 'lo';
  }

  function clone(id) {
    return document.getElementById(id).content.firstElementChild.cloneNode(true);
  }

  function setBar(bar, p) {
    bar.className = level(p);
    bar.style.width = (p || 0).toFixed(1) + '%';
  }

  // A table cell with a bar, the percentage and hit/total; "-" when nothing is instrumented.
  function pctCell(td, c) {
    td.replaceChildren();
    if (!c || c.percent === null || c.percent === undefined) {
      const s = document.createElement('span');
      s.className = 'note';
      s.textContent = '-';
      td.append(s);
      return;
    }
    const cell = clone('pct-tpl');
    setBar(cell.querySelector('.bar span'), c.percent);
    cell.querySelector('.p').textContent = fmtPct(c.percent);
    cell.querySelector('small').textContent = c.hit + '/' + c.total;
    td.append(cell);
  }

  const KINDS = [
    ['lines', 'Lines'],
    ['functions', 'Functions'],
    ['branches', 'Branches'],
    ['regions', 'Regions'],
    ['points', 'Points (OCaml)'],
  ];

  // One card per measure (id card-lines, card-functions, ...), updated in place.
  function cards(box, totals) {
    for (const [kind, label] of KINDS) {
      const c = totals[kind];
      let card = document.getElementById('card-' + kind);
      if (!c) {
        if (card) card.remove();
        continue;
      }
      if (!card) {
        card = clone('card-tpl');
        card.id = 'card-' + kind;
        card.querySelector('.k').textContent = label;
        box.append(card);
      }
      card.querySelector('.v').textContent = fmtPct(c.percent);
      card.querySelector('.n').textContent =
        c.total === 0 ? 'none instrumented' : c.hit + ' of ' + c.total + ' covered';
      setBar(card.querySelector('.bar span'), c.percent);
    }
  }

  // The session's state next to the title: running, finished, waiting, or the server gone.
  function showState(summary, connected) {
    const el = document.getElementById('state');
    if (!el) return;
    if (!connected) {
      el.className = 'state disconnected';
      el.textContent = 'disconnected';
      el.title = 'covobs is not serving any more; the last data stays on the page';
      return;
    }
    const state = summary ? summary.state : 'starting';
    const text = {
      running: 'live',
      finished: 'finished',
      waiting: 'waiting for the first artifact',
      starting: 'starting',
    };
    el.className = 'state ' + state;
    el.textContent = text[state] || state;
    el.title = '';
  }

  // Call onUpdate with each summary the server sends; the state badge follows the connection.
  function connect(onUpdate) {
    let last = null;
    let connected = false;
    const es = new EventSource('/events');
    es.addEventListener('update', (e) => {
      last = JSON.parse(e.data);
      connected = true;
      showState(last, true);
      onUpdate(last);
    });
    es.addEventListener('open', () => {
      connected = true;
      showState(last, true);
    });
    es.addEventListener('error', () => {
      if (es.readyState !== EventSource.OPEN) {
        connected = false;
        showState(last, false);
      }
    });
    return () => connected;
  }

  function showError(text) {
    const el = document.getElementById('error');
    el.hidden = !text;
    el.textContent = text ? 'The last refresh failed (older data shown): ' + text : '';
  }

  return { fmtPct, level, clone, pctCell, cards, connect, showError };
})();
