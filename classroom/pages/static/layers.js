// layers.js: how the live pages send video — the encodings of each track,
// kept apart from the connection code (class.js) so that the two change
// independently. The edge chooses per classroom which layer it forwards
// (docs/LIVE.md, "Layers"); a page sends layers only when the edge's
// welcome says it does (welcome.layers), else one encoding as before.
//
// - Camera (sendOpts.simulcast): three VP8 simulcast encodings from a
//   720p camera — rid "l" 180p ~150 kbit/s, "m" 360p ~500 kbit/s, "h"
//   720p ~1.5 Mbit/s. A classroom on a thin link gets "l" and keeps a
//   picture; a school LAN gets "h".
// - Screen share: its own track, contentHint "detail" (the browser keeps
//   text sharp rather than motion smooth), full resolution at a low frame
//   rate, as two encodings — "h" the full screen at ~1.2 Mbit/s and "l" at
//   half size ~300 kbit/s — so a thin link still reads the slide.
// - SVC: when the browser encodes VP9 with scalabilityMode L3T3_KEY (or
//   L3T3) and the edge's welcome says it forwards SVC by layer
//   (welcome.svc), the camera goes as ONE VP9 encoding with three spatial
//   layers (180p / 360p / 720p) and three temporal layers; the edge gives
//   each classroom the layers its link carries (docs/LIVE.md, "Layers").
//   L3T3_KEY first: its upper spatial layers are predicted from the layer
//   below only at keyframes, so a classroom taking a lower layer decodes
//   nothing it does not need, and the edge moves a classroom up at a
//   keyframe either way. AV1 is not sent as SVC: the edge reads VP9's
//   layer descriptors only (AV1's dependency descriptor is not
//   implemented), so AV1 SVC would reach every classroom whole. Without
//   VP9 SVC, VP8 simulcast as above.
"use strict";

const LAYERS = {
  camera: [
    { rid: "l", scaleResolutionDownBy: 4, maxBitrate: 150000 },
    { rid: "m", scaleResolutionDownBy: 2, maxBitrate: 500000 },
    { rid: "h", scaleResolutionDownBy: 1, maxBitrate: 1500000 },
  ],
  // A classroom's camera (640×360): two encodings, "l" at half size for
  // the master's grid and "h" at full size for the stage. (Three from a
  // 360p camera would be cut to two by the browser anyway.)
  room: [
    { rid: "l", scaleResolutionDownBy: 2, maxBitrate: 200000 },
    { rid: "h", scaleResolutionDownBy: 1, maxBitrate: 800000 },
  ],
  screen: [
    { rid: "l", scaleResolutionDownBy: 2, maxBitrate: 300000, maxFramerate: 5 },
    { rid: "h", scaleResolutionDownBy: 1, maxBitrate: 1200000, maxFramerate: 5 },
  ],
  // What the last sendTrack did, for the page's own checks and tests:
  // { camera: "simulcast"|"svc"|"single", screen: "simulcast"|"single" }.
  sent: {},
  svc: "", // "video/VP9" when the browser encodes L3T3 (findSVC)
  svcMode: "", // the scalabilityMode sent: "L3T3_KEY" when offered, else "L3T3"
};
window.LAYERS = LAYERS;

// CAMERA_CONSTRAINTS: the camera a publishing page opens. 720p, so that
// the top simulcast layer is 720p (a camera that cannot gives less, and
// the browser scales each layer from what it gets).
const CAMERA_CONSTRAINTS = { video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: true };

// svcCodec returns the first VP9 codec the browser can send with
// scalabilityMode L3T3_KEY or L3T3, or null.
function svcCodec() {
  if (typeof RTCRtpSender === "undefined" || !RTCRtpSender.getCapabilities) return null;
  const caps = RTCRtpSender.getCapabilities("video");
  for (const c of (caps && caps.codecs) || []) {
    const modes = c.scalabilityModes || [];
    if (/^video\/VP9$/i.test(c.mimeType) && (modes.includes("L3T3_KEY") || modes.includes("L3T3"))) {
      LAYERS.svcMode = modes.includes("L3T3_KEY") ? "L3T3_KEY" : "L3T3";
      return c;
    }
  }
  return null;
}

// findSVC looks for L3T3 the standard way too (Media Capabilities: a
// browser whose getCapabilities lists no scalabilityModes may still
// encode it) and records the codec in LAYERS.svc.
async function findSVC() {
  const c = svcCodec();
  if (c) { LAYERS.svc = c.mimeType; return; }
  if (!navigator.mediaCapabilities || !navigator.mediaCapabilities.encodingInfo) return;
  for (const mode of ["L3T3_KEY", "L3T3"]) {
    try {
      const r = await navigator.mediaCapabilities.encodingInfo({ type: "webrtc",
        video: { contentType: "video/VP9", width: 1280, height: 720, bitrate: 1500000, framerate: 30, scalabilityMode: mode } });
      if (r.supported) { LAYERS.svc = "video/VP9"; LAYERS.svcMode = mode; return; }
    } catch (e) { /* an older browser: no SVC */ }
  }
}
LAYERS.svcFound = findSVC();

