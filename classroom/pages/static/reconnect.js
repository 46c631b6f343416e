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
