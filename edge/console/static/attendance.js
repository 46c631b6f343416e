// Live classes in the console: links to the teacher and classroom pages,
// the roster (import a CSV as the school office saved it; see
// docs/IMPORTS.md) and, per session — listed with its date and time —
// attendance (joins, leaves, marks) and quiz answers from the stored
// learning records, with classrooms and pupils by name. Self-contained: it
// adds its own panel and only uses the console's sign-in (the session
// cookie).
"use strict";
(() => {
  const get = (path) => ce.request("GET", path);
  const el = ce.el;
  const t = i18n.t;
  const panel = el("section", { class: "panel", id: "attendance-panel" });
  panel.innerHTML = '<h2 data-i18n="att.title"></h2>' +
    '<p><span data-i18n="att.teach"></span> <a href="/teacher.html" data-i18n="att.teacher_page"></a> · ' +
    '<span data-i18n="att.screen"></span> <a href="/classroom.html" data-i18n="att.classroom_page"></a></p>' +
    '<h3 data-i18n="att.roster"></h3><p id="att-roster-state"></p>' +
    // The browser's own file button speaks the browser's language, not the
    // page's: a label in the page's language opens it instead.
    '<form id="att-roster-form"><label class="filepick"><input id="att-roster-file" class="offscreen" type="file" accept=".csv,text/csv">' +
    '<span data-i18n="att.roster.choose"></span></label> <span id="att-roster-filename"></span> <button type="submit" data-i18n="att.roster.import"></button></form>' +
    '<p id="att-roster-result" role="status"></p><ul id="att-roster-problems" class="error"></ul>' +
    '<h3 data-i18n="att.sessions"></h3>' +
    '<select id="att-session"></select> <button id="att-refresh" data-i18n="att.refresh"></button><p id="att-error" class="error"></p><div id="att-body"></div>';
  let chosen = "";
  const names = { classrooms: new Map(), pupils: new Map() };

  // when is the time a person knows a session by: its start, planned
  // start, or creation, with the date.
  const when = (s) => i18n.dateTime(s.started_at || s.scheduled_start || s.created_at);

  async function loadNames() {
    const cs = await get("/api/v1/classrooms").catch(() => []);
    names.classrooms = new Map((cs.classrooms || cs).map((c) => [c.id, c.name]));
    const ro = await get("/api/v1/attendance/roster").catch(() => null);
    const stateEl = panel.querySelector("#att-roster-state");
    if (!ro) { stateEl.textContent = t("att.roster.none"); return; }
    names.pupils = new Map(ro.students.map((s) => [s.id, s.name]));
    const classes = new Set(ro.students.map((s) => s.homeroom)).size;
    stateEl.textContent = t("att.roster.state", { students: i18n.number(ro.students.length), classes: i18n.number(classes), source: t("att.source." + ro.source) });
  }

  async function sessions() {
    const j = await get("/api/v1/sessions");
    const sel = panel.querySelector("#att-session");
    const list = (j.sessions || j).slice().reverse();
    sel.textContent = "";
    for (const s of list) sel.append(el("option", { value: s.id }, t("att.session_option", { when: when(s), title: s.title, state: t("session.state." + s.state) })));
    if (chosen && list.some((s) => s.id === chosen)) sel.value = chosen;
    chosen = sel.value;
  }

  async function show() {
    const body = panel.querySelector("#att-body");
    if (!chosen) { body.textContent = t("att.no_sessions"); return; }
    const a = await get(`/api/v1/sessions/${chosen}/attendance`);
    const q = await get(`/api/v1/sessions/${chosen}/records?kind=quiz`);
    const tbl = el("table");
    const head = el("tr");
    for (const k of ["classroom", "connected", "joins", "leaves", "marks", "answers"]) head.append(el("th", {}, t("att.col." + k)));
    tbl.append(head);
    for (const [cid, c] of Object.entries(a.classrooms)) {
      const tr = el("tr", { "data-classroom": cid });
      const marks = Object.entries(c.marks).map(([s, m]) => t("att.mark", { pupil: names.pupils.get(s) || s, status: t("att.status." + m) })).join(t("common.list_sep")) || "—";
      const answers = q.records.filter((r) => r.kind === "quiz.answer" && r.classroom_id === cid).length;
      tr.append(el("td", { title: cid }, names.classrooms.get(cid) || cid), el("td", {}, c.present ? t("common.yes") : t("common.no")),
        el("td", {}, i18n.number(c.joins)), el("td", {}, i18n.number(c.leaves)), el("td", { class: "marks" }, marks), el("td", {}, i18n.number(answers)));
      tbl.append(tr);
    }
    body.textContent = "";
    body.append(tbl);
  }

  async function importRoster(e) {
    e.preventDefault();
    const f = panel.querySelector("#att-roster-file").files[0];
    const out = panel.querySelector("#att-roster-result");
    const probs = panel.querySelector("#att-roster-problems");
    out.textContent = ""; probs.replaceChildren();
    if (!f) return;
    const res = await fetch("/api/v1/attendance/roster", { method: "PUT", headers: { "Content-Type": "text/csv" }, body: f });
    const j = await res.json().catch(() => ({}));
    if (res.ok) {
      out.textContent = t("att.roster.imported", { students: i18n.number(j.students), encoding: j.encoding });
      e.target.reset();
      panel.querySelector("#att-roster-filename").textContent = "";
      refresh();
      return;
    }
    const er = j.error || {};
    out.textContent = er.code === "invalid_rows" ? t("att.roster.refused", { encoding: er.encoding || "—" }) : i18n.err({ code: er.code, message: er.message || res.statusText });
    for (const p of er.rows || []) probs.append(el("li", { "data-code": p.code }, i18n.problem(p)));
  }

  async function refresh() {
    if (ce.byId("app").hidden) return;
    const err = panel.querySelector("#att-error");
    try { await loadNames(); await sessions(); await show(); err.textContent = ""; } catch (e) { err.textContent = i18n.err(e); }
  }
  document.addEventListener("DOMContentLoaded", () => {
    ce.byId("app").append(panel);
    i18n.ready.then(() => {
      i18n.apply(panel);
      panel.querySelector("#att-session").onchange = (e) => { chosen = e.target.value; refresh(); };
      panel.querySelector("#att-refresh").onclick = refresh;
      panel.querySelector("#att-roster-form").onsubmit = importRoster;
      panel.querySelector("#att-roster-file").onchange = (e) => { panel.querySelector("#att-roster-filename").textContent = e.target.files[0] ? e.target.files[0].name : ""; };
      setInterval(refresh, 5000);
      refresh();
    });
  });
})();
