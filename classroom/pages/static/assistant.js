// assistant.js: the assistant teacher's page, for a phone, tablet or
// laptop. The assistant signs in with their own account (the session
// cookie), types the code from the big screen (or arrives by its QR code,
// assistant.html#code=NNNNNN) and gets the classroom's assistant token for
// the class now, kept in page memory only. Here are the tools the big
// screen no longer shows: the roster with present/late/absent marks,
// answers per student or for the room, and the room's own quiz.
"use strict";

const A = { me: null, code: "", conn: null, quiz: null, roster: null, marks: {}, errors: [], sessionId: "" };
window.assistant = A;
const $ = ce.byId;

// TEXT: the strings this script shows (the rest are in assistant.html).
// Every string is in the catalogue (i18n.js, keys assistant.*).
const t = i18n.t;

function signedIn(me) {
  A.me = me;
  $("who").textContent = me.name || me.staff_id;
  $("signin").hidden = true; $("room").hidden = false;
}

$("a-signin").onclick = async () => {
  $("signin-error").textContent = "";
  try {
    await ce.signIn({ id: $("a-id").value.trim(), password: $("a-password").value });
    $("a-password").value = "";
    const me = await ce.me();
    if (me) { signedIn(me); if ($("code").value) openRoom(); }
  } catch (e) { $("signin-error").textContent = i18n.err(e); }
};
$("a-signout").onclick = async () => { if (A.keep) A.keep.stop(); if (A.conn) A.conn.close(); await ce.signOut(); location.reload(); };
$("go").onclick = () => openRoom();

// openRoom asks the edge for the code's classroom and its class now, and
// joins it; without a class it asks again every 2 s.
async function openRoom() {
  $("room-error").textContent = "";
  A.code = $("code").value.trim();
  let v;
  try {
    v = await ce.request("POST", "/api/v1/assistant/join", { body: { code: A.code } });
  } catch (e) {
    $("room-error").textContent = i18n.err(e);
    // The edge did not answer (restarting, or the network is down): ask
    // again with backoff. A refusal (wrong code, signed out) waits for the
    // assistant.
    if (!e.status) A.waitTimer = setTimeout(openRoom, reconnectDelay(4));
    return;
  }
  $("room-name").textContent = v.classroom_name || v.classroom_id;
  A.classroom = v.classroom_id;
  if (!v.session || !v.assistant_token) {
    $("waiting").hidden = false;
    A.waitTimer = setTimeout(() => { if (!A.keep) openRoom(); }, 2000);
    return;
  }
  $("waiting").hidden = true;
  if (A.keep && A.sessionId === v.session.id) return;
  join(v);
}

// join stays in the class v (reconnect.js): when the connection closes —
// the edge restarted, the network blinked, the phone slept — the page
// joins again with backoff and jitter, with the same assistant token (the
// edge keeps the class's tokens across a restart; the sign-in may not
// survive it), and restores what it showed: the roster of the group it had
// loaded, the marks (from the edge) and the open quiz (the edge sends it
// again on join). A token the edge refuses (the class ended, the token was
// revoked) sends the page back to the edge with its code; without a class
// there it waits for the next.
function join(v) {
  if (A.keep) A.keep.stop();
  if (A.conn) A.conn.close();
  clearTimeout(A.waitTimer);
  A.sessionId = v.session.id; A.over = false; A.joins = 0;
  let view = v;
  A.keep = keepClass(async () => {
    if (!view) {
      try {
        view = await ce.request("POST", "/api/v1/assistant/join", { body: { code: A.code } });
      } catch (e) {
        // Refused (signed out, the code or the assignment changed): say
        // so and stop; no answer at all: the edge is still away, go on.
        if (e.status) { A.over = true; $("room-error").textContent = i18n.err(e); }
        throw e;
      }
    }
    if (!view.session || !view.assistant_token || view.session.id !== A.sessionId) {
      A.over = true; // the class ended while the page was away
      throw new Error("the class is over");
    }
    try {
      return await connect(view);
    } catch (e) {
      if (/^(hello|join):/.test(e.message)) view = null; // refused: ask the edge with the code
      throw e;
    }
  }, {
    ended: () => A.over,
    status: (st) => {
      A.link = st;
      if (st === "reconnecting") { A.reconnects = (A.reconnects || 0) + 1; $("status").textContent = t("session.reconnecting"); }
      if (A.over) classOver();
    },
    error: (e) => { A.errors.push("connect: " + e.message); if (A.over) classOver(); },
  });
}

