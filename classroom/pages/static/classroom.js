// classroom.js: a classroom's big screen. Paired once with a code (the
// classroom's terminal token stays in this browser), it polls the edge for
// a session that includes its classroom and joins by itself: the master
// full screen with the on-stage classroom, the room's camera and mic, raise
// hand, quizzes (for the room, or per student by the assistant teacher),
// the roster to mark, and a banner while the master's feed is lost.
"use strict";

const P = { state: null, quiz: null, roster: null, marks: {}, errors: [], frames: {}, lastMasterFrames: 0, lastMasterChange: 0, feedLost: false, sessionId: "" };
window.room = P;
const $ = ce.byId;

// classterm -kiosk opens this page as classroom.html#terminal=<token>: the
// screen comes up already paired as that terminal. A fragment never goes
// on the wire; the token is kept like a code-paired one and the fragment
// is removed from the address bar and history at once.
(function takeTerminalFromFragment() {
  const m = /^#terminal=([^&]+)/.exec(location.hash);
  if (!m) return;
  try { ce.store("terminal", decodeURIComponent(m[1])); } catch (e) { P.errors.push("fragment: " + e.message); }
  history.replaceState(null, "", location.pathname + location.search);
})();

// The console's QR code for a classroom opens classroom.html#pair=<code>:
// the code is filled in, and the screen's user only presses Pair.
(function takePairCodeFromFragment() {
  let hash = location.hash;
  try { hash = decodeURIComponent(hash); } catch (e) { return; } // full-width digits arrive percent-encoded
  const m = /^#pair=([0-9\uFF10-\uFF19]{6})$/.exec(hash);
  if (!m) return;
  $("pair-code").value = m[1];
  history.replaceState(null, "", location.pathname + location.search);
})();

$("pair-go").onclick = async () => {
  $("pair-error").textContent = "";
  let j;
  try {
    j = await ce.request("POST", "/api/v1/pair", { body: { code: $("pair-code").value.trim(), name: $("pair-name").value.trim(), version: "classroom-page" } });
  } catch (e) { $("pair-error").textContent = e.message; return; }
  ce.store("terminal", j.token);
  $("pair").hidden = true;
  poll();
};

// current is the classroom's session now; null when the edge said no (an
// unknown token unpairs the screen). A network failure rejects.
async function current() {
  try {
    return await ce.request("GET", "/api/v1/classroom/current", { token: ce.stored("terminal") });
  } catch (e) {
    if (e.status === 401) { ce.store("terminal", ""); $("pair").hidden = false; }
    if (e.status) return null;
    throw e;
  }
}

async function poll() {
  if (!ce.stored("terminal")) { $("pair").hidden = false; $("status").textContent = "not paired"; return; }
  try {
    const cur = await current();
    if (cur) {
      P.classroom = cur.classroom_id;
      const connected = P.conn && !P.conn.closed;
      if (cur.session && (!connected || P.sessionId !== cur.session.id)) await join(cur);
      if (!cur.session && !connected) { $("waiting").hidden = false; $("live").hidden = true; $("status").textContent = "no class now"; }
    }
  } catch (e) { P.errors.push("poll: " + e.message); }
  setTimeout(poll, 1000);
}

function leaveUI() {
  for (const c of [P.conn, P.asst]) if (c) c.close();
  $("master-video").textContent = ""; $("onstage").textContent = "";
}

async function join(cur) {
  leaveUI();
  P.published = false;
  P.joins = (P.joins || 0) + 1;
  P.sessionId = cur.session.id;
  P.lastMasterFrames = 0; P.lastMasterChange = Date.now(); P.hadMaster = false;
  $("title").textContent = cur.session.title;
  $("waiting").hidden = true; $("live").hidden = false;
  const name = cur.classroom_name || "Classroom " + cur.classroom_id;
  $("room-name").textContent = name;
  P.conn = new Conn(cur.terminal_token, name, {
    state: (m) => { P.state = m; render(); },
    quiz: (m) => showQuiz(m.question),
    quiz_closed: (m) => { if (P.quiz && P.quiz.id === m.quiz_id) { P.quizOpen = false; $("quiz-note").textContent = "Closed"; } },
    ended: () => { $("status").textContent = "class ended"; P.sessionId = ""; },
    error: (m) => P.errors.push(m.code + ": " + m.message),
  });
  P.asst = new Conn(cur.assistant_token, name + " assistant", {
    marks: (m) => { P.marks = m.marks; renderRoster(); },
    quiz_results: (m) => { if (P.quiz && m.results.quiz_id === P.quiz.id) quizBars($("room-results"), P.quiz, m.results); },
    error: (m) => P.errors.push("assistant " + m.code + ": " + m.message),
  });
  await P.conn.open();
  await P.asst.open();
  $("status").textContent = "joined";
  await P.conn.subscribe((track, sid) => {
    if (track.kind === "audio") { document.body.append(videoEl(track)); return; }
    if (sid === "master") { P.hadMaster = true; $("master-video").append(videoEl(track)); }
    else { $("onstage").textContent = ""; $("onstage").append(videoEl(track)); }
    track.onended = () => { for (const v of document.querySelectorAll("video")) if (v.srcObject && v.srcObject.getTracks()[0] === track) v.remove(); };
  });
  // Without camera and microphone (plain HTTP on the LAN) the room still
  // watches the lesson, answers quizzes and raises hands; the banner at the
  // top says how to get its camera back.
  if (!(await checkMedia($("media-help")))) {
    P.errors.push("camera: " + mediaProblem());
    $("self").textContent = MEDIA_TEXT.selfBlocked;
  } else {
    try {
      P.media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
      $("self").textContent = ""; $("self").append(videoEl(P.media.getVideoTracks()[0]));
      await P.conn.publish(P.media);
      P.published = true;
    } catch (e) { P.errors.push("camera: " + e.message); $("self").textContent = MEDIA_TEXT.cameraFailed + e.message; }
  }
  loadRoster("");
}

