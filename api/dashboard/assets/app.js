// steward dashboard: live updates over /v1/events, filtering and sorting
// in the browser, and the write actions with the token. Every value shown
// is set as text, never as markup.
"use strict";
(function () {
  const STATES = ["failed", "crashloop", "held", "starting", "stopped", "suspended", "running"];
  const TOKEN_KEY = "steward.token";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const page = document.body.dataset.page;
  document.documentElement.classList.add("js");

  // el builds an element: el("a", {href: "/"}, "text", child, ...).
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "data") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    e.append(...nodes(kids));
    return e;
  }
  // nodes flattens kids into nodes, leaving out the empty ones.
  function nodes(...kids) {
    return kids.flat(Infinity).filter((k) => k !== undefined && k !== null && k !== false && k !== "")
      .map((k) => (k instanceof Node ? k : document.createTextNode(String(k))));
  }

  // --- time -------------------------------------------------------------
  function span(ms) {
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 48 * 3600) return Math.floor(s / 3600) + "h";
    return Math.floor(s / 86400) + "d";
  }
  function ago(iso) {
    const d = Date.now() - Date.parse(iso);
    if (d < 0) return "in " + span(Math.ceil(-d / 1000) * 1000); // never "in 0s"
    if (d < 5000) return "just now";
    return span(d) + " ago";
  }
  function timeEl(iso) {
    return el("time", { datetime: iso, title: new Date(iso).toLocaleString() }, ago(iso));
  }
  function refreshTimes() {
    for (const t of $$("time[datetime]")) {
      t.textContent = ago(t.getAttribute("datetime"));
      t.title = new Date(t.getAttribute("datetime")).toLocaleString();
    }
  }
  setInterval(refreshTimes, 15000);

  // --- token and access -------------------------------------------------
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let writable = false;
  function headers() {
    return token ? { Authorization: "Bearer " + token } : {};
  }
  async function checkAccess(candidate) {
    const h = candidate ? { Authorization: "Bearer " + candidate } : {};
    const r = await fetch("/v1/access", { headers: h, cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }
  function showAccess(a, note) {
    writable = a.write;
    const form = $("#token");
    form.hidden = false;
    const badge = $("#access");
    badge.classList.toggle("write", a.write);
    badge.textContent = note || (a.write ? (a.token_required ? "write access" : "no token needed") : "read-only");
    $("#token-input").hidden = $("#token-use").hidden = !a.token_required || a.write;
    $("#token-forget").hidden = !(a.token_required && token);
    document.dispatchEvent(new CustomEvent("access"));
  }
  async function initAccess() {
    try {
      let a = await checkAccess(token);
      if (token && !a.write) {
        sessionStorage.removeItem(TOKEN_KEY);
        token = "";
        a = await checkAccess("");
        showAccess(a, "token refused: read-only");
        return;
      }
      showAccess(a);
    } catch (e) {
      showAccess({ write: false, token_required: true }, "read-only");
    }
  }
  $("#token").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = $("#token-input").value.trim();
    if (!v) return;
    try {
      const a = await checkAccess(v);
      if (a.write) {
        token = v;
        sessionStorage.setItem(TOKEN_KEY, v);
        $("#token-input").value = "";
        showAccess(a);
      } else {
        showAccess(a, "token refused: read-only");
      }
    } catch (e) {
      showAccess({ write: false, token_required: true }, "cannot reach the daemon");
    }
  });
  $("#token-forget").addEventListener("click", async () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = "";
    showAccess(await checkAccess("").catch(() => ({ write: false, token_required: true })));
  });

  // --- live stream ------------------------------------------------------
  function connect(path, onStatus, onHistory) {
    const live = $("#live");
    live.hidden = false;
    const es = new EventSource(path);
    es.onopen = () => { live.textContent = "live"; live.className = "live on"; };
    es.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
    es.addEventListener("status", (e) => {
      live.textContent = "live"; live.className = "live on";
      onStatus(JSON.parse(e.data));
    });
    es.addEventListener("history", (e) => onHistory(JSON.parse(e.data)));
    window.addEventListener("pagehide", () => es.close());
  }

  function specError(text) {
    const box = $("#spec-error");
    if (!box) return;
    box.hidden = !text;
    $("#spec-error-text").textContent = text || "";
  }

  // Fetches this page's fragment `part` and puts it in place of node.
  async function refreshPart(node, url) {
    try {
      const r = await fetch(url, { cache: "no-store" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.body.firstElementChild;
      if (fresh && node.isConnected) node.replaceWith(document.adoptNode(fresh));
    } catch (e) { /* the next change retries */ }
  }
  function debounce(fn, ms) {
    let t;
    return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
  }

  // Cells shared by the fleet table and the merchant page.
  function stateBadge(s) { return el("span", { class: "state s-" + s }, s); }
  function versionCell(m) {
    const drift = m.desired_version && m.version !== m.desired_version;
    return [m.version || "—", drift ? [" ", el("span", { class: "want", title: "desired version" }, "→ " + m.desired_version)] : null];
  }
  function healthCell(m) {
    if (!m.pid) return "—";
    return m.healthy ? el("span", { class: "ok" }, "healthy") : el("span", { class: "bad" }, "unhealthy");
  }
  function portCell(m) {
    return [m.port ? String(m.port) : "—", (m.domains || []).map((d) => [" ", el("span", { class: "domain" }, d)])];
  }
  function eventClass(ev) {
    if (ev.result === "error" || ev.error || ev.action === "exited" || ev.action === "database down") return "bad";
    if (ev.action === "unhealthy" || (ev.reason || "").startsWith("health") || ev.action === "hold" || ev.action === "rollback" || ev.result === "skipped") return "warn";
    if (ev.action === "database up") return "good";
    return "";
  }

  // --- fleet page -------------------------------------------------------
  function fleetPage() {
    const params = new URLSearchParams(location.search);
    const f = { state: params.get("state") || "", q: params.get("q") || "", sort: params.get("sort") || "state", desc: params.get("desc") === "1" };
    let doc = null;
    let dbUp = null;
    const columns = [
      ["merchant", "Merchant"], ["host", "Host"], ["state", "State"], ["pid", "PID"], ["version", "Version"],
      ["health", "Health"], ["database", "Database"], ["port", "Port / route"], ["restarts", "Restarts"], ["event", "Last event"],
    ];
    if (!columns.some(([k]) => k === f.sort)) f.sort = "state";
    if (!STATES.includes(f.state)) f.state = "";

    function href(change) {
      const g = Object.assign({}, f, change);
      const p = new URLSearchParams();
      if (g.state) p.set("state", g.state);
      if (g.q) p.set("q", g.q);
      if (g.sort !== "state" || g.desc) p.set("sort", g.sort);
      if (g.desc) p.set("desc", "1");
      const s = p.toString();
      return s ? "/?" + s : "/";
    }
    function sortHref(key) {
      return href(key === f.sort ? { desc: !f.desc } : { sort: key, desc: false });
    }
    const rank = (s) => { const i = STATES.indexOf(s); return i < 0 ? 3 : i; };
    const health = (m) => (m.pid && !m.healthy ? 0 : !m.pid ? 1 : 2);
    const evTime = (m) => (m.last_event ? Date.parse(m.last_event.time) : 0);
    function cmpVersions(a, b) {
      const as = (a || "").split(/[.+-]/).filter(Boolean), bs = (b || "").split(/[.+-]/).filter(Boolean);
      for (let i = 0; i < as.length && i < bs.length; i++) {
        const x = /^\d+$/.test(as[i]) ? +as[i] : NaN, y = /^\d+$/.test(bs[i]) ? +bs[i] : NaN;
        if (!isNaN(x) && !isNaN(y)) { if (x !== y) return x < y ? -1 : 1; continue; }
        if (as[i] !== bs[i]) return as[i] < bs[i] ? -1 : 1;
      }
      return as.length - bs.length;
    }
    const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    function compare(col, a, b) {
      switch (col) {
        case "host": return cmp(a.host || "", b.host || "");
        case "state": return rank(a.state) - rank(b.state);
        case "pid": return a.pid - b.pid;
        case "version": return cmpVersions(a.version, b.version);
        case "health": return health(a) - health(b);
        case "database": return cmp(a.database, b.database);
        case "port": return a.port - b.port;
        case "restarts": return a.restarts - b.restarts;
        case "event": return evTime(a) - evTime(b);
      }
      return cmp(a.id, b.id);
    }
    function searchText(m) {
      const parts = [m.id, m.host, m.state, m.version, m.desired_version, m.database, String(m.port), m.last_error].concat(m.domains || []);
      if (m.last_event) parts.push(m.last_event.action, m.last_event.reason);
      return parts.filter(Boolean).join(" ").toLowerCase();
    }
    function rows() {
      const q = f.q.toLowerCase();
      const out = doc.merchants.filter((m) => (!f.state || m.state === f.state) && (!q || searchText(m).includes(q)));
      out.sort((a, b) => (f.desc ? -1 : 1) * compare(f.sort, a, b) || cmp(a.id, b.id));
      return out;
    }

    function render() {
      if (!doc) return;
      const hasHosts = doc.merchants.some((m) => m.host);
      const counts = {};
      for (const m of doc.merchants) counts[m.state] = (counts[m.state] || 0) + 1;
      const total = doc.merchants.length;
      const meta = $("#meta");
      meta.replaceChildren(...nodes(total + (total === 1 ? " merchant" : " merchants"),
        doc.revision ? [" · specs ", el("code", {}, doc.revision.replace(/^sha256:/, "").slice(0, 12))] : "", " · serial " + doc.serial));
      const nav = $("#counts");
      nav.replaceChildren(...nodes(
        el("a", { href: href({ state: "" }), class: "count", "aria-current": f.state === "" ? "true" : null, data: { state: "" } }, "all ", el("b", {}, total)),
        STATES.filter((s) => counts[s]).map((s) => el("a", { href: href({ state: s }), class: "count s-" + s, "aria-current": f.state === s ? "true" : null, data: { state: s } }, s + " ", el("b", {}, counts[s])))));
      const table = $("#fleet");
      const cols = columns.filter(([k]) => k !== "host" || hasHosts);
      table.tHead.rows[0].replaceChildren(...cols.map(([k, label]) => el("th", {
        scope: "col", data: { key: k }, "aria-sort": k === f.sort ? (f.desc ? "descending" : "ascending") : null,
      }, el("a", { href: sortHref(k) }, label))));
      table.caption.textContent = "Merchants, " + f.sort + " order";
      const list = rows();
      const body = list.map((m) => el("tr", { data: { id: m.id }, class: "r-" + m.state },
        el("th", { scope: "row", "data-label": "Merchant" }, el("a", { href: "/merchants/" + encodeURIComponent(m.id) }, m.id), m.in_specs ? null : [" ", el("span", { class: "tag" }, "not in specs")]),
        hasHosts ? el("td", { "data-label": "Host" }, m.host || "") : null,
        el("td", { "data-label": "State" }, stateBadge(m.state), m.next_attempt ? [" ", el("span", { class: "sub" }, "retry ", timeEl(m.next_attempt))] : null),
        el("td", { "data-label": "PID", class: "num" }, m.pid ? String(m.pid) : "—"),
        el("td", { "data-label": "Version" }, versionCell(m)),
        el("td", { "data-label": "Health" }, healthCell(m)),
        el("td", { "data-label": "Database" }, m.database || ""),
        el("td", { "data-label": "Port / route" }, portCell(m)),
        el("td", { "data-label": "Restarts", class: "num" }, String(m.restarts)),
        el("td", { "data-label": "Last event", class: "event" },
          m.last_event ? [el("span", { class: "ev " + eventClass(m.last_event) }, m.last_event.action), " ", timeEl(m.last_event.time),
            m.last_event.reason ? el("span", { class: "reason" }, m.last_event.reason) : null,
            m.last_event.error ? el("span", { class: "reason bad" }, m.last_event.error) : null] : "—",
          m.last_error && !(m.last_event && m.last_event.error === m.last_error) ? el("span", { class: "reason bad" }, m.last_error) : null)));
      if (!body.length) body.push(el("tr", { class: "empty" }, el("td", { colspan: cols.length }, "No merchant matches.")));
      $("#fleet-rows").replaceChildren(...body);
      $("#shown").textContent = list.length + " of " + total + " shown";
      $("#f-state").value = f.state;
      specError(doc.spec_error);
      renderRollouts();
      renderDatabases();
    }

    function renderRollouts() {
      const box = $("#rollout-list");
      const ros = doc.rollouts || [];
      if (!ros.length) { box.replaceChildren(el("p", { class: "none" }, "No rollout in progress.")); return; }
      box.replaceChildren(...ros.map((ro) => {
        const passed = (ro.succeeded || []).length, failed = (ro.failed || []).length;
        const total = Math.max((ro.merchants || []).length, passed + failed), done = passed + failed;
        const st = ro.halted ? "halted" : (ro.merchants || []).length && passed >= ro.merchants.length ? "complete" : "in progress";
        let phase = "";
        if (st !== "complete" && total) {
          if (ro.canary > 0 && passed < ro.canary) phase = "canary: " + passed + " of " + ro.canary + " passed";
          else if (ro.max_parallel > 0) {
            const waves = Math.max(1, Math.ceil((total - (ro.canary || 0)) / ro.max_parallel));
            phase = "wave " + Math.min(waves, Math.floor((done - (ro.canary || 0)) / ro.max_parallel) + 1) + " of " + waves + " (" + ro.max_parallel + " at a time)";
          } else if (ro.canary > 0) phase = "canary passed";
        }
        if (total) {
          const ns = "http://www.w3.org/2000/svg";
          const svg = document.createElementNS(ns, "svg");
          svg.setAttribute("class", "progress"); svg.setAttribute("viewBox", "0 0 300 10");
          svg.setAttribute("preserveAspectRatio", "none"); svg.setAttribute("role", "img");
          svg.setAttribute("aria-label", passed + " passed, " + failed + " failed of " + total);
          let x = 0;
          for (const [n, cls, what] of [[passed, "passed", "passed"], [failed, "failed", "failed"], [total - done, "pending", "waiting"]]) {
            if (!n) continue;
            const w = Math.round((3000 * n) / total) / 10;
            const r = document.createElementNS(ns, "rect");
            r.setAttribute("x", x); r.setAttribute("y", 0); r.setAttribute("width", w); r.setAttribute("height", 10); r.setAttribute("class", cls);
            const t = document.createElementNS(ns, "title"); t.textContent = n + " " + what; r.append(t);
            svg.append(r); x += w;
          }
          return el("article", { class: "rollout ro-" + st.replace(" ", "-") },
            el("h3", {}, ro.package + " ", el("span", { class: "ver" }, ro.version), " ", el("span", { class: "state " + (st === "halted" ? "s-failed" : st === "complete" ? "s-running" : "s-starting") }, st)),
            ro.halted ? el("p", { class: "why" }, el("strong", {}, "Halted", ro.halted_at ? [" ", timeEl(ro.halted_at)] : "", ":"), " " + (ro.reason || "no reason recorded")) : null,
            el("p", { class: "sub" }, (phase ? phase + " · " : "") + passed + " passed, " + failed + " failed" + (total ? ", " + total + " in all" : "")),
            svg,
            failed ? el("p", { class: "sub" }, "Failed: ", ro.failed.map((id, i) => [i ? ", " : "", el("a", { href: "/merchants/" + encodeURIComponent(id) }, id)])) : null);
        }
        return el("article", { class: "rollout" }, el("h3", {}, ro.package + " " + ro.version + " ", el("span", { class: "state" }, st)),
          ro.halted ? el("p", { class: "why" }, "Halted: " + (ro.reason || "")) : null);
      }));
    }

    const refreshDatabases = debounce(() => {
      const node = $("#databases");
      if (node) refreshPart(node, "/?part=databases");
    }, 300);
    function renderDatabases() {
      const up = JSON.stringify((doc.databases || []).map((d) => [d.name, d.up]));
      if (dbUp !== null && up !== dbUp) refreshDatabases();
      dbUp = up;
    }

    function setFilter(change, push) {
      Object.assign(f, change);
      history.replaceState(null, "", href({}));
      render();
    }
    $("#filters").addEventListener("submit", (e) => { e.preventDefault(); setFilter({ q: $("#f-q").value.trim() }); });
    $("#f-q").addEventListener("input", debounce(() => setFilter({ q: $("#f-q").value.trim() }), 120));
    $("#f-state").addEventListener("change", () => setFilter({ state: $("#f-state").value }));
    $("#counts").addEventListener("click", (e) => {
      const a = e.target.closest("a[data-state]");
      if (!a || !doc) return;
      e.preventDefault();
      setFilter({ state: a.dataset.state });
    });
    $("#fleet").tHead.addEventListener("click", (e) => {
      const th = e.target.closest("th[data-key]");
      if (!th || !doc) return;
      e.preventDefault();
      const k = th.dataset.key;
      setFilter(k === f.sort ? { desc: !f.desc } : { sort: k, desc: false });
    });

    async function fullStatus() {
      try {
        const r = await fetch("/v1/status", { headers: headers(), cache: "no-store" });
        if (r.ok) { doc = await r.json(); render(); }
      } catch (e) { /* the stream brings it */ }
    }
    connect("/v1/events", (d) => {
      doc = d;
      render();
      if (d.spec_error && token) fullStatus(); // with the token: the whole diagnostics
    }, (ev) => {
      if ((ev.action || "").startsWith("database ")) refreshDatabases();
    });
    document.addEventListener("access", () => { if (token && doc && doc.spec_error) fullStatus(); });
  }

  // --- merchant page ----------------------------------------------------
  function merchantPage() {
    const id = document.body.dataset.merchant;
    const base = "/v1/merchants/" + encodeURIComponent(id);
    const field = (name) => $('[data-field="' + name + '"]');

    let mstate = field("state").textContent.trim();
    function renderMerchant(doc) {
      specError(doc.spec_error);
      const m = (doc.merchants || []).find((x) => x.id === id);
      mstate = m ? m.state : "gone";
      setWritable();
      const badge = stateBadge(m ? m.state : "gone");
      badge.dataset.field = "state";
      if (!m) { field("state").replaceWith(badge); return; }
      field("state").replaceWith(badge);
      field("pid").textContent = m.pid ? String(m.pid) : "—";
      field("version").replaceChildren(...nodes(versionCell(m)));
      field("health").replaceChildren(...nodes(healthCell(m)));
      field("database").textContent = m.database || "";
      field("port").replaceChildren(...nodes(portCell(m)));
      field("restarts").textContent = String(m.restarts);
      field("since").replaceChildren(...nodes(m.since ? timeEl(m.since) : "—"));
      const le = field("last_error");
      le.hidden = !m.last_error;
      le.textContent = m.last_error || "";
    }

    const refreshChart = debounce(() => {
      const node = $("#chart");
      if (node) refreshPart(node, location.pathname + "?part=chart");
    }, 500);
    function addEvent(ev) {
      const list = $("#timeline");
      const none = $("li.none", list);
      if (none) none.remove();
      const cls = eventClass(ev);
      const li = el("li", { class: "t-" + (cls || "plain") + " fresh" },
        timeEl(ev.time), " ", el("span", { class: "ev " + cls }, ev.action),
        ev.result ? [" ", el("span", { class: "sub" }, ev.result)] : null,
        ev.version ? [" ", el("span", { class: "ver" }, "v" + ev.version)] : null,
        ev.pid ? [" ", el("span", { class: "sub" }, "pid " + ev.pid)] : null,
        ev.revision ? [" ", el("code", { class: "sub" }, ev.revision.replace(/^sha256:/, "").slice(0, 12))] : null,
        ev.reason ? el("div", { class: "reason" }, ev.reason) : null,
        ev.error ? el("div", { class: "reason bad" }, ev.error) : null);
      list.prepend(li);
      while (list.children.length > 500) list.lastElementChild.remove();
      refreshChart();
    }

    // Actions: a first click arms the button, a second within 4s acts.
    const result = $("#action-result");
    const buttons = () => $$("#actions button, #actions input");
    // Suspend and resume are offered only where they change something.
    function setWritable() {
      for (const b of buttons()) {
        const a = b.dataset.action;
        b.disabled = !writable || (a === "suspend" && mstate === "suspended") || (a === "resume" && mstate !== "suspended");
      }
      $("#readonly").hidden = writable;
    }
    async function act(verb, body) {
      for (const b of buttons()) b.disabled = true;
      result.className = "result";
      result.textContent = verb + " of " + id + " requested…";
      try {
        const r = await fetch(base + "/" + verb, {
          method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, headers()), body: JSON.stringify(body || {}),
        });
        const out = await r.json().catch(() => ({}));
        if (!r.ok) {
          result.className = "result bad";
          result.textContent = verb + " refused (HTTP " + r.status + "): " + (out.error || r.statusText);
          if (r.status === 401) { writable = false; showAccess({ write: false, token_required: true }, "token refused: read-only"); }
        } else {
          result.className = "result ok";
          result.textContent = verb === "rollback" ? id + " rolled back to " + out.version + "." : id + ": " + verb + " done.";
        }
      } catch (e) {
        result.className = "result bad";
        result.textContent = verb + " failed: " + e.message;
      } finally {
        setWritable();
      }
    }
    const armed = new Map();
    function arm(btn, verb, run) {
      if (armed.get(btn)) {
        clearTimeout(armed.get(btn).t);
        btn.textContent = armed.get(btn).label;
        armed.delete(btn);
        run();
        return;
      }
      const label = btn.textContent;
      btn.textContent = "Confirm " + verb.toLowerCase() + "?";
      armed.set(btn, { label, t: setTimeout(() => { btn.textContent = label; armed.delete(btn); }, 4000) });
    }
    for (const b of $$("#actions button[data-action]")) {
      if (b.dataset.action === "rollback") continue;
      b.addEventListener("click", () => arm(b, b.textContent, () => act(b.dataset.action)));
    }
    $("#rollback").addEventListener("submit", (e) => {
      e.preventDefault();
      const to = $("#rollback-to").value.trim();
      const b = $('#rollback button[type="submit"]');
      arm(b, "roll back", () => act("rollback", to ? { to } : {}));
    });

    // Log tail: follows the log while the page is open.
    let logAbort = null;
    const logEl = $("#logs");
    async function tail() {
      if (logAbort) logAbort.abort();
      if (!writable) { logEl.hidden = true; $("#logs-form").hidden = true; $("#logs-note").hidden = false; return; }
      $("#logs-form").hidden = false;
      $("#logs-note").hidden = true;
      logEl.hidden = false;
      logEl.textContent = "";
      const ctl = new AbortController();
      logAbort = ctl;
      const p = new URLSearchParams({ n: $("#logs-n").value });
      const grep = $("#logs-grep").value;
      if (grep) p.set("grep", grep);
      if ($("#logs-follow").checked) p.set("follow", "1");
      try {
        const r = await fetch(base + "/logs?" + p, { headers: headers(), signal: ctl.signal, cache: "no-store" });
        if (!r.ok) {
          const out = await r.json().catch(() => ({}));
          logEl.textContent = "steward: " + (out.error || "HTTP " + r.status);
          return;
        }
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const atEnd = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 4;
          logEl.append(dec.decode(value, { stream: true }));
          if (logEl.childNodes.length > 400) logEl.textContent = logEl.textContent.split("\n").slice(-2000).join("\n");
          if (atEnd) logEl.scrollTop = logEl.scrollHeight;
        }
      } catch (e) {
        if (e.name === "AbortError") return;
        logEl.append("\nsteward: the log stream ended (" + e.message + "); retrying…\n");
        setTimeout(() => { if (logAbort === ctl) tail(); }, 3000);
      }
    }
    $("#logs-form").addEventListener("submit", (e) => { e.preventDefault(); tail(); });
    document.addEventListener("access", () => { setWritable(); tail(); });

    connect("/v1/events?merchant=" + encodeURIComponent(id), renderMerchant, (ev) => {
      if (ev.merchant === id) addEvent(ev);
    });
  }

  initAccess();
  refreshTimes();
  if (page === "fleet") fleetPage();
  if (page === "merchant") merchantPage();
})();
