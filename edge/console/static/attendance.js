// Live classes in the console: links to the teacher and classroom pages and,
// per session, attendance (joins, leaves, marks) and quiz answers from the
// stored learning records. Self-contained: it adds its own panel and only
// shares the admin token console.js keeps.
"use strict";
(() => {
  const token = () => sessionStorage.getItem("campusedge.admin") || "";
  const get = async (path) => {
    const res = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
    const j = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((j.error && j.error.message) || res.statusText);
    return j;
  };
  const mk = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const panel = mk("section", undefined, "panel");
  panel.id = "attendance-panel";
  panel.innerHTML = '<h2>Classes: attendance and quizzes</h2>' +
    '<p>Teach: open <a href="/teacher.html">the teacher page</a>. Each classroom\'s big screen: open <a href="/classroom.html">the classroom page</a> once and pair it with the classroom\'s code.</p>' +
    '<select id="att-session"></select> <button id="att-refresh">Refresh</button><p id="att-error" class="error"></p><div id="att-body"></div>';
  let chosen = "";
  async function sessions() {
    const j = await get("/api/v1/sessions");
    const sel = panel.querySelector("#att-session");
    const list = (j.sessions || j).slice().reverse();
    sel.textContent = "";
    for (const s of list) { const o = mk("option", `${s.title} (${s.state})`); o.value = s.id; sel.append(o); }
    if (chosen && list.some((s) => s.id === chosen)) sel.value = chosen;
    chosen = sel.value;
  }
  async function show() {
    const body = panel.querySelector("#att-body");
    if (!chosen) { body.textContent = "No sessions yet."; return; }
    const a = await get(`/api/v1/sessions/${chosen}/attendance`);
    const q = await get(`/api/v1/sessions/${chosen}/records?kind=quiz`);
    const t = mk("table");
    t.append(Object.assign(mk("tr"), { innerHTML: "<th>Classroom</th><th>Connected</th><th>Joins</th><th>Leaves</th><th>Marks</th><th>Quiz answers</th>" }));
    for (const [cid, c] of Object.entries(a.classrooms)) {
      const tr = mk("tr");
      tr.dataset.classroom = cid;
      const marks = Object.entries(c.marks).map(([s, m]) => `${s}: ${m}`).join(", ") || "—";
      const answers = q.records.filter((r) => r.kind === "quiz.answer" && r.classroom_id === cid).length;
      for (const v of [cid, c.present ? "yes" : "no", c.joins, c.leaves, marks, answers]) tr.append(mk("td", String(v)));
      t.append(tr);
    }
    body.textContent = "";
    body.append(t);
  }
  async function refresh() {
    if (!token() || document.getElementById("app").hidden) return;
    const err = panel.querySelector("#att-error");
    try { await sessions(); await show(); err.textContent = ""; } catch (e) { err.textContent = e.message; }
  }
  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("app").append(panel);
    panel.querySelector("#att-session").onchange = (e) => { chosen = e.target.value; refresh(); };
    panel.querySelector("#att-refresh").onclick = refresh;
    setInterval(refresh, 5000);
    refresh();
  });
})();
