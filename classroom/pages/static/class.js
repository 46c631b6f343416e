// class.js: the live-class client shared by the teacher and classroom
// pages, written against docs/LIVE.md. One Conn is one control connection
// with one session token: hello, join, subscribe (answering every offer of
// the edge), publish (and publish again to add a screen share), requests
// with ids, trickled ICE after the SDP it belongs to.
"use strict";

class Conn {
  constructor(token, name, on) {
    this.token = token; this.name = name; this.on = on || {};
    this.n = 0; this.pending = {}; this.closed = false;
    this.sub = null; this.pub = null;
  }
  send(m) { m.v = 1; if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(m)); }
  // req sends a request and resolves with its reply. A not_saved refusal
  // (the edge could not store it, e.g. its disk is full; nothing changed)
  // is sent again with backoff, at most 8 times (~30 s), while a banner
  // says "not saved, retrying".
  async req(m) {
    for (let attempt = 0; ; attempt++) {
      const r = await this.req1(Object.assign({}, m));
      const again = r.type === "error" && r.code === "not_saved" && attempt < 8 && !this.closed;
      if (attempt > 0 || again) notSaved(again ? 1 : 0, attempt > 0 ? -1 : 0);
      if (!again) return r;
      await new Promise((res) => setTimeout(res, Math.min(500 * 2 ** attempt, 5000)));
    }
  }
  req1(m) {
    return new Promise((res) => {
      m.id = "r" + ++this.n;
      this.pending[m.id] = res;
      this.send(m);
      setTimeout(() => { if (this.pending[m.id]) { delete this.pending[m.id]; res({ type: "error", code: "timeout", message: "no reply" }); } }, 15000);
    });
  }
  trickle(pc, name, ready) {
    const early = [];
    pc.onicecandidate = (e) => {
      if (!e.candidate) return;
      const m = { type: "candidate", pc: name, candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex };
      if (ready()) this.send(m); else early.push(m);
    };
    return () => early.splice(0).forEach((m) => this.send(m));
  }
  // open connects and joins; resolves with the welcome.
  async open() {
    this.ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/api/v1/ws");
    this.ws.onmessage = (ev) => this.message(JSON.parse(ev.data));
    this.ws.onclose = () => { this.closed = true; for (const f of Object.values(this.pending)) f({ type: "error", code: "closed" }); this.pending = {}; if (this.on.close) this.on.close(); };
    await new Promise((res, rej) => { this.ws.onopen = res; this.ws.onerror = rej; });
    const w = await this.req({ type: "hello", token: this.token, name: this.name });
    if (w.type !== "welcome") throw new Error("hello: " + (w.message || w.code));
    this.welcome = w;
    const j = await this.req({ type: "join", name: this.name });
    if (j.type !== "ack") throw new Error("join: " + (j.message || j.code));
    return w;
  }
  async message(m) {
    if (m.id && this.pending[m.id]) { const f = this.pending[m.id]; delete this.pending[m.id]; f(m); return; }
    if (m.type === "offer" && this.sub) {
      await this.sub.setRemoteDescription({ type: "offer", sdp: m.sdp });
      await this.sub.setLocalDescription(await this.sub.createAnswer());
      this.send({ type: "answer", pc: "subscribe", sdp: this.sub.localDescription.sdp });
      this.subAnswered = true;
      this.flushSub();
      return;
    }
    const f = this.on[m.type];
    if (f) f(m);
  }
  // subscribe receives media; ontrack(track, streamId).
  async subscribe(ontrack) {
    this.sub = new RTCPeerConnection();
    if (typeof watchICE === "function") watchICE(this, this.sub, null); // reconnect.js: the edge restarts this one
    this.subAnswered = false;
    this.flushSub = this.trickle(this.sub, "subscribe", () => this.subAnswered);
    this.streamOfTrack = {};
    this.sub.ontrack = (e) => {
      const sid = e.streams[0] ? e.streams[0].id : "";
      this.streamOfTrack[e.track.id] = sid;
      ontrack(e.track, sid);
    };
    const r = await this.req({ type: "subscribe" });
    if (r.type !== "ack") throw new Error("subscribe: " + (r.message || r.code));
  }
  // publish sends stream's tracks; called again after adding tracks it
  // renegotiates on the same connection.
  async publish(stream) {
    if (!this.pub) {
      this.pub = new RTCPeerConnection();
      if (typeof watchICE === "function") watchICE(this, this.pub, () => restartPublishICE(this)); // reconnect.js
      this.pubSent = false;
      this.flushPub = this.trickle(this.pub, "publish", () => this.pubSent);
    }
    // Whether the browser encodes VP9 SVC is known only once Media
    // Capabilities answer (layers.js, findSVC; a few ms).
    if (typeof LAYERS !== "undefined" && LAYERS.svcFound) await LAYERS.svcFound;
    const have = this.pub.getSenders().map((s) => s.track);
    // How each track is encoded (simulcast layers, a screen share's
    // settings) is layers.js's: sendTrack, when the page loads it.
    const add = typeof sendTrack === "function" ? (t) => sendTrack(this.pub, t, stream, this.welcome, this.sendOpts) : (t) => this.pub.addTrack(t, stream);
    stream.getTracks().forEach((t) => { if (!have.includes(t)) add(t); });
    await this.pub.setLocalDescription(await this.pub.createOffer());
    // layers.js names the screen shares among the tracks (publishFields).
    const extra = typeof publishFields === "function" ? publishFields(this.pub) : {};
    const p = this.req(Object.assign({ type: "publish", sdp: this.pub.localDescription.sdp }, extra));
    this.pubSent = true;
    this.flushPub();
    const a = await p;
    if (a.type !== "answer") throw new Error("publish: " + (a.message || a.code));
    await this.pub.setRemoteDescription({ type: "answer", sdp: a.sdp });
  }
  // videoStats: decoded frames per receiving stream id.
  async videoStats() {
    const out = {};
    if (!this.sub) return out;
    for (const r of (await this.sub.getStats()).values()) {
      if (r.type !== "inbound-rtp" || r.kind !== "video") continue;
      const sid = (this.streamOfTrack && this.streamOfTrack[r.trackIdentifier]) || "?";
      out[sid] = (out[sid] || 0) + (r.framesDecoded || 0);
    }
    return out;
  }
  close() { this.closed = true; if (this.pub) this.pub.close(); if (this.sub) this.sub.close(); if (this.ws) this.ws.close(); }
}

