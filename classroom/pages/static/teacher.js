// teacher.js: the master teacher's page. The teacher signs in with their
// own account (the session cookie), creates a session for the chosen
// classrooms and gets its master token (kept in page memory only), publishes camera and mic (and a screen
// share added mid-class), shows every classroom, hands in the order they
// went up, stage, mute, quizzes with live results, end.
"use strict";

const T = { state: null, hands: [], handOrder: [], tiles: {}, results: null, quiz: null, errors: [], sessionId: "" };
window.teacher = T;
const $ = ce.byId;
const admin = (method, path, body) => ce.request(method, path, { body });

// TEXT: the strings this script shows (the rest are in teacher.html).
// Every string is in the catalogue (i18n.js); TEXT reads it by key.
const TEXT = new Proxy({}, { get: (_, k) => i18n.t("teacher." + String(k)) });

// signedIn shows who is signed in and hides the sign-in fields.
function signedIn(me) {
  T.me = me;
  $("who").textContent = me.name || me.staff_id;
  $("signed-in").hidden = false; $("signin-box").hidden = true; $("signin-help").hidden = true;
}

$("t-signout").onclick = async () => { await ce.signOut(); location.reload(); };

$("load").onclick = async () => {
  $("setup-error").textContent = "";
  try {
    if (!T.me) {
      const tok = $("admin").value.trim();
      await ce.signIn(tok ? { admin_token: tok } : { id: $("t-id").value.trim(), password: $("t-password").value });
      $("admin").value = ""; $("t-password").value = "";
      const me = await ce.me();
      if (!me) throw new Error(TEXT.needHTTPS); // the browser dropped the Secure cookie
      signedIn(me);
    }
    const cs = await admin("GET", "/api/v1/classrooms");
    const box = $("rooms"); box.textContent = "";
    for (const c of cs.classrooms || cs) {
      box.append(el("label", {}, el("input", { type: "checkbox", value: c.id, class: "room", checked: "" }), " " + c.name + " "));
    }
  } catch (e) { $("setup-error").textContent = i18n.err(e); }
};

// openCamera gets camera and microphone before anything is created on the
// edge, so that a page that cannot have them (plain HTTP on the LAN, a
// refused permission) says why and stays at setup instead of leaving a
// started class with an empty "Me" panel. Resolves null when it could not.
async function openCamera() {
  if (!(await checkMedia($("media-help")))) {
    $("setup-error").textContent = MEDIA_TEXT.startBlocked;
    T.errors.push("media: " + mediaProblem());
    $("media-help").scrollIntoView();
    return null;
  }
  try {
    return await navigator.mediaDevices.getUserMedia(CAMERA_CONSTRAINTS); // layers.js
  } catch (e) {
    $("setup-error").textContent = MEDIA_TEXT.cameraFailed + e.message;
    T.errors.push("camera: " + e.message);
    return null;
  }
}

$("start").onclick = async () => {
  $("setup-error").textContent = "";
  const media = await openCamera();
  if (!media) return;
  let started = false;
  try {
    const ids = [...document.querySelectorAll(".room:checked")].map((i) => i.value);
    const s = await admin("POST", "/api/v1/sessions", { title: $("class-title").value || i18n.t("teacher.default_title"), classrooms: ids });
    T.names = {};
    const cs = await admin("GET", "/api/v1/classrooms");
    for (const c of cs.classrooms || cs) T.names[c.id] = c.name;
    started = true;
    await run(s.id, s.tokens.master, ids, media);
  } catch (e) {
    if (!started) media.getTracks().forEach((t) => t.stop()); // the camera light goes off again
    $("setup-error").textContent = i18n.err(e); T.errors.push(e.message);
  }
};

function tile(cid) {
  if (T.tiles[cid]) return T.tiles[cid];
  const t = { video: el("div", { class: "vid" }), hand: el("span", { class: "hand" }), label: el("b", {}, T.names[cid] || cid), status: el("span") };
  t.stage = el("button", { class: "quiet", onclick: () => T.conn.req({ type: "stage", classroom_id: cid, on: T.state.stage !== cid }) }, i18n.t("teacher.on_stage"));
  t.mute = el("button", { class: "quiet", onclick: () => T.conn.req({ type: "mute", classroom_id: cid, muted: !(T.state.muted || []).includes(cid) }) }, i18n.t("teacher.mute"));
  t.link = el("span", { class: "weak", role: "status" }); // linkMark
  t.root = el("div", { class: "tile", id: "tile-" + cid }, t.video, el("div", { class: "bar-top" }, t.label, t.status, t.link, t.hand, t.stage, t.mute));
  $("grid").append(t.root);
  T.tiles[cid] = t;
  return t;
}

