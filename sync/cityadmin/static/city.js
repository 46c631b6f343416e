// city.js: the city console. Plain JS, no build step, nothing loaded from
// elsewhere (a city office may have no internet). The session is an
// HttpOnly cookie the page never sees; every call goes to the admin API
// of whichever cityhub replica answers, since all state is in the store.
"use strict";

(() => {
  // t is the city console's message key in the page's language (the
  // edge's catalogues, /i18n/<lang>.json, keys city.*), {0}, {1}… from args.
  const t = (key, ...args) => window.i18n.t("city." + key, args);
  // problem is an import row error's text in the page's language: the
  // catalogue's text for its code (the edge console's import.* messages),
  // else the hub's English message.
  const problem = (p) => (p.code && window.i18n.has("import." + p.code)
    ? window.i18n.t("import." + p.code, Object.assign({ row: p.row, column: p.column }, p.args || {})) : p.message);
  const byId = (id) => document.getElementById(id);
  let me = null;
  let schools = [];
  let current = ""; // the open tab

  // el builds an element: "on…" attributes are listeners, kids appended.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== undefined && k !== null) e.append(k);
    return e;
  }

  // esc makes text safe inside HTML text and quoted attributes.
  const escMap = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => escMap[c]);

  // api calls the admin API; a non-2xx answer rejects with its message
  // (and the JSON, for a refused import's preview).
  async function api(method, path, body, type) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = type || "application/json";
    const res = await fetch("/api/v1/admin" + path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : (type ? body : JSON.stringify(body)) });
    const data = res.status === 204 ? {} : await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = new Error((data.error && data.error.message) || res.statusText);
      err.status = res.status;
      err.data = data;
      throw err;
    }
    return data;
  }

  function showError(e) {
    byId("error").textContent = e ? e.message : "";
    if (e && e.status === 401) signedOut();
  }

  // when formats an RFC 3339 time with one formatter per language: a
  // province's list has thousands (toLocaleString builds one each call).
  const formatters = {};
  function when(iso) {
    if (!iso || iso.startsWith("0001")) return t("never");
    const l = window.i18n.lang;
    formatters[l] = formatters[l] || new Intl.DateTimeFormat(l, { dateStyle: "short", timeStyle: "medium" });
    return formatters[l].format(new Date(iso));
  }

  function signedOut() {
    me = null;
    schoolsLoaded = false;
    current = "";
    byId("app").hidden = true;
    byId("signout").hidden = true;
    byId("signin").hidden = false;
    byId("who").textContent = "";
  }

  async function signedIn(p) {
    me = p;
    byId("signin").hidden = true;
    byId("app").hidden = false;
    byId("signout").hidden = false;
    byId("who").textContent = p.user + " · " + t(p.role) + (p.school ? " · " + p.school : "");
    for (const e of document.querySelectorAll("[data-roles]")) e.hidden = !e.dataset.roles.split(" ").includes(p.role);
    const first = document.querySelector("#tabs button:not([hidden])");
    const keep = current && !document.querySelector('#tabs button[data-tab="' + current + '"]').hidden;
    if (keep) await openTab(current); else if (first) await openTab(first.dataset.tab);
  }

  async function openTab(name) {
    current = name;
    window.cityTabDone = "";
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
    // A hidden province-sized list is dropped, not kept: showing it again
    // would lay out thousands of stale rows before the fresh ones arrive.
    if (name !== "edges") byId("edges").replaceChildren();
    for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== name + "-panel";
    showError(null);
    try {
      if (me.role !== "content_editor" && (name === "schools" || !schoolsLoaded)) await loadSchools();
      await ({ schools: renderSchools, edges: loadEdges, tokens: loadTokens, imports: async () => exportLinks(), catalog: loadCatalog, uploads: loadUploads, firmware: loadFirmware, health: loadHealth, accounts: loadAccounts })[name]();
    } catch (e) { showError(e); }
    window.cityTabDone = name; // page tests and timings wait for it
  }

  let schoolsLoaded = false;
  async function loadSchools() {
    schools = (await api("GET", "/schools")).schools;
    schoolsLoaded = true;
    for (const sel of document.querySelectorAll(".school-select")) {
      const keep = sel.value;
      sel.replaceChildren();
      if (sel.dataset.all) sel.append(el("option", { value: "" }, t("all")));
      if (sel.dataset.none) sel.append(el("option", { value: "" }, t("none")));
      for (const s of schools) sel.append(el("option", { value: s.code }, s.code + " — " + s.name));
      if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
    }
  }

  async function renderSchools() {
    const es = (await api("GET", "/edges")).edges;
    const rows = schools.map((s) => {
      const mine = es.filter((e) => e.school === s.code);
      return el("tr", { "data-school": s.code }, el("td", {}, s.code), el("td", {}, s.name),
        el("td", {}, String(mine.length)), el("td", {}, String(mine.filter((e) => e.online).length)));
    });
    byId("schools").replaceChildren(...rows);
  }

  // backlog is an edge's reported outbox: "—" when it reports none.
  function backlog(e) {
    if (!e.backlog_known) return "—";
    if (!e.backlog) return "0";
    return t("backlogof", e.backlog, age(e.backlog_oldest_seconds));
  }

  // age says a number of seconds the short way: 45 s, 12 min, 3 h, 2 d.
  function age(s) {
    if (s < 60) return t("u_s", s);
    if (s < 3600) return t("u_min", Math.round(s / 60));
    if (s < 172800) return t("u_h", Math.round(s / 3600));
    return t("u_d", Math.round(s / 86400));
  }

  // loadEdges renders the edges list; a province's thousands of rows are
  // built off-document and inserted once.
  async function loadEdges() {
    const school = byId("edges-school").value;
    const t0 = performance.now();
    const res = await api("GET", "/edges" + (school ? "?school=" + encodeURIComponent(school) : ""));
    const t1 = performance.now();
    // One HTML string parsed at once: for thousands of rows the parser is
    // several times faster than building each element (every value escaped).
    const html = [];
    for (const e of res.edges) {
      const cert = (!e.cert_not_after || e.cert_not_after.startsWith("0001")) ? "—" : when(e.cert_not_after);
      html.push('<div class="row" data-edge="', esc(e.id), '" data-health="', esc(e.health), '"><span class="mono">', esc(e.id),
        "</span><span>", esc(e.school), '</span><span><span class="pill h-', esc(e.health), '">', esc(t("h_" + e.health)),
        "</span></span><span>", esc(when(e.seen)), "</span><span>", String(e.acked), '</span><span class="backlog">', esc(backlog(e)), "</span><span>", esc(e.version || "—"),
        "</span><span>", esc(cert), "</span><span>",
        e.revoked ? esc(t("revoked")) : '<button data-revoke="' + esc(e.id) + '">' + esc(t("revoke")) + "</button>", "</span></div>");
    }
    const t2 = performance.now();
    byId("edges").innerHTML = html.join("");
    window.cityEdgesTiming = [t1 - t0, t2 - t1, performance.now() - t2];
    const h = res.health || {};
    byId("edges-summary").textContent = t("summary", res.edges.length, h.ok || 0, h.offline || 0, h.never_seen || 0);
    window.cityEdgesRendered = res.edges.length; // for page timing
  }

  async function revokeEdge(id) {
    if (!confirm(t("confirmrevoke", id))) return;
    try { await api("POST", "/edges/" + encodeURIComponent(id) + "/revoke"); await loadEdges(); } catch (e) { showError(e); }
  }

  async function loadTokens() {
    const school = byId("token-school").value;
    if (!school) { byId("tokens").replaceChildren(); return; }
    const res = await api("GET", "/schools/" + encodeURIComponent(school) + "/tokens");
    byId("tokens").replaceChildren(...res.tokens.map((tk) => el("tr", { "data-token": tk.id },
      el("td", { class: "mono" }, tk.id), el("td", {}, when(tk.expires)), el("td", {}, tk.used_by || "—"),
      el("td", {}, tk.used_by ? "" : el("button", { onclick: () => revokeToken(school, tk.id) }, t("revoke"))))));
  }

  async function revokeToken(school, id) {
    try { await api("POST", "/schools/" + encodeURIComponent(school) + "/tokens/" + id + "/revoke"); await loadTokens(); } catch (e) { showError(e); }
  }

  async function issueToken(ev) {
    ev.preventDefault();
    try {
      const school = byId("token-school").value;
      const tk = await api("POST", "/schools/" + encodeURIComponent(school) + "/tokens", { ttl_hours: +byId("token-ttl").value });
      byId("token-out").textContent = tk.token;
      byId("token-qr").src = tk.qr;
      byId("token-new").hidden = false;
      await loadTokens();
    } catch (e) { showError(e); }
  }

  // exportLinks points the download links at the chosen school's exports
  // (the CSV files cityhub export-* print; UTF-8 with BOM for Excel).
  function exportLinks() {
    const school = byId("import-school").value;
    for (const a of document.querySelectorAll("#exports a[data-export]")) {
      a.href = "/api/v1/admin/schools/" + encodeURIComponent(school) + "/exports/" + a.dataset.export;
      a.hidden = !school;
    }
  }

  let previewed = null; // the CSV the last good preview was of
  async function runImport(apply) {
    const school = byId("import-school").value, kind = byId("import-kind").value, csv = byId("import-csv").value;
    const out = byId("import-result");
    byId("import-apply").disabled = true;
    out.className = "";
    let pv;
    try {
      pv = await api("POST", "/schools/" + encodeURIComponent(school) + "/imports/" + kind + (apply ? "?apply=true" : ""), csv, "text/csv");
    } catch (e) {
      if (!e.data || !e.data.preview) { showError(e); return; }
      pv = e.data.preview;
    }
    byId("import-errors").replaceChildren(...pv.errors.map((r) => el("tr", {}, el("td", {}, String(r.row)), el("td", {}, r.column || ""), el("td", {}, problem(r)))));
    byId("import-errors-table").hidden = pv.errors.length === 0;
    byId("import-diff").replaceChildren(...pv.sample.map((d) => el("tr", { "data-op": d.op }, el("td", {}, t("op_" + d.op)), el("td", { class: "mono" }, d.key),
      el("td", { class: "mono" }, d.from || ""), el("td", { class: "mono" }, d.to || ""))));
    byId("import-diff-table").hidden = pv.sample.length === 0;
    if (pv.errors.length) {
      out.className = "error";
      out.textContent = t("previewbad", pv.errors.length);
      previewed = null;
    } else if (pv.applied) {
      out.className = "ok";
      out.textContent = t("applied", pv.change);
      previewed = null;
    } else {
      out.textContent = t("previewok", pv.rows, pv.added, pv.removed, pv.changed, pv.unchanged);
      previewed = csv;
      byId("import-apply").disabled = false;
    }
  }

  async function loadCatalog() {
    const items = (await api("GET", "/catalog")).items;
    const frag = document.createDocumentFragment();
    for (const it of items) {
      const f = (k) => el("input", { "data-field": k, value: it[k] || "" });
      const tr = el("tr", { "data-item": it.id }, el("td", { class: "mono" }, it.id), el("td", {}, f("title")), el("td", {}, f("subject")), el("td", {}, f("grade")));
      const status = el("span");
      tr.append(el("td", {}, el("button", { onclick: async () => {
        const body = {};
        for (const i of tr.querySelectorAll("input")) body[i.dataset.field] = i.value;
        try { await api("PATCH", "/catalog/" + encodeURIComponent(it.id), body); status.textContent = " " + t("saved"); } catch (e) { showError(e); }
      } }, t("save")), status));
      frag.append(tr);
    }
    byId("catalog").replaceChildren(frag);
  }

  // size formats a byte count for a reviewer.
  function size(n) {
    for (const [u, v] of [["GiB", 1 << 30], ["MiB", 1 << 20], ["KiB", 1 << 10]]) if (n >= v) return (n / v).toFixed(1) + " " + u;
    return n + " B";
  }

  // loadUploads lists school uploads in the chosen state. A reviewer
  // settles title, subject and grade in the row and publishes, or writes a
  // reason and rejects; a school admin sees their school's, read-only.
  async function loadUploads() {
    const state = byId("uploads-state").value;
    const res = await api("GET", "/uploads" + (state ? "?state=" + state : ""));
    byId("uploads-noreview").hidden = res.review !== false;
    const reviewer = me.role === "city_admin" || me.role === "content_editor";
    const frag = document.createDocumentFragment();
    for (const u of res.uploads) {
      const it = u.item;
      const pending = u.state === "pending";
      const f = (k) => el("input", { "data-field": k, value: it[k] || "", disabled: !(pending && reviewer) });
      const note = el("span", { class: "note" });
      const reason = el("input", { "data-field": "reason", placeholder: t("reason"), maxlength: "500" });
      const tr = el("tr", { "data-upload": it.id, "data-state": u.state });
      const decide = async (act) => {
        const body = {};
        for (const i of tr.querySelectorAll("input")) body[i.dataset.field] = i.value;
        if (act === "reject" && !body.reason.trim()) { note.textContent = t("needreason"); note.classList.add("error"); reason.focus(); return; }
        try {
          await api("POST", "/uploads/" + encodeURIComponent(it.id) + "/" + act, body);
          if (act === "publish") byId("uploads-summary").textContent = t("published");
          await loadUploads();
        } catch (e) { showError(e); }
      };
      let decision;
      if (pending && reviewer) {
        decision = el("div", {}, el("button", { "data-act": "publish", onclick: () => decide("publish") }, t("publish")), " ",
          reason, " ", el("button", { "data-act": "reject", onclick: () => decide("reject") }, t("reject")), note);
      } else {
        decision = el("div", {}, el("span", { class: "pill st-" + u.state }, t("st_" + u.state)),
          u.reviewer ? " " + t("reviewedby", u.reviewer, when(u.decided)) : "",
          u.reason ? el("div", { class: "reason" }, u.reason) : null);
      }
      tr.append(el("td", {}, when(u.received)), el("td", {}, u.school || "—"), el("td", {}, f("title")), el("td", {}, f("subject")), el("td", {}, f("grade")),
        el("td", {}, el("div", { class: "mono" }, it.mime), el("div", {}, size(it.size)),
          el("a", { href: "/api/v1/admin/uploads/" + encodeURIComponent(it.id) + "/content", target: "_blank", rel: "noopener" }, t("open"))),
        el("td", {}, decision));
      frag.append(tr);
    }
    byId("uploads").replaceChildren(frag);
    if (byId("uploads-summary").textContent !== t("published")) byId("uploads-summary").textContent = t("uploadssummary", res.uploads.length);
  }

  async function loadFirmware() {
    const rels = (await api("GET", "/firmware")).releases;
    byId("firmware").replaceChildren(...rels.map((r) => {
      const set = async (pct) => {
        try {
          await api("POST", "/firmware/" + encodeURIComponent(r.target) + "/" + encodeURIComponent(r.version) + "/rollout", { channel: r.channel, rollout_percent: pct });
          await loadFirmware();
        } catch (e) { showError(e); }
      };
      return el("tr", { "data-release": r.target + "/" + r.version, "data-rollout": r.rollout_percent },
        el("td", {}, r.target), el("td", { class: "mono" }, r.version), el("td", {}, r.channel),
        el("td", {}, r.rollout_percent + " %"), el("td", {}, r.updated + " / " + r.edges), el("td", {}, String(r.failing)),
        el("td", {}, r.next_wave ? el("button", { "data-act": "next", onclick: () => set(r.next_wave) }, t("nextwave", r.next_wave)) : null, " ",
          r.rollout_percent > 0 ? el("button", { "data-act": "stop", onclick: () => set(0) }, t("stop")) : null));
    }));
  }

  // svg builds an SVG element (attributes only).
  function svg(tag, attrs) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  // chart draws series of one measure over [from, to] as lines; a slot
  // with no point (no hub ran) breaks the line rather than drawing a
  // false zero. series: [{key, cls, get}] over points.
  function chart(name, points, from, to, slot, series) {
    const W = 640, H = 140, L = 48, R = 8, T = 10, B = 22;
    const max = Math.max(1, ...points.flatMap((p) => series.map((s) => s.get(p))));
    const x = (ms) => L + ((ms - from) / Math.max(1, to - from)) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const g = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", role: "img", "aria-label": t("c_" + name) });
    g.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }), svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    const label = (txt, attrs) => { const e = svg("text", attrs); e.textContent = txt; return e; };
    g.append(label(String(max), { x: L - 4, y: T + 8, "text-anchor": "end" }), label("0", { x: L - 4, y: H - B, "text-anchor": "end" }),
      label(when(new Date(from).toISOString()), { x: L, y: H - 6 }), label(when(new Date(to).toISOString()), { x: W - R, y: H - 6, "text-anchor": "end" }));
    for (const s of series) {
      let d = "", prev = null, n = 0;
      for (const p of points) {
        const at = Date.parse(p.at);
        const v = s.get(p);
        if (v === null) { prev = null; continue; }
        d += (prev !== null && at - prev <= slot ? "L" : "M") + x(at).toFixed(1) + " " + y(v).toFixed(1);
        prev = at;
        n++;
      }
      // A lone point still shows: a dot, not an invisible one-point line.
      g.append(svg("path", { d: d || "M0 0", class: "line " + s.cls, "data-series": s.key, "data-points": n, fill: "none" }));
      for (const p of points.filter((q) => s.get(q) !== null).slice(-1)) g.append(svg("circle", { cx: x(Date.parse(p.at)), cy: y(s.get(p)), r: 2.5, class: "dot " + s.cls }));
    }
    const last = [...points].reverse().find((p) => series.every((s) => s.get(p) !== null));
    const now = last ? series.map((s) => s.get(last)).join(" / ") : "—";
    return el("figure", { class: "chart-box", "data-chart": name, "data-last": now }, el("figcaption", {}, t("c_" + name), " · ", t("latest", now)), g);
  }

  async function loadHealth() {
    const res = await api("GET", "/sync-health?hours=" + byId("health-hours").value);
    const from = Date.parse(res.from), to = Date.parse(res.to) + res.slot_seconds * 1000, slot = res.slot_seconds * 1000;
    const ps = res.points;
    const gauge = (k) => (p) => (p.sampled ? p[k] : null);
    const count = (k) => (p) => p[k];
    const charts = ps.length ? [
      chart("online", ps, from, to, slot, [{ key: "edges", cls: "s-edges", get: gauge("edges") }, { key: "online", cls: "s-online", get: gauge("online") }]),
      chart("records", ps, from, to, slot, [{ key: "records", cls: "s-records", get: count("records") }]),
      chart("errors", ps, from, to, slot, [{ key: "errors", cls: "s-errors", get: count("errors") }]),
      chart("backlog", ps, from, to, slot, [{ key: "backlog", cls: "s-backlog", get: gauge("backlog") }]),
    ] : [el("p", {}, t("nodata"))];
    byId("health-charts").replaceChildren(...charts);
  }

  async function loadAccounts() {
    const as = (await api("GET", "/accounts")).accounts;
    byId("accounts").replaceChildren(...as.map((a) => el("tr", { "data-user": a.user }, el("td", {}, a.user), el("td", {}, t(a.role)), el("td", {}, a.school || ""))));
  }

  document.addEventListener("DOMContentLoaded", async () => {
    await window.i18n.ready; // the catalogue is loaded and the static text translated
    byId("plain-http").hidden = location.protocol === "https:";
    byId("signin-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      byId("signin-error").textContent = "";
      try {
        await signedIn(await api("POST", "/login", { user: byId("user").value, password: byId("password").value }));
        byId("password").value = "";
      } catch (e) { byId("signin-error").textContent = e.status === 401 ? t("badlogin") : e.message; }
    });
    byId("signout").addEventListener("click", async () => { try { await api("POST", "/logout"); } catch (e) { /* gone already */ } signedOut(); });
    for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => openTab(b.dataset.tab));
    byId("school-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/schools", { code: byId("school-code").value.trim(), name: byId("school-name").value.trim() });
        byId("school-code").value = ""; byId("school-name").value = "";
        await loadSchools(); await renderSchools();
      } catch (e) { showError(e); }
    });
    byId("health-hours").addEventListener("change", () => loadHealth().catch(showError));
    byId("health-refresh").addEventListener("click", () => loadHealth().catch(showError));
    byId("uploads-state").addEventListener("change", () => { byId("uploads-summary").textContent = ""; loadUploads().catch(showError); });
    byId("edges-school").addEventListener("change", () => loadEdges().catch(showError));
    byId("edges-refresh").addEventListener("click", () => loadEdges().catch(showError));
    // One listener for the whole list's revoke buttons.
    byId("edges").addEventListener("click", (ev) => { const id = ev.target.dataset && ev.target.dataset.revoke; if (id) revokeEdge(id); });
    byId("token-school").addEventListener("change", () => loadTokens().catch(showError));
    byId("token-form").addEventListener("submit", issueToken);
    byId("import-school").addEventListener("change", exportLinks);
    byId("import-file").addEventListener("change", async (ev) => {
      const f = ev.target.files[0];
      if (f) { byId("import-csv").value = await f.text(); byId("import-apply").disabled = true; }
    });
    byId("import-csv").addEventListener("input", () => { byId("import-apply").disabled = true; });
    byId("import-preview").addEventListener("click", () => runImport(false));
    byId("import-apply").addEventListener("click", () => { if (previewed === byId("import-csv").value) runImport(true); });
    byId("account-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/accounts", { user: byId("acc-user").value, password: byId("acc-password").value,
          role: byId("acc-role").value, school: byId("acc-role").value === "school_admin" ? byId("acc-school").value : "" });
        byId("acc-password").value = "";
        await loadAccounts();
      } catch (e) { showError(e); }
    });
    try { await signedIn(await api("GET", "/me")); } catch (e) { signedOut(); }
  });
})();
