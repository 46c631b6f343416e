// classroom.js: a classroom's big screen, seen by the whole class. Paired
// once with a code (the terminal token then lives in an HttpOnly cookie no
// script can read), it polls the edge for a session that includes its
// classroom and joins by itself: the master full screen with the on-stage
// classroom, the room's camera and mic, raise hand, the quiz question, and
// a banner while the master's feed is lost. It shows no student name, mark
// or answer: the assistant's tools are on assistant.html, reached by the
// QR code and short code this page shows.
"use strict";

const P = { state: null, quiz: null, errors: [], frames: {}, lastMasterFrames: 0, lastMasterChange: 0, feedLost: false, sessionId: "" };
window.room = P;
const $ = ce.byId;

// TEXT: the strings this script shows (the rest are in classroom.html).
// Every string is in the catalogue (i18n.js, keys room.*); TEXT reads it.
const TEXT = new Proxy({}, { get: (_, k) => i18n.t("room." + String(k)) });

// keepToken hands a terminal token to the edge once and gets it back as
// this browser's HttpOnly cookie; the page keeps no copy.
async function keepToken(tok) {
  await ce.request("POST", "/api/v1/classroom/screen", { token: tok });
}

// classterm -kiosk opens this page as classroom.html#terminal=<token>: the
// screen comes up already paired as that terminal. A fragment never goes
// on the wire; the token becomes the cookie and the fragment is removed
// from the address bar and history at once.
const fromFragment = (async function takeTerminalFromFragment() {
  const m = /^#terminal=([^&]+)/.exec(location.hash);
  if (!m) return;
  history.replaceState(null, "", location.pathname + location.search);
  try { await keepToken(decodeURIComponent(m[1])); } catch (e) { P.errors.push("fragment: " + e.message); }
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
  try {
    const j = await ce.request("POST", "/api/v1/pair", { body: { code: $("pair-code").value.trim(), name: $("pair-name").value.trim(), version: "classroom-page" } });
    await keepToken(j.token);
  } catch (e) { $("pair-error").textContent = i18n.err(e); return; }
  $("pair").hidden = true;
  poll();
};

// current is the classroom's session now; null when the edge said no (an
// unpaired screen shows the pairing form again). A network failure rejects.
async function current() {
  try {
    return await ce.request("GET", "/api/v1/classroom/current");
  } catch (e) {
    // 401: not paired (or unpaired in the console); any other refusal
    // before the first answer: not paired here either.
    if (e.status === 401 || (e.status && !P.paired)) { P.paired = false; $("pair").hidden = false; $("assistant-join").hidden = true; $("status").textContent = TEXT.notPaired; leaveUI(); }
    if (e.status) return null;
    throw e;
  }
}

// showAssistantCode puts the assistant page's code and QR code up.
function showAssistantCode(cur) {
  $("assistant-join").hidden = false;
  $("assistant-code").textContent = cur.assistant_code;
  $("assistant-host").textContent = location.host;
  if (cur.assistant_qr && $("assistant-qr").getAttribute("src") !== cur.assistant_qr) $("assistant-qr").src = cur.assistant_qr;
  $("room-name").textContent = cur.classroom_name || i18n.t("room.classroom", { id: cur.classroom_id });
  // In class the lesson fills the screen: the code goes to the side column.
  const box = $("assistant-join");
  if (cur.session) { if (box.parentElement !== $("side")) $("side").append(box); }
  else if (box.previousElementSibling !== $("waiting")) $("waiting").after(box);
}

async function poll() {
  await fromFragment;
  try {
    const cur = await current();
    if (cur) {
      P.paired = true;
      P.classroom = cur.classroom_id;
      $("pair").hidden = true;
      showAssistantCode(cur);
      const connected = P.conn && !P.conn.closed;
      if (cur.session && (!connected || P.sessionId !== cur.session.id)) await join(cur);
      if (!cur.session && !connected) { $("waiting").hidden = false; $("live").hidden = true; $("status").textContent = TEXT.noClass; }
    }
    P.pollFails = 0;
  } catch (e) { P.errors.push("poll: " + e.message); P.pollFails = (P.pollFails || 0) + 1; }
  // Every second while the edge answers; while it does not (restarting,
  // or the network is down) with backoff and jitter (reconnect.js), so a
  // school's screens do not knock in step when it comes back. A closed
  // class connection is joined again by the next poll.
  P.pollTimer = setTimeout(poll, P.pollFails ? reconnectDelay(P.pollFails - 1) : 1000);
}

// pollSoon polls after a short jittered wait instead of the next second:
// the class connection closed (edge restarting, network blink).
function pollSoon() { clearTimeout(P.pollTimer); P.pollTimer = setTimeout(poll, reconnectDelay(0)); }

function leaveUI() {
  if (P.conn) P.conn.close();
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
  const name = cur.classroom_name || i18n.t("room.classroom", { id: cur.classroom_id });
  $("room-name").textContent = name;
  P.conn = new Conn(cur.terminal_token, name, {
    state: (m) => { P.state = m; render(); },
    quiz: (m) => showQuiz(m.question),
    quiz_closed: (m) => { if (P.quiz && P.quiz.id === m.quiz_id) { P.quizOpen = false; $("quiz-note").textContent = TEXT.closed; } },
    // Results reach the big screen only when the teacher reveals them.
    quiz_results: (m) => { if (P.quiz && m.results.quiz_id === P.quiz.id) quizBars($("room-results"), P.quiz, m.results); },
    ended: () => { $("status").textContent = TEXT.ended; P.sessionId = ""; },
    close: () => { if (P.sessionId) pollSoon(); },
    error: (m) => P.errors.push(m.code + ": " + m.message),
  });
  P.conn.sendOpts = { simulcast: true, encodings: LAYERS.room }; // the master's grid takes the lowest layer (layers.js)
  await P.conn.open();
  // The camera goes out while the room subscribes: after an edge restart
  // the teacher sees the room again sooner.
  const camera = publishCamera();
  $("status").textContent = TEXT.joined;
  await P.conn.subscribe((track, sid) => {
    if (track.kind === "audio") { document.body.append(videoEl(track)); return; }
    if (sid === "master") { P.hadMaster = true; $("master-video").append(videoEl(track)); }
    else { $("onstage").textContent = ""; $("onstage").append(videoEl(track)); }
    track.onended = () => { for (const v of document.querySelectorAll("video")) if (v.srcObject && v.srcObject.getTracks()[0] === track) v.remove(); };
  });
  await camera;
}

// publishCamera publishes the room's camera and microphone, if the page
// may open them.
async function publishCamera() {
  // Without camera and microphone (plain HTTP on the LAN) the room still
  // watches the lesson, answers quizzes and raises hands; the banner at the
  // top says how to get its camera back.
  if (!(await checkMedia($("media-help")))) {
    P.errors.push("camera: " + mediaProblem());
    $("self").textContent = MEDIA_TEXT.selfBlocked;
  } else {
    try {
      // Rejoining (the edge restarted): the camera opened before is still
      // live and is published again as it is.
      const live = P.media && P.media.getTracks().every((t) => t.readyState === "live");
      if (!live) P.media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
      $("self").textContent = ""; $("self").append(videoEl(P.media.getVideoTracks()[0]));
      await P.conn.publish(P.media);
      P.published = true;
    } catch (e) { P.errors.push("camera: " + e.message); $("self").textContent = MEDIA_TEXT.cameraFailed + e.message; }
  }
}

function render() {
  const st = P.state;
  $("status").textContent = i18n.t("session.state." + st.session_state);
  $("status").dataset.state = st.session_state;
  const raised = st.hands.includes(P.classroom);
  $("hand-text").textContent = raised ? TEXT.lower : TEXT.raise;
  $("hand").dataset.raised = raised ? "yes" : "no";
  if (st.stage === "" || st.stage === P.classroom) $("onstage").textContent = "";
}

$("hand").onclick = () => P.conn.req({ type: "hand", raised: !(P.state && P.state.hands.includes(P.classroom)) });

// showQuiz shows the question and its options to the class; answers are
// given on the assistant's device, never on the big screen.
function showQuiz(q) {
  P.quiz = q; P.quizOpen = true;
  $("quiz").hidden = false;
  $("quiz-prompt").textContent = q.prompt;
  $("quiz-note").textContent = "";
  $("room-results").textContent = "";
  const box = $("quiz-options"); box.textContent = "";
  for (const o of q.options || []) box.append(el("li", {}, o));
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

i18n.ready.then(() => {
  $("hand").querySelector(".icon-slot").replaceWith(icons.el("hand", 22));
  checkMedia($("media-help")); // at once, not only when a class starts
  poll();
});