// el builds elements for the live pages (the edge's one builder, common.js).
const el = ce.el;

// notSaved counts requests being sent again after not_saved and shows
// "not saved, retrying" while there are any.
let retrying = 0;
function notSaved(add, done) {
  retrying = Math.max(0, retrying + add + done);
  let b = document.getElementById("not-saved");
  if (!b) {
    b = document.createElement("p");
    b.id = "not-saved"; b.className = "pill off"; b.setAttribute("role", "status");
    document.body.prepend(b);
  }
  b.hidden = retrying === 0;
  b.textContent = retrying ? i18n.t("common.not_saved") : "";
}

function videoEl(track) {
  const v = el("video", { autoplay: "", playsinline: "" });
  v.muted = track.kind !== "audio";
  v.srcObject = new MediaStream([track]);
  v.play().catch(() => {});
  return v;
}

// quizBars draws results: a bar per option (or numeric value) and accuracy.
function quizBars(box, q, r) {
  box.textContent = "";
  const total = Math.max(1, r.answered);
  const rows = q.kind === "numeric"
    ? Object.entries(r.values || {}).map(([k, n]) => [k, n, false])
    : q.options.map((o, i) => [String.fromCharCode(65 + i) + ". " + o, (r.options || [])[i] || 0, (q.correct || []).includes(i)]);
  for (const [label, n, ok] of rows) {
    const bar = el("div", { class: "bar" + (ok ? " correct" : "") });
    bar.style.width = Math.round(100 * n / total) + "%"; // CSSOM: the CSP refuses style attributes
    box.append(el("div", { class: "barrow" }, el("span", { class: "barlabel" }, label), el("span", { class: "bartrack" }, bar), el("span", { class: "barn" }, i18n.number(n))));
  }
  box.append(el("p", { class: "accuracy" }, i18n.t("quiz.summary", { answered: i18n.number(r.answered), correct: i18n.number(r.correct), accuracy: i18n.number(Math.round(100 * r.accuracy)) }) + (r.open ? "" : i18n.t("quiz.closed_suffix"))));
}

// Camera, microphone and screen share: browsers give them only to secure
// contexts. http://127.0.0.1 is one, http://<LAN address> is not, so on a
// school LAN over plain HTTP navigator.mediaDevices is undefined and
// getUserMedia would throw a TypeError nobody sees. Pages that need media
// call checkMedia first and, when it fails, tell the user in the page how to
// get to the HTTPS address of the same page.

// MEDIA_TEXT: the strings the media check shows, from the catalogue
// (keys media.*), read when they are shown.
const MEDIA_TEXT = new Proxy({}, { get: (_, k) => i18n.t("media." + String(k)) });

// DEFAULT_HTTPS_PORT is edged's default -https-listen port, used when
// /api/v1/edge does not say (an older edge, or the request failed).
const DEFAULT_HTTPS_PORT = 8443;

// mediaProblem: "" when the page may ask for camera and microphone,
// "insecure" when it is not a secure context, "unsupported" when it is
// but the browser has no navigator.mediaDevices.getUserMedia.
function mediaProblem() {
  if (!window.isSecureContext) return "insecure";
  if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") return "unsupported";
  return "";
}

// httpsPageURL is this same page on the edge's HTTPS port (from
// GET /api/v1/edge, field https_port).
async function httpsPageURL() {
  let port = DEFAULT_HTTPS_PORT;
  try {
    const res = await fetch("/api/v1/edge", { signal: AbortSignal.timeout(3000) });
    const j = await res.json();
    if (Number.isInteger(j.https_port) && j.https_port > 0 && j.https_port < 65536) port = j.https_port;
  } catch (e) { /* keep the default: the message must appear either way */ }
  return "https://" + location.hostname + (port === 443 ? "" : ":" + port) + location.pathname;
}

// checkMedia resolves true when camera and microphone can be used; when
// not, it fills box (hidden until then) with what to do and resolves false.
let mediaHelp = null;
function checkMedia(box) {
  const problem = mediaProblem();
  if (!problem) return Promise.resolve(true);
  if (!mediaHelp) mediaHelp = fillMediaHelp(box, problem);
  return mediaHelp.then(() => { box.hidden = false; return false; });
}

async function fillMediaHelp(box, problem) {
  box.textContent = "";
  if (problem === "insecure") {
    const url = await httpsPageURL();
    // The link keeps the query and fragment (a teacher's join link carries
    // its session there); the text shows the address only.
    const link = el("a", { href: url + location.search + location.hash, id: "https-link" }, url);
    box.append(el("h2", {}, MEDIA_TEXT.insecureTitle), el("p", {}, MEDIA_TEXT.insecureWhy),
      el("p", {}, MEDIA_TEXT.openHttps, link), el("p", {}, MEDIA_TEXT.trust));
  } else {
    box.append(el("h2", {}, MEDIA_TEXT.unsupportedTitle), el("p", {}, MEDIA_TEXT.unsupportedWhy));
  }
  box.dataset.problem = problem;
}
