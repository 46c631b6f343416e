// HTTPS panel: which certificate the edge serves (its own CA, the city's, or
// the operator's), until when, its fingerprint and key pin, and the CA to
// install on devices with short instructions. GET /api/v1/tls is public.
"use strict";
(() => {
  const el = ce.byId;
  const t = i18n.t;
  const put = (key, v) => { const n = document.querySelector('#tls-panel [data-tls="' + key + '"]'); if (n) n.textContent = v; };

  async function refresh() {
    if (el("app").hidden) return;
    try {
      const s = await ce.request("GET", "/api/v1/tls");
      put("source", i18n.has("tls.source." + s.source) ? t("tls.source." + s.source) : s.source);
      put("not_after", i18n.date(s.not_after));
      put("names", [...(s.dns_names || []), ...(s.ips || [])].join(", "));
      put("fingerprint", s.fingerprint_sha256);
      put("pin", s.spki_pin);
      put("ca_fingerprint", s.ca_fingerprint_sha256 || "—");
      put("problem", s.problem || "");
      el("tls-ca").hidden = !s.ca_fingerprint_sha256;
      el("tls-plain").hidden = location.protocol === "https:";
      el("tls-https-link").href = "https://" + location.hostname + ":" + (window.httpsPort || 8443) + "/";
    } catch (e) { put("problem", t("tls.unreadable", { message: i18n.err(e) })); }
  }
  i18n.ready.then(() => ce.request("GET", "/api/v1/edge")).then((e) => { window.httpsPort = e.https_port; refresh(); }).catch(() => {});
  // Fill the panel as soon as the admin signs in (the app is shown), then
  // keep it current: a certificate changes rarely (new address, renewal).
  new MutationObserver(refresh).observe(el("app"), { attributes: true, attributeFilter: ["hidden"] });
  refresh();
  setInterval(refresh, 30000);
})();