function render() {
  const st = T.state;
  if (!st) return;
  // The edge's raise order (hands message), restricted to the hands up now;
  // any the order does not know yet go last.
  T.hands = T.handOrder.filter((h) => st.hands.includes(h)).concat(st.hands.filter((h) => !T.handOrder.includes(h)));
  $("hands").textContent = "";
  for (const h of T.hands) {
    $("hands").append(el("li", {}, icons.el("hand"), " " + (T.names[h] || h) + " ", el("button", { class: "quiet", onclick: () => T.conn.req({ type: "stage", classroom_id: h, on: true }) }, i18n.t("teacher.invite")),
      el("button", { class: "quiet", onclick: () => T.conn.req({ type: "hand", raised: false, classroom_id: h }) }, i18n.t("teacher.lower"))));
  }
  for (const cid of T.classrooms) {
    const t = tile(cid);
    const present = st.participants.some((p) => p.classroom_id === cid && p.role === "terminal");
    const publishing = st.participants.some((p) => p.classroom_id === cid && p.role === "terminal" && p.publishing);
    t.root.classList.toggle("gone", !present);
    t.root.dataset.present = present ? "yes" : "no";
    t.status.textContent = present ? (publishing ? i18n.t("teacher.room_live") : i18n.t("teacher.room_joined")) : i18n.t("teacher.room_gone");
    // The hand is an SVG icon (never an emoji, which a PC without an emoji
    // font shows as a box); hand.dataset.raised says it for scripts.
    const raised = st.hands.includes(cid);
    if (raised !== (t.hand.dataset.raised === "yes")) t.hand.replaceChildren(...(raised ? [icons.el("hand")] : []));
    t.hand.dataset.raised = raised ? "yes" : "no";
    t.hand.title = raised ? i18n.t("teacher.hand_up") : "";
    t.stage.textContent = st.stage === cid ? i18n.t("teacher.back") : i18n.t("teacher.on_stage");
    t.mute.textContent = (st.muted || []).includes(cid) ? i18n.t("teacher.unmute") : i18n.t("teacher.mute");
    linkMark(t, cid);
  }
  $("status").textContent = i18n.t("session.state." + st.session_state);
  $("status").dataset.state = st.session_state;
}

// linkMark marks a room whose link cannot carry the lesson's full
// quality, from the edge's links message (its layer chooser): "7B: low
// quality — weak link".
function linkMark(t, cid) {
  const lk = (T.links || {})[cid];
  const weak = !!(lk && lk.weak);
  t.link.textContent = weak ? i18n.t("teacher.weak_link", { name: T.names[cid] || cid }) : "";
  t.link.hidden = !weak;
  t.root.dataset.link = weak ? "weak" : "ok";
}

// run joins session id as its master and publishes media (camera and mic,
// already opened by openCamera).
async function run(id, token, classrooms, media) {
  T.sessionId = id; T.classrooms = classrooms;
  $("setup").hidden = true; $("live").hidden = false;
  classrooms.forEach(tile);
  T.media = media;
  $("self").append(videoEl(T.media.getVideoTracks()[0]));
  // The class survives its edge: when the connection closes (the edge
  // restarted, the network blinked) the page comes back by itself
  // (reconnect.js) and publishes the same camera again.
  T.keep = keepClass(() => connectMaster(token), {
    ended: () => T.ended,
    status: (s) => { T.link = s; if (s === "reconnecting") { T.reconnects = (T.reconnects || 0) + 1; $("status").textContent = i18n.t("session.reconnecting"); } },
    error: (e) => T.errors.push("connect: " + e.message),
  });
}

