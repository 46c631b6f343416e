// Firmware panel of the admin console: the running version and A/B slot,
// the updater's state and download progress, the last fallback, and a
// "Check now" button. It reads GET /api/v1/firmware every few seconds while
// the app is shown; see docs/FIRMWARE.md.
"use strict";
(() => {
  const $ = ce.byId;
  const labels = {
    disabled: "updates off", offline: "no city hub", idle: "up to date", checking: "checking",
    downloading: "downloading", verifying: "verifying", waiting_for_class: "waiting for the live class to end",
    installing: "installing", switching: "switching", restarting: "restarting into the new version",
    trial: "new version on trial", error: "error",
  };

  function row(dl, name, value) {
    if (value === undefined || value === null || value === "") return;
    dl.append(ce.el("dt", {}, name), ce.el("dd", { "data-field": name.toLowerCase().replace(/ /g, "-") }, value));
  }

  function render(s) {
    const dl = ce.el("dl");
    row(dl, "Version", s.version);
    row(dl, "State", labels[s.state] || s.state);
    row(dl, "Slot", s.slot ? s.slot + (s.trial ? " (on trial)" : "") : "");
    row(dl, "Floor", s.floor);
    row(dl, "Channel", s.channel && s.target ? s.channel + " · " + s.target : "");
    if (s.available) row(dl, "Available", s.available.version + " (" + s.available.channel + ", " + s.available.rollout_percent + " %)");
    if (s.total_bytes > 0) row(dl, "Download", Math.round(100 * s.downloaded_bytes / s.total_bytes) + " % of " + (s.total_bytes / 1048576).toFixed(1) + " MiB");
    if (s.last_check) row(dl, "Last check", new Date(s.last_check).toLocaleString());
    if (s.last_fallback) row(dl, "Last fallback", s.last_fallback.from_version + " → " + s.last_fallback.to_version + ": " + s.last_fallback.reason);
    row(dl, "Problem", s.error || s.detail);
    $("fw-status").replaceChildren(dl);
    $("fw-status").dataset.state = s.state;
  }

  async function load() {
    if (!$("app") || $("app").hidden) return;
    try {
      render(await ce.request("GET", "/api/v1/firmware"));
    } catch (e) {
      $("fw-status").textContent = "Firmware status unavailable: " + e.message;
    }
  }

  async function checkNow() {
    const msg = $("fw-msg");
    msg.textContent = "";
    try {
      await ce.request("POST", "/api/v1/firmware/check", {});
      msg.textContent = "Checking the city hub…";
      msg.className = "";
    } catch (e) {
      msg.textContent = e.message;
      msg.className = "error";
    }
    load();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("fw-check").onclick = checkNow;
    load();
    setInterval(load, 3000);
  });
})();
