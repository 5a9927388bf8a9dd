// Soloist dashboard: loads server-rendered fragments with the API key from
// session storage, and refreshes them on the node's change stream.
(function () {
  'use strict';
  var K = 'soloist.key', S = window.__soloist = { seen: {}, events: 0 };
  var key = sessionStorage.getItem(K) || '';
  function hdr(extra) { var h = extra || {}; if (key) h.Authorization = 'Bearer ' + key; return h; }
  function req(url, opt) {
    opt = opt || {}; opt.headers = hdr(opt.headers); opt.cache = 'no-store';
    return fetch(url, opt).then(function (r) {
      if (r.status === 401) { document.getElementById('app').innerHTML = ''; window.soloistLogin('That key was refused.'); throw new Error('unauthorized'); }
      return r;
    });
  }
  var app = document.getElementById('app');
  app.innerHTML = '<a href="#main" class="skip" style="position:absolute;left:-9999px">Skip to content</a><header><b>Soloist</b><nav aria-label="Pages">' +
    '<a href="/ui/instances">Instances</a><a href="/ui/cluster">Cluster</a><a href="/ui/schedules">Schedules</a></nav>' +
    '<span id="live" aria-live="polite">connecting…</span><button type="button" id="signout">Sign out</button></header><main id="main" tabindex="-1"></main>' +
    '<dialog id="dlg"><form method="dialog"><p id="dlgmsg"></p><div id="dlgf"></div><div class="bar"><button value="ok" id="dlgok">Confirm</button><button value="cancel" formnovalidate>Cancel</button></div></form></dialog><div id="toast" role="status" hidden></div>';
  var main = document.getElementById('main');
  document.getElementById('signout').onclick = function () { sessionStorage.removeItem(K); location.reload(); };

  function fragURL() {
    var p = location.pathname, q = location.search;
    if (p === '/ui/' || p === '/ui/instances') return '/ui/f/instances' + q;
    if (p.indexOf('/ui/instances/') === 0) return '/ui/f/instance?id=' + encodeURIComponent(decodeURIComponent(p.slice(14)));
    if (p === '/ui/cluster') return '/ui/f/cluster';
    if (p === '/ui/schedules') return '/ui/f/schedules';
    return null;
  }
  function nav() {
    var links = document.querySelectorAll('header nav a');
    for (var i = 0; i < links.length; i++) {
      var a = links[i], on = location.pathname.indexOf(a.getAttribute('href')) === 0 || (location.pathname === '/ui/' && i === 0);
      if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
  }
  function load() {
    nav();
    var u = fragURL();
    if (!u) { main.innerHTML = '<p class="err">No such page.</p>'; return Promise.resolve(); }
    return req(u).then(function (r) { return r.text(); }).then(function (t) { main.innerHTML = t; after(); }).catch(function (e) { if (e.message !== 'unauthorized') toast('Cannot load: ' + e.message); });
  }
  // refresh reloads the live part of the page, keeping selection and focus.
  var busy = false, dirty = false;
  function refresh() {
    var part = document.getElementById('livepart');
    if (!part) return;
    if (busy) { dirty = true; return; }
    busy = true; dirty = false;
    var checked = {}, boxes = part.querySelectorAll('input.sel:checked');
    for (var i = 0; i < boxes.length; i++) checked[boxes[i].value] = true;
    var all = document.getElementById('allmatch'), allOn = all && all.checked;
    var fid = document.activeElement && part.contains(document.activeElement) ? (document.activeElement.value || document.activeElement.id) : null;
    req(part.dataset.src).then(function (r) { return r.text(); }).then(function (t) {
      var tmp = document.createElement('div'); tmp.innerHTML = t;
      var fresh = tmp.querySelector('#livepart') || tmp;
      part.innerHTML = fresh.innerHTML;
      var bs = part.querySelectorAll('input.sel');
      for (var i = 0; i < bs.length; i++) if (checked[bs[i].value]) bs[i].checked = true;
      var a = document.getElementById('allmatch'); if (a) a.checked = allOn;
      if (fid) { var f = part.querySelector('[value="' + CSS.escape(fid) + '"]') || document.getElementById(fid); if (f) f.focus(); }
      after();
    }).catch(function () {}).then(function () { busy = false; if (dirty) refresh(); });
  }
  function after() { mark(); tick(); }
  // mark notes when each row state was first shown (read by the tests).
  function mark() {
    var now = Date.now(), rows = main.querySelectorAll('tr[data-id]');
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i], k = r.dataset.id + '|' + r.querySelector('.st').textContent + '|' + r.querySelector('.holder').textContent + '|' + r.querySelector('.token').textContent;
      if (!S.seen[k]) S.seen[k] = now;
    }
    var p = document.getElementById('livepart');
    if (p && p.dataset.instance) {
      var k2 = p.dataset.instance + '|' + document.getElementById('status').textContent + '|' + p.querySelector('.holder').textContent + '|' + p.querySelector('.token').textContent;
      if (!S.seen[k2]) S.seen[k2] = now;
    }
  }
  function fmt(ms) { var s = Math.round(ms / 1000); return s < 120 ? s + 's' : s < 7200 ? Math.round(s / 60) + 'm' : Math.round(s / 3600) + 'h'; }
  function tick() {
    var now = Date.now(), us = main.querySelectorAll('[data-until]'), ss = main.querySelectorAll('[data-since]');
    for (var i = 0; i < us.length; i++) { var u = +us[i].dataset.until; if (u) us[i].textContent = u > now ? fmt(u - now) : 'expired'; }
    for (var j = 0; j < ss.length; j++) { var t = +ss[j].dataset.since; if (t) ss[j].textContent = fmt(now - t) + ' ago'; }
  }
  setInterval(tick, 1000);

  // Navigation without reloads; deep links are plain URLs.
  document.addEventListener('click', function (e) {
    var a = e.target.closest && e.target.closest('a[href^="/ui/"]');
    if (a && !e.ctrlKey && !e.metaKey && !e.shiftKey && e.button === 0) { e.preventDefault(); history.pushState(null, '', a.getAttribute('href')); load().then(function () { main.focus(); }); return; }
    var b = e.target.closest && e.target.closest('button[data-act],button[data-bulk]');
    if (b) { e.preventDefault(); if (b.dataset.act) act(b.dataset.act); else bulk(b.dataset.bulk); }
    if (e.target.id === 'selall') { var bs = main.querySelectorAll('input.sel'); for (var i = 0; i < bs.length; i++) bs[i].checked = e.target.checked; }
  });
  document.addEventListener('submit', function (e) {
    if (e.target.id !== 'filters') return;
    e.preventDefault();
    var q = new URLSearchParams(), fd = new FormData(e.target);
    fd.forEach(function (v, k) { if (v) q.append(k, v); });
    history.pushState(null, '', '/ui/instances' + (q.toString() ? '?' + q : ''));
    load();
  });
  window.addEventListener('popstate', load);

  var dlg = document.getElementById('dlg');
  function ask(msg, fields) {
    return new Promise(function (resolve) {
      document.getElementById('dlgmsg').textContent = msg;
      var f = document.getElementById('dlgf'); f.innerHTML = '';
      (fields || []).forEach(function (fl) {
        var l = document.createElement('label'); l.textContent = fl.label;
        var i = document.createElement(fl.area ? 'textarea' : 'input'); i.name = fl.name; i.value = fl.value || ''; i.required = !!fl.required;
        l.appendChild(i); f.appendChild(l);
      });
      dlg.onclose = function () {
        if (dlg.returnValue !== 'ok') return resolve(null);
        var out = {}, ins = f.querySelectorAll('input,textarea');
        for (var i = 0; i < ins.length; i++) out[ins[i].name] = ins[i].value;
        resolve(out);
      };
      dlg.returnValue = ''; dlg.showModal();
      var first = f.querySelector('input,textarea'); (first || document.getElementById('dlgok')).focus();
    });
  }
  function toast(msg) { var t = document.getElementById('toast'); t.textContent = msg; t.hidden = false; clearTimeout(toast.t); toast.t = setTimeout(function () { t.hidden = true; }, 6000); }
  function answer(r) { return r.text().then(function (t) { var j = {}; try { j = JSON.parse(t); } catch (e) {} if (!r.ok) throw new Error(j.error || r.status); return j; }); }
  function act(a) {
    var id = document.getElementById('livepart').dataset.instance, q = new URLSearchParams(), body = null;
    var p = a === 'raiseEvent' ? ask('Raise an event on ' + id, [{ name: 'name', label: 'Event name', required: true }, { name: 'data', label: 'Data (JSON)', value: 'null', area: true }])
      : a === 'terminate' ? ask('Terminate ' + id + '?', [{ name: 'reason', label: 'Reason' }])
      : a === 'purge' || a === 'restart' ? ask((a === 'purge' ? 'Purge ' : 'Restart ') + id + '?') : Promise.resolve({});
    p.then(function (v) {
      if (!v) return;
      if (v.name) q.set('name', v.name);
      if (v.reason) q.set('reason', v.reason);
      if (a === 'raiseEvent') body = v.data || 'null';
      return req('/ui/api/instances/' + encodeURIComponent(id) + '/' + a + (q.toString() ? '?' + q : ''), { method: 'POST', body: body, headers: { 'Content-Type': 'application/json' } })
        .then(answer).then(function () { toast(a + ': done'); if (a === 'purge') { history.pushState(null, '', '/ui/instances'); load(); } else refresh(); });
    }).catch(function (e) { toast(a + ' failed: ' + e.message); });
  }
  function bulk(a) {
    var all = document.getElementById('allmatch'), body = { action: a }, n;
    if (all && all.checked) { body.filter = document.getElementById('instances').dataset.filter; n = +document.getElementById('count').dataset.total; }
    else { body.ids = Array.prototype.map.call(main.querySelectorAll('input.sel:checked'), function (b) { return b.value; }); n = body.ids.length; }
    if (!n) { toast('Select instances first, or tick "all matching the filter".'); return; }
    ask(a.charAt(0).toUpperCase() + a.slice(1) + ' ' + n + ' instance' + (n === 1 ? '' : 's') + '?').then(function (v) {
      if (!v) return;
      return req('/ui/api/bulk', { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } }).then(answer).then(function (j) {
        toast(a + ': ' + j.succeeded + ' of ' + j.matched + ' done' + (j.failed.length ? '; failed: ' + j.failed.map(function (f) { return f.id + ' (' + f.error + ')'; }).join(', ') : ''));
        refresh();
      });
    }).catch(function (e) { toast(a + ' failed: ' + e.message); });
  }

  // The change stream, read with fetch so the key travels in a header.
  var live = document.getElementById('live');
  function stream() {
    req('/ui/api/stream').then(function (r) {
      if (!r.ok || !r.body) throw new Error(r.status);
      var rd = r.body.getReader(), dec = new TextDecoder(), buf = '';
      live.textContent = 'live'; live.className = 'on';
      function pump() {
        return rd.read().then(function (x) {
          if (x.done) throw new Error('stream ended');
          buf += dec.decode(x.value, { stream: true });
          var i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            var msg = buf.slice(0, i); buf = buf.slice(i + 2);
            var ev = /^event: (\w+)/m.exec(msg), data = /^data: (.*)$/m.exec(msg);
            if (!ev) continue;
            if (ev[1] === 'hello' && data && JSON.parse(data[1]).live === false) { live.textContent = 'not live: this node does not watch (role api)'; live.className = ''; }
            if (ev[1] === 'change' || ev[1] === 'reset') { S.events++; refresh(); }
          }
          return pump();
        });
      }
      return pump();
    }).catch(function (e) {
      if (e.message === 'unauthorized') return;
      live.textContent = 'reconnecting…'; live.className = '';
      setTimeout(function () { stream(); refresh(); }, 1000);
    });
  }
  load().then(stream);
})();