// connectMaster opens the master's control connection, joins, receives
// the classrooms and publishes T.media; resolves with the Conn.
async function connectMaster(token) {
  const conn = new Conn(token, i18n.t("teacher.participant"), {
    state: (m) => { T.state = m; $("title").textContent = m.title; render(); },
    hands: (m) => { T.handOrder = m.order; render(); },
    links: (m) => { T.links = {}; for (const r of m.classrooms || []) T.links[r.classroom_id] = r; render(); },
    quiz_results: (m) => { if (T.quiz && m.results.quiz_id === T.quiz.id) { T.results = m.results; quizBars($("q-results"), T.quiz, m.results); } },
    ended: () => { T.ended = true; $("status").textContent = i18n.t("session.state.ended"); $("status").dataset.state = "ended"; },
    error: (m) => T.errors.push(m.code + ": " + m.message),
  });
  T.conn = conn;
  conn.sendOpts = { simulcast: true }; // the lesson's camera as layers, when the edge chooses them (layers.js)
  try {
    await conn.open();
    await conn.subscribe((track, sid) => {
      if (!sid.startsWith("classroom:") || track.kind !== "video") { if (track.kind === "audio") document.body.append(videoEl(track)); return; }
      const t = tile(sid.slice("classroom:".length));
      t.video.textContent = "";
      t.video.append(videoEl(track));
    });
    await conn.publish(T.media);
  } catch (e) { conn.close(); throw e; }
  T.published = true;
  return conn;
}

$("share").onclick = async () => {
  $("share-error").textContent = "";
  // Phones and tablets have getUserMedia but no getDisplayMedia.
  if (!navigator.mediaDevices || typeof navigator.mediaDevices.getDisplayMedia !== "function") {
    $("share-error").textContent = MEDIA_TEXT.noScreenShare;
    T.errors.push("share: no getDisplayMedia");
    return;
  }
  try {
    // The screen is its own track: full resolution at a low frame rate,
    // marked as detail (text) so the encoder keeps it sharp (layers.js).
    const screen = await navigator.mediaDevices.getDisplayMedia({ video: { width: { ideal: 1920 }, height: { ideal: 1080 }, frameRate: { ideal: 5, max: 15 } } });
    screen.getVideoTracks().forEach((t) => { t.contentHint = "detail"; });
    screen.getTracks().forEach((t) => T.media.addTrack(t));
    await T.conn.publish(T.media); // renegotiate: the screen is a second video track of "master"
    T.sharing = true;
  } catch (e) { $("share-error").textContent = MEDIA_TEXT.shareFailed + e.message; T.errors.push("share: " + e.message); }
};

$("end").onclick = () => T.conn.req({ type: "end" });

$("q-push").onclick = async () => {
  $("q-error").textContent = "";
  // Options as a Chinese input method types them: 1/2，1/3、一样大 or one per line.
  const options = i18n.splitList($("q-options").value);
  const q = { id: "q" + Date.now().toString(36), kind: "single", prompt: $("q-prompt").value, options, correct: [Number(i18n.fold($("q-correct").value)) - 1] };
  const r = await T.conn.req({ type: "quiz", question: q });
  if (r.type !== "ack") { $("q-error").textContent = i18n.err(r); return; }
  T.quiz = q; T.results = null;
  quizBars($("q-results"), q, { answered: 0, correct: 0, accuracy: 0, options: [], open: true });
};
$("q-close").onclick = () => T.quiz && T.conn.req({ type: "quiz_close", quiz_id: T.quiz.id });
// The big screens show the class's results only from here on.
$("q-reveal").onclick = () => T.quiz && T.conn.req({ type: "quiz_reveal", quiz_id: T.quiz.id });

// A link made by the admin, teacher.html#session=<id>&master=<token>, joins
// an existing session as its master teacher (no admin token needed).
(async () => {
  await i18n.ready;
  const h = new URLSearchParams(location.hash.slice(1));
  const id = h.get("session"), tok = h.get("master");
  if (!id || !tok) {
    checkMedia($("media-help")); // say it before the teacher signs in
    const me = await ce.me();
    if (me) { signedIn(me); $("load").click(); }
    return;
  }
  const media = await openCamera();
  if (!media) return;
  let started = false;
  try {
    const s = await ce.request("GET", "/api/v1/sessions/" + encodeURIComponent(id), { token: tok });
    T.names = {};
    started = true;
    await run(s.id, tok, s.classrooms, media);
  } catch (e) {
    if (!started) media.getTracks().forEach((t) => t.stop());
    $("setup-error").textContent = i18n.err(e); T.errors.push(e.message);
  }
})();
