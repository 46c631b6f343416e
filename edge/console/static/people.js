// People panel: staff accounts (create, change roles and credential,
// remove), who is signed in now (revoke), and the audit log. Uses the
// console's sign-in (the session cookie); refreshes while visible.
"use strict";

(() => {
  const $ = ce.byId, el = ce.el;
  // TEXT: every string this panel shows, from the catalogue (staff.*).
  const TEXT = new Proxy({}, { get: (_, k) => i18n.t(({ removeConfirm: "staff.remove_confirm" })[k] || "staff." + String(k)) });
  const roleNames = (rs) => (rs || []).map((r) => (i18n.has("staff.role." + r) ? i18n.t("staff.role." + r) : r)).join(i18n.t("common.list_sep"));
  const call = (method, path, body) => ce.request(method, path, { body });

  function roles() { return [...document.querySelectorAll(".staff-role:checked")].map((i) => i.value); }

  function fill(p) {
    $("staff-id").value = p ? p.id : ""; $("staff-id").readOnly = !!p;
    $("staff-name").value = p ? p.name : "";
    for (const i of document.querySelectorAll(".staff-role")) i.checked = p ? p.roles.includes(i.value) : i.value === "teacher";
    $("staff-classrooms").value = p ? (p.classrooms || []).join(", ") : "";
    $("staff-password").value = "";
  }

  async function refresh() {
    if ($("app").hidden) return;
    try {
      const { staff } = await call("GET", "/api/v1/staff");
      const tb = $("staff-list"); tb.replaceChildren();
      for (const p of staff) {
        tb.append(el("tr", { "data-staff": p.id }, el("td", {}, p.id), el("td", {}, p.name), el("td", {}, roleNames(p.roles)),
          el("td", {}, (p.classrooms || []).join(", ") || TEXT.any), el("td", {}, p.credential || TEXT.none),
          el("td", {}, p.source === "city" ? TEXT.city : TEXT.edge),
          el("td", {}, el("button", { class: "quiet", onclick: () => fill(p) }, TEXT.edit), " ",
            el("button", { class: "warn", onclick: async () => {
              if (!confirm(TEXT.removeConfirm)) return;
              try { await call("DELETE", "/api/v1/staff/" + encodeURIComponent(p.id)); refresh(); } catch (e) { $("staff-error").textContent = i18n.err(e); }
            } }, TEXT.remove))));
      }
      const { signins } = await call("GET", "/api/v1/auth/signins");
      const sb = $("signin-list"); sb.replaceChildren();
      for (const s of signins) {
        sb.append(el("tr", { "data-signin": s.id }, el("td", {}, s.name + " (" + s.staff_id + ")"), el("td", {}, roleNames(s.roles)),
          el("td", {}, s.addr), el("td", {}, i18n.dateTime(s.created_at)), el("td", {}, i18n.ago(s.last_used)),
          el("td", {}, el("button", { class: "quiet", onclick: async () => {
            try { await call("DELETE", "/api/v1/auth/signins/" + encodeURIComponent(s.id)); refresh(); } catch (e) { $("staff-error").textContent = i18n.err(e); }
          } }, TEXT.revoke))));
      }
      const { entries } = await call("GET", "/api/v1/audit?limit=50");
      const ab = $("audit-list"); ab.replaceChildren();
      for (const a of entries) {
        ab.append(el("tr", { "data-audit": a.action }, el("td", {}, i18n.dateTime(a.at)), el("td", {}, a.actor),
          el("td", {}, a.action), el("td", {}, a.target || ""), el("td", {}, a.detail || "")));
      }
    } catch (e) { $("staff-error").textContent = i18n.err(e); }
  }

  $("staff-form").onsubmit = async (e) => {
    e.preventDefault();
    $("staff-error").textContent = "";
    const secret = $("staff-password").value;
    const body = { id: $("staff-id").value.trim(), name: $("staff-name").value.trim(), roles: roles(),
      classrooms: $("staff-classrooms").value.split(",").map((s) => s.trim()).filter(Boolean) };
    if (/^[0-9]{6}$/.test(secret)) body.pin = secret; else if (secret) body.password = secret;
    try {
      if ($("staff-id").readOnly) await call("PUT", "/api/v1/staff/" + encodeURIComponent(body.id), body);
      else await call("POST", "/api/v1/staff", body);
      $("staff-error").textContent = TEXT.saved;
      fill(null);
      refresh();
    } catch (err) { $("staff-error").textContent = i18n.err(err); }
  };
  $("staff-clear").onclick = () => fill(null);
  document.addEventListener("ce-signed-in", () => i18n.ready.then(refresh));
  setInterval(refresh, 10000);
})();
