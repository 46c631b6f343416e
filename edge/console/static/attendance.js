// Live classes in the console: links to the teacher and classroom pages and,
// per session, attendance (joins, leaves, marks) and quiz answers from the
// stored learning records. Self-contained: it adds its own panel and only
// uses the console's sign-in (the session cookie).
"use strict";
(() => {
  const get = (path) => ce.request("GET", path);
  const el = ce.el;
  const panel = el("section", { class: "panel", id: "attendance-panel" });
  panel.innerHTML = '<h2>Classes: attendance and quizzes</h2>' +
    '<p>Teach: open <a href="/teacher.html">the teacher page</a>. Each classroom\'s big screen: open <a href="/classroom.html">the classroom page</a> once and pair it with the classroom\'s code.</p>' +
    '<select id="att-session"></select> <button id="att-refresh">Refresh</button><p id="att-error" class="error"></p><div id="att-body"></div>';
  let chosen = "";
  async function sessions() {
    const j = await get("/api/v1/sessions");
    const sel = panel.querySelector("#att-session");
    const list = (j.sessions || j).slice().reverse();
    sel.textContent = "";
    for (const s of list) sel.append(el("option", { value: s.id }, `${s.title} (${s.state})`));
    if (chosen && list.some((s) => s.id === chosen)) sel.value = chosen;
    chosen = sel.value;
  }
  async function show() {
    const body = panel.querySelector("#att-body");
    if (!chosen) { body.textContent = "No sessions yet."; return; }
    const a = await get(`/api/v1/sessions/${chosen}/attendance`);
    const q = await get(`/api/v1/sessions/${chosen}/records?kind=quiz`);
    const t = el("table");
    t.append(Object.assign(el("tr"), { innerHTML: "<th>Classroom</th><th>Connected</th><th>Joins</th><th>Leaves</th><th>Marks</th><th>Quiz answers</th>" }));
    for (const [cid, c] of Object.entries(a.classrooms)) {
      const tr = el("tr", { "data-classroom": cid });
      const marks = Object.entries(c.marks).map(([s, m]) => `${s}: ${m}`).join(", ") || "—";
      const answers = q.records.filter((r) => r.kind === "quiz.answer" && r.classroom_id === cid).length;
      for (const v of [cid, c.present ? "yes" : "no", c.joins, c.leaves, marks, answers]) tr.append(el("td", {}, String(v)));
      t.append(tr);
    }
    body.textContent = "";
    body.append(t);
  }
  async function refresh() {
    if (ce.byId("app").hidden) return;
    const err = panel.querySelector("#att-error");
    try { await sessions(); await show(); err.textContent = ""; } catch (e) { err.textContent = e.message; }
  }
  document.addEventListener("DOMContentLoaded", () => {
    ce.byId("app").append(panel);
    panel.querySelector("#att-session").onchange = (e) => { chosen = e.target.value; refresh(); };
    panel.querySelector("#att-refresh").onclick = refresh;
    setInterval(refresh, 5000);
    refresh();
  });
})();
