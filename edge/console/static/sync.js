// Sync with the city: the console's sync panel. It reads GET /api/v1/sync
// every few seconds while signed in, and enrols the edge with a one-time
// token. Self-contained: it only shares the console's sign-in (the session cookie).
"use strict";
(() => {
  const el = ce.byId;
  const put = (key, v) => { const n = document.querySelector('#sync-panel [data-sync="' + key + '"]'); if (n) n.textContent = v; };
  const t = i18n.t;
  const age = (sec) => sec < 1 ? "—" : i18n.duration(sec);

  async function refresh() {
    if (el("app").hidden) return;
    try {
      const s = await ce.request("GET", "/api/v1/sync", {});
      const link = el("sync-link");
      link.textContent = t("sync.link." + s.link);
      link.dataset.link = s.link;
      link.className = "pill " + (s.link === "up" ? "on" : "off");
      put("school", s.school || "—");
      put("hub", s.hub || t("sync.no_hub"));
      put("backlog", i18n.number(s.backlog));
      put("oldest", age(s.oldest_age_seconds));
      put("last_success", i18n.ago(s.last_success));
      put("last_error", s.last_error || "");
      put("cursor", String(s.downlink_cursor));
      put("sent", t("sync.sent_value", { records: i18n.number(s.sent_records), size: i18n.size(s.sent_bytes) }));
      el("sync-enrol").hidden = s.link !== "not_enrolled";
    } catch (e) { put("last_error", t("sync.unreadable", { message: i18n.err(e) })); }
  }

  el("sync-enrol").onsubmit = async (e) => {
    e.preventDefault();
    el("sync-enrol-error").textContent = "";
    try {
      await ce.request("POST", "/api/v1/sync/enrol", { body: { token: el("sync-token").value.trim() } });
      el("sync-enrol").reset();
      refresh();
    } catch (err) { el("sync-enrol-error").textContent = i18n.err(err); }
  };
  i18n.ready.then(() => { refresh(); setInterval(refresh, 3000); });
})();
