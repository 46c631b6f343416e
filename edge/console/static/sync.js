// Sync with the city: the console's sync panel. It reads GET /api/v1/sync
// every few seconds while signed in, and enrols the edge with a one-time
// token. Self-contained: it only shares the admin token console.js keeps.
"use strict";
(() => {
  const el = (id) => document.getElementById(id);
  const token = () => sessionStorage.getItem("campusedge.admin") || "";
  const put = (key, v) => { const n = document.querySelector('#sync-panel [data-sync="' + key + '"]'); if (n) n.textContent = v; };
  const since = (iso) => {
    if (!iso || iso.startsWith("0001")) return "never";
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : new Date(iso).toLocaleString();
  };
  const age = (sec) => sec < 1 ? "—" : sec < 120 ? Math.round(sec) + " s" : sec < 7200 ? Math.round(sec / 60) + " min" : (sec / 3600).toFixed(1) + " h";

  async function refresh() {
    if (!token() || el("app").hidden) return;
    try {
      const res = await fetch("/api/v1/sync", { headers: { "Authorization": "Bearer " + token() } });
      const s = await res.json();
      if (!res.ok) throw new Error((s.error && s.error.message) || res.statusText);
      const link = el("sync-link");
      link.textContent = s.link;
      link.className = "pill " + (s.link === "up" ? "on" : "off");
      put("school", s.school || "—");
      put("hub", s.hub || "no -cloud: sync waits");
      put("backlog", String(s.backlog));
      put("oldest", age(s.oldest_age_seconds));
      put("last_success", since(s.last_success));
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
      const res = await fetch("/api/v1/sync/enrol", {
        method: "POST",
        headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
        body: JSON.stringify({ token: el("sync-token").value.trim() }),
      });
      const r = await res.json();
      if (!res.ok) throw new Error((r.error && r.error.message) || res.statusText);
      el("sync-enrol").reset();
      refresh();
    } catch (err) { el("sync-enrol-error").textContent = err.message; }
  };
  refresh();
  setInterval(refresh, 3000);
})();