// preferCodec puts the codecs of mimeType first in tr's preferences.
function preferCodec(tr, mimeType) {
  if (!tr.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
  const all = RTCRtpReceiver.getCapabilities("video").codecs;
  const want = all.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
  if (want.length) tr.setCodecPreferences(want.concat(all.filter((c) => !want.includes(c))));
}

// isScreen: a track from getDisplayMedia (or one the page marked).
function isScreen(track) {
  return track.contentHint === "detail" || track.contentHint === "text" ||
    (track.getSettings && "displaySurface" in track.getSettings());
}

// sendTrack adds track (of stream) to pc with the encodings above.
// welcome is the edge's (layers, svc); opts.simulcast asks for camera
// layers (the teacher's and classroom pages), opts.encodings which
// (default LAYERS.camera). Returns how it was sent.
function sendTrack(pc, track, stream, welcome, opts) {
  const layers = !!(welcome && welcome.layers);
  let how = "single";
  const init = { direction: "sendonly", streams: [stream] };
  if (track.kind === "video" && isScreen(track)) {
    if (layers) { init.sendEncodings = LAYERS.screen.map((e) => Object.assign({}, e)); how = "simulcast"; }
    else init.sendEncodings = [{ maxBitrate: 1200000, maxFramerate: 5 }];
    const tr = pc.addTransceiver(track, init);
    tr.sender.getParameters && keepResolution(tr.sender);
    LAYERS.sent.screen = how;
    return how;
  }
  if (track.kind === "video" && layers && opts && opts.simulcast) {
    if (welcome.svc && LAYERS.svc && !opts.encodings) {
      // One encoding, its layers chosen per classroom by the edge. The
      // codec preference must put VP9 first before the offer, or the
      // browser negotiates VP8 and drops the scalabilityMode.
      init.sendEncodings = [{ scalabilityMode: LAYERS.svcMode || "L3T3", maxBitrate: 1700000 }];
      const tr = pc.addTransceiver(track, init);
      preferCodec(tr, LAYERS.svc);
      how = "svc";
    } else {
      init.sendEncodings = (opts.encodings || LAYERS.camera).map((e) => Object.assign({}, e));
      const tr = pc.addTransceiver(track, init);
      preferCodec(tr, "video/VP8"); // the layers the edge selects are VP8's
      how = "simulcast";
    }
    LAYERS.sent.camera = how;
    return how;
  }
  if (track.kind === "video") {
    // One encoding: a 720p camera sent at 360p, as the pages always did.
    const s = track.getSettings ? track.getSettings() : {};
    if ((s.height || 0) > 400) init.sendEncodings = [{ scaleResolutionDownBy: s.height / 360 }];
    pc.addTransceiver(track, init);
    LAYERS.sent.camera = how;
    return how;
  }
  pc.addTransceiver(track, init);
  return how;
}

// publishFields adds to a publish message the ids of pc's screen-share
// tracks: the edge gives them a thin link's budget before the camera.
function publishFields(pc) {
  const screen = pc.getSenders().filter((s) => s.track && s.track.kind === "video" && isScreen(s.track)).map((s) => s.track.id);
  return screen.length ? { screen } : {};
}

// keepResolution: a shared screen keeps its resolution when the encoder
// is short of CPU or bits (it drops frames instead): text stays readable.
function keepResolution(sender) {
  try {
    const p = sender.getParameters();
    p.degradationPreference = "maintain-resolution";
    sender.setParameters(p).catch(() => {});
  } catch (e) { /* not every browser has it: the contentHint says the same */ }
}

// outboundLayers lists pc's outbound video encodings as getStats reports
// them: [{rid, mid, frames, width, height, bytes, scalability, codec}].
async function outboundLayers(pc) {
  const out = [];
  if (!pc) return out;
  const st = await pc.getStats();
  for (const r of st.values()) {
    if (r.type !== "outbound-rtp" || r.kind !== "video") continue;
    const codec = (r.codecId && st.get(r.codecId)) || {};
    out.push({ rid: r.rid || "", mid: r.mid || "", frames: r.framesEncoded || 0, width: r.frameWidth || 0, height: r.frameHeight || 0, bytes: r.bytesSent || 0, scalability: r.scalabilityMode || "", codec: codec.mimeType || "" });
  }
  return out;
}
