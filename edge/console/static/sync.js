// Sync with the city: the console's sync panel. It reads GET /api/v1/sync
// every few seconds while signed in, and enrols the edge with a one-time
// token. Self-contained: it only shares the console's sign-in (the session cookie).
"use strict";
(() => {
  const el = ce.byId;
  const put = (key, v) => { const n = document.querySelector('#sync-panel [data-sync="' + key + '"]'); if (n) n.textContent = v; };
  const age = (sec) => sec < 1 ? "—" : sec < 120 ? Math.round(sec) + " s" : sec < 7200 ? Math.round(sec / 60) + " min" : (sec / 3600).toFixed(1) + " h";

  async function refresh() {
    if (el("app").hidden) return;
    try {
      const s = await ce.request("GET", "/api/v1/sync", {});
      const link = el("sync-link");
      link.textContent = s.link;
      link.className = "pill " + (s.link === "up" ? "on" : "off");
      put("school", s.school || "—");
      put("hub", s.hub || "no -cloud: sync waits");
      put("backlog", String(s.backlog));
      put("oldest", age(s.oldest_age_seconds));
      put("last_success", ce.ago(s.last_success));
      put("last_error", s.last_error || "");
      put("cursor", String(s.downlink_cursor));
      put("sent", s.sent_records + " records, " + s.sent_bytes + " bytes");
      el("sync-enrol").hidden = s.link !== "not_enrolled";
    } catch (e) { put("last_error", "cannot read sync state: " + e.message); }
  }

  el("sync-enrol").onsubmit = async (e) => {
    e.preventDefault();
    el("sync-enrol-error").textContent = "";
    try {
      await ce.request("POST", "/api/v1/sync/enrol", { body: { token: el("sync-token").value.trim() } });
      el("sync-enrol").reset();
      refresh();
    } catch (err) { el("sync-enrol-error").textContent = err.message; }
  };
  refresh();
  setInterval(refresh, 3000);
})();
