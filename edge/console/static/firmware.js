// Firmware panel of the admin console: the running version and A/B slot,
// the updater's state and download progress, the last fallback, and a
// "Check now" button. It reads GET /api/v1/firmware every few seconds while
// the app is shown; see docs/FIRMWARE.md.
"use strict";
(() => {
  const $ = ce.byId;
  const t = i18n.t;

  // row adds a field; field is its key in the catalogue (fw.field.<field>)
  // and the dd's data-field, which tests and scripts read.
  function row(dl, field, value) {
    if (value === undefined || value === null || value === "") return;
    dl.append(ce.el("dt", {}, t("fw.field." + field)), ce.el("dd", { "data-field": field }, value));
  }

  function render(s) {
    const dl = ce.el("dl");
    row(dl, "version", s.version);
    row(dl, "state", i18n.has("fw.state." + s.state) ? t("fw.state." + s.state) : s.state);
    row(dl, "slot", s.slot ? s.slot + (s.trial ? t("fw.on_trial") : "") : "");
    row(dl, "floor", s.floor);
    row(dl, "channel", s.channel && s.target ? s.channel + " · " + s.target : "");
    if (s.available) row(dl, "available", t("fw.available_value", { version: s.available.version, channel: s.available.channel, percent: i18n.number(s.available.rollout_percent) }));
    if (s.total_bytes > 0) row(dl, "download", t("fw.download_value", { percent: i18n.number(Math.round(100 * s.downloaded_bytes / s.total_bytes)), size: i18n.size(s.total_bytes) }));
    if (s.last_check) row(dl, "last-check", i18n.dateTime(s.last_check));
    if (s.last_fallback) row(dl, "last-fallback", t("fw.fallback_value", { from: s.last_fallback.from_version, to: s.last_fallback.to_version, reason: s.last_fallback.reason }));
    // A state the catalogue explains needs no English detail from the API.
    row(dl, "problem", s.error || (i18n.has("fw.detail." + s.state) ? t("fw.detail." + s.state) : s.detail));
    $("fw-status").replaceChildren(dl);
    $("fw-status").dataset.state = s.state;
  }

  async function load() {
    if (!$("app") || $("app").hidden) return;
    try {
      render(await ce.request("GET", "/api/v1/firmware"));
    } catch (e) {
      $("fw-status").textContent = t("fw.unavailable", { message: i18n.err(e) });
    }
  }

  async function checkNow() {
    const msg = $("fw-msg");
    msg.textContent = "";
    try {
      await ce.request("POST", "/api/v1/firmware/check", {});
      msg.textContent = t("fw.checking");
      msg.className = "";
    } catch (e) {
      msg.textContent = i18n.err(e);
      msg.className = "error";
    }
    load();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("fw-check").onclick = checkNow;
    i18n.ready.then(() => { load(); setInterval(load, 3000); });
  });
})();