function render() {
  const st = P.state;
  $("status").textContent = st.session_state;
  const raised = st.hands.includes(P.classroom);
  $("hand").textContent = raised ? "Lower hand" : "✋ Raise hand";
  $("hand").dataset.raised = raised ? "yes" : "no";
  if (st.stage === "" || st.stage === P.classroom) $("onstage").textContent = "";
}

$("hand").onclick = () => P.conn.req({ type: "hand", raised: !(P.state && P.state.hands.includes(P.classroom)) });

function showQuiz(q) {
  P.quiz = q; P.quizOpen = true;
  $("quiz").hidden = false;
  $("quiz-prompt").textContent = q.prompt;
  $("quiz-note").textContent = "";
  $("room-results").textContent = "";
  const box = $("quiz-options"); box.textContent = "";
  const sbox = $("student-options"); sbox.textContent = "";
  (q.options || []).forEach((o, i) => {
    box.append(el("button", { class: "quiet opt", "data-i": i, onclick: () => answer(P.conn, q, i, "") }, String.fromCharCode(65 + i) + ". " + o));
    sbox.append(el("button", { class: "quiet", onclick: () => answer(P.asst, q, i, $("student-pick").value) }, String.fromCharCode(65 + i)));
  });
  $("per-student").hidden = !(P.roster && P.roster.students.length);
}

async function answer(conn, q, i, student) {
  const m = { type: "quiz_answer", quiz_id: q.id, choices: [i] };
  if (student) m.student_id = student;
  const r = await conn.req(m);
  $("quiz-note").textContent = r.type === "ack" ? (student ? "Answer saved for " + student : "Answer sent: " + String.fromCharCode(65 + i)) : r.message;
}

async function loadRoster(group) {
  const m = { type: "roster" };
  if (group) m.group = group;
  const r = await P.asst.req(m);
  $("roster-error").textContent = "";
  if (r.type !== "roster") {
    $("roster-error").textContent = r.message || r.code;
    $("group-ask").hidden = r.code !== "no_group";
    return;
  }
  $("group-ask").hidden = true;
  P.roster = r; P.marks = r.marks || {};
  const pick = $("student-pick"); pick.textContent = "";
  for (const s of r.students) pick.append(el("option", { value: s.id }, s.name));
  renderRoster();
}
// The assistant's own quiz, for this room only (works without the master).
$("aq-push").onclick = async () => {
  const options = $("aq-options").value.split(",").map((s) => s.trim()).filter(Boolean);
  const q = { id: "a" + Date.now().toString(36), kind: "single", prompt: $("aq-prompt").value, options, correct: [Number($("aq-correct").value) - 1] };
  const r = await P.asst.req({ type: "quiz", question: q });
  $("aq-error").textContent = r.type === "ack" ? "" : r.message;
};

$("group-go").onclick = () => loadRoster($("group").value.trim());

function renderRoster() {
  if (!P.roster) return;
  const box = $("roster"); box.textContent = "";
  box.append(el("p", {}, `Group ${P.roster.group} (${P.roster.students.length})`));
  for (const s of P.roster.students) {
    const row = el("div", { class: "roster-row", "data-student": s.id }, el("span", { class: "name" }, s.name));
    for (const st of ["present", "late", "absent"]) {
      row.append(el("button", { class: P.marks[s.id] === st ? "mark-" + st : "quiet", "data-status": st, onclick: () => P.asst.req({ type: "mark", student_id: s.id, status: st }) }, st[0].toUpperCase()));
    }
    box.append(row);
  }
}

// The master's feed: decoded frames must keep growing while the class is
// live; 3 s without a new frame shows the banner (a cascade cut, the
// teacher's link), and the next frames hide it.
setInterval(async () => {
  if (!P.conn || P.conn.closed || !P.state || P.state.session_state !== "live") { $("banner").hidden = true; return; }
  P.frames = await P.conn.videoStats();
  const f = P.frames.master || 0;
  if (f < P.lastMasterFrames) P.lastMasterFrames = f; // new tracks count from 0
  if (f > P.lastMasterFrames) { P.lastMasterFrames = f; P.lastMasterChange = Date.now(); }
  P.feedLost = Date.now() - P.lastMasterChange > 3000;
  $("banner").hidden = !P.feedLost;
}, 1000);

checkMedia($("media-help")); // at once, not only when a class starts
poll();
