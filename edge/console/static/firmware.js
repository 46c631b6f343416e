// Firmware panel of the admin console: the running version and A/B slot,
// the updater's state and download progress, the last fallback, and a
// "Check now" button. It reads GET /api/v1/firmware every few seconds while
// the app is shown; see docs/FIRMWARE.md.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const labels = {
    disabled: "updates off", offline: "no city hub", idle: "up to date", checking: "checking",
    downloading: "downloading", verifying: "verifying", waiting_for_class: "waiting for the live class to end",
    installing: "installing", switching: "switching", restarting: "restarting into the new version",
    trial: "new version on trial", error: "error",
  };

  function row(dl, name, value) {
    if (value === undefined || value === null || value === "") return;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = name.toLowerCase().replace(/ /g, "-");
    dl.append(dt, dd);
  }

  function render(s) {
    const dl = document.createElement("dl");
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
      const res = await fetch("/api/v1/firmware");
      render(await res.json());
    } catch (e) {
      $("fw-status").textContent = "Firmware status unavailable: " + e.message;
    }
  }

  async function checkNow() {
    const msg = $("fw-msg");
    msg.textContent = "";
    const res = await fetch("/api/v1/firmware/check", {
      method: "POST", headers: { "Authorization": "Bearer " + (sessionStorage.getItem("campusedge.admin") || "") },
    });
    const data = await res.json().catch(() => ({}));
    msg.textContent = res.ok ? "Checking the city hub…" : ((data.error && data.error.message) || res.statusText);
    msg.className = res.ok ? "" : "error";
    load();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("fw-check").onclick = checkNow;
    load();
    setInterval(load, 3000);
  });
})();
