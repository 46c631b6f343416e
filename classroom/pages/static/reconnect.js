// reconnect.js: a class that survives its edge. When the edge restarts (a
// crash, a power blip, an update that overran) or the network blinks, the
// control connection closes; the edge keeps the class (session, stage,
// hands, quizzes) and the page only has to come back: connect again with
// the same token, join, subscribe, publish. A classroom back within the
// edge's reconnect grace (-reconnect-grace, 20 s) is recorded as a
// reconnect, not a leave and a join.
"use strict";

// reconnectDelay is the wait before attempt n (0-based): 300 ms doubling
// to 3 s, drawn from the upper half of that, so that forty rooms whose
// edge came back do not all knock in the same instant.
function reconnectDelay(n) {
  const d = Math.min(300 * 2 ** Math.min(n, 4), 3000);
  return d / 2 + Math.random() * (d / 2);
}

// keepClass runs connect() — which opens a Conn, joins, subscribes and
// publishes, and resolves with the Conn — and runs it again, after
// reconnectDelay, whenever that connection closes while the class goes on.
// o.ended() says the class is over (stop); o.status(s) hears "connected"
// or "reconnecting" (for a banner); o.error(e) hears a failed attempt.
function keepClass(connect, o) {
  let stopped = false;
  (async () => {
    for (let attempt = 0; !stopped && !o.ended(); ) {
      let conn = null;
      try {
        conn = await connect();
        attempt = 0;
        if (o.status) o.status("connected");
        await new Promise((res) => {
          const prev = conn.on.close;
          conn.on.close = () => { if (prev) prev(); res(); };
          if (conn.closed) res();
        });
      } catch (e) {
        if (o.error) o.error(e);
        attempt++;
      }
      if (conn) conn.close(); // its peer connections go with it; the camera stays open
      if (stopped || o.ended()) return;
      if (o.status) o.status("reconnecting");
      await new Promise((res) => setTimeout(res, reconnectDelay(attempt)));
    }
  })();
  return { stop() { stopped = true; } };
}

// A network blip that does not restart the edge (a switch reboots, a cable
// is pulled and put back, Wi-Fi roams) usually leaves the control
// connection up — TCP waits — while the media connections' ICE goes
// "disconnected" and then "failed". Tearing down would cost a new
// negotiation and a longer gap; instead ICE is restarted on the same
// connection (new ICE credentials, same tracks). Whoever made the offer
// restarts: this page for its publish connection (restartPublishICE), the
// edge for the connection it sends media on (its offers are answered as
// usual). If a connection is still not back after ICE_GIVE_UP_MS, the
// page closes the control connection and comes back the long way
// (keepClass or the classroom page's poll): the edge keeps the media
// connection only for its own grace (12 s after ICE failed).

// ICE_SETTLE_MS: a "disconnected" connection is given this long to come
// back by itself before this page restarts ICE; ICE_RETRY_MS spaces the
// restarts while the link is still down.
const ICE_SETTLE_MS = 1500, ICE_RETRY_MS = 4000, ICE_GIVE_UP_MS = 15000;

// watchICE watches pc of conn; restart (or null: the edge restarts this
// one) is called while it is not connected. conn.iceRestarts counts the
// restarts made, conn.iceRecovered the connections that came back.
function watchICE(conn, pc, restart) {
  let since = 0, timer = null, busy = false;
  const ok = () => pc.connectionState === "connected";
  const check = async () => {
    timer = null;
    if (conn.closed || pc.connectionState === "closed") return;
    if (ok()) { if (since) conn.iceRecovered = (conn.iceRecovered || 0) + 1; since = 0; return; }
    const now = Date.now();
    if (!since) since = now;
    if (now - since > ICE_GIVE_UP_MS) {
      conn.iceGaveUp = (conn.iceGaveUp || 0) + 1;
      if (conn.ws) conn.ws.close(); // the reconnect logic takes it from here
      return;
    }
    if (restart && !busy && (pc.connectionState === "failed" || now - since >= ICE_SETTLE_MS)) {
      busy = true;
      conn.iceRestarts = (conn.iceRestarts || 0) + 1;
      try { await restart(); } catch (e) { if (conn.on.error) conn.on.error({ code: "ice_restart", message: e.message }); }
      busy = false;
    }
    arm(restart ? ICE_RETRY_MS : 1000);
  };
  const arm = (ms) => { if (!timer) timer = setTimeout(check, ms); };
  pc.addEventListener("connectionstatechange", () => {
    const st = pc.connectionState;
    if (st === "connected") { if (since) check(); return; }
    if (st === "disconnected" || st === "failed") {
      if (!since) since = Date.now();
      if (st === "failed") { clearTimeout(timer); timer = null; check(); } else arm(ICE_SETTLE_MS);
    }
  });
}

// restartPublishICE offers the publish connection again with new ICE
// credentials; the edge answers it on the connection it has (publish).
async function restartPublishICE(conn) {
  const pc = conn.pub;
  if (!pc || pc.signalingState !== "stable") return;
  conn.pubSent = false; // its candidates follow the offer, not precede it
  await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
  const p = conn.req({ type: "publish", sdp: pc.localDescription.sdp });
  conn.pubSent = true;
  conn.flushPub();
  const a = await p;
  if (a.type !== "answer") throw new Error("ice restart: " + (a.message || a.code));
  await pc.setRemoteDescription({ type: "answer", sdp: a.sdp });
}