// classOver goes back to waiting for the classroom's next class.
function classOver() {
  if (!A.keep) return;
  A.keep.stop(); A.keep = null; A.sessionId = "";
  if (A.conn) A.conn.close();
  A.waitTimer = setTimeout(openRoom, 2000);
}

// connect opens the assistant's control connection for the class v and
// restores the page's state on it; resolves with the Conn.
async function connect(v) {
  const conn = new Conn(v.assistant_token, t("assistant.participant", { name: A.me.name || A.me.staff_id }), {
    quiz: (m) => showQuiz(m.question),
    marks: (m) => { A.marks = m.marks; renderRoster(); },
    quiz_results: (m) => { if (A.quiz && m.results.quiz_id === A.quiz.id) quizBars($("room-results"), A.quiz, m.results); },
    ended: () => { $("status").textContent = t("room.ended"); A.over = true; setTimeout(classOver, 0); },
    error: (m) => A.errors.push(m.code + ": " + m.message),
  });
  A.conn = conn;
  try {
    await conn.open();
    A.joins++;
    $("live").hidden = false;
    $("status").textContent = t("assistant.joined");
    await loadRoster(A.group || "");
  } catch (e) { conn.close(); throw e; }
  return conn;
}

function showQuiz(q) {
  A.quiz = q;
  $("quiz").hidden = false;
  $("quiz-prompt").textContent = q.prompt;
  $("quiz-note").textContent = "";
  $("room-results").textContent = "";
  const box = $("quiz-options"); box.textContent = "";
  (q.options || []).forEach((o, i) => {
    box.append(el("button", { class: "quiet opt", "data-i": i, onclick: () => answer(q, i, $("student-pick").value) }, String.fromCharCode(65 + i) + ". " + o));
  });
}

async function answer(q, i, student) {
  const m = { type: "quiz_answer", quiz_id: q.id, choices: [i] };
  if (student) m.student_id = student;
  const r = await A.conn.req(m);
  const pupil = student && A.roster ? (A.roster.students.find((s) => s.id === student) || {}).name || student : student;
  $("quiz-note").textContent = r.type === "ack" ? (student ? t("assistant.saved", { pupil }) : t("assistant.sent", { choice: String.fromCharCode(65 + i) })) : i18n.err(r);
}

async function loadRoster(group) {
  const m = { type: "roster" };
  if (group) m.group = group;
  const r = await A.conn.req(m);
  $("roster-error").textContent = "";
  if (r.type !== "roster") {
    $("roster-error").textContent = i18n.err(r);
    $("group-ask").hidden = r.code !== "no_group";
    return;
  }
  $("group-ask").hidden = true;
  A.group = group; // loaded again after a reconnect
  A.roster = r; A.marks = r.marks || {};
  const pick = $("student-pick");
  while (pick.options.length > 1) pick.remove(1);
  for (const s of r.students) pick.append(el("option", { value: s.id }, s.name));
  renderRoster();
}
$("group-go").onclick = () => loadRoster($("group").value.trim());

function renderRoster() {
  if (!A.roster) return;
  const box = $("roster"); box.textContent = "";
  box.append(el("p", {}, t("assistant.group_title", { group: A.roster.group_name || A.roster.group, n: i18n.number(A.roster.students.length) })));
  for (const s of A.roster.students) {
    const row = el("div", { class: "roster-row", "data-student": s.id }, el("span", { class: "name" }, s.name));
    for (const st of ["present", "late", "absent"]) {
      row.append(el("button", { class: A.marks[s.id] === st ? "mark-" + st : "quiet", "data-status": st, title: t("att.status." + st), onclick: () => A.conn.req({ type: "mark", student_id: s.id, status: st }) }, t("assistant.mark." + st)));
    }
    box.append(row);
  }
}

// The room's own quiz (works without the master).
$("aq-push").onclick = async () => {
  const options = i18n.splitList($("aq-options").value);
  const q = { id: "a" + Date.now().toString(36), kind: "single", prompt: $("aq-prompt").value, options, correct: [Number(i18n.fold($("aq-correct").value)) - 1] };
  const r = await A.conn.req({ type: "quiz", question: q });
  $("aq-error").textContent = r.type === "ack" ? "" : i18n.err(r);
};

(async () => {
  await i18n.ready;
  const m = /^#code=([0-9]{6})/.exec(location.hash);
  if (m) $("code").value = m[1];
  const me = await ce.me();
  if (me) { signedIn(me); if ($("code").value) openRoom(); }
})();
