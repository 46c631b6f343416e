// Discovery panel: how terminals and phones find this edge. It shows the
// mDNS advertisement, the records the edge keeps in the school's DNS zone
// (-dns-zone: published by dynamic update, or to add by hand) with when
// they were last confirmed and the last error (a wrong TSIG key shows
// here), and QR codes of the edge's HTTPS address and the classroom page.
// Every string of the panel is in the S table below, so that it can move
// to a translation catalogue as it is.
"use strict";
(() => {
  // S is the panel's strings in the page's language (catalogue keys
  // dnssd.*), read when the panel renders.
  const t = i18n.t;
  const S = new Proxy({}, { get: (_, k) => (k === "modes" ? new Proxy({}, { get: (__, m) => (i18n.has("dnssd.mode." + m) ? t("dnssd.mode." + m) : undefined) }) : t("dnssd." + String(k))) });
  const panel = ce.byId("dnssd-panel");
  if (!panel) return;
  const el = ce.el;
  let pair = "";

  const row = (k, v, cls) => el("tr", {}, el("th", {}, k), el("td", { class: cls }, v || "—"));
  function dnsTable(d) {
    if (!d) return el("p", {}, S.dnsOff);
    return el("div", {},
      el("table", {}, el("tbody", {},
        row(S.zone, d.zone, "mono"), row(S.instance, d.instance), row(S.server, d.server, "mono"), row(S.mode, S.modes[d.mode] || d.mode),
        row(S.key, d.key_name, "mono"), row(S.host, d.host, "mono"), row(S.addrs, (d.addrs || []).join(", "), "mono"),
        row(S.lastUpdate, d.last_update ? ce.ago(d.last_update) : ""),
        row(S.lastConfirmed, d.last_confirmed ? ce.ago(d.last_confirmed) : "", "dnssd-confirmed"),
        row(S.error, d.error ? d.error + (d.error_at ? " (" + ce.ago(d.error_at) + ")" : "") : "", "error dnssd-error"))),
      el("h3", {}, S.records), el("pre", { class: "mono dnssd-records" }, (d.records || []).join("\n")),
      el("details", {}, el("summary", {}, S.zoneSnippet), el("pre", { class: "mono dnssd-zone" }, d.zone_snippet)),
      el("details", {}, el("summary", {}, S.dnsmasq), el("pre", { class: "mono" }, d.dnsmasq_snippet)));
  }
  function linkList(links) {
    const names = { edge: S.linkEdge, classroom: S.linkClassroom };
    return el("div", { class: "dnssd-links" }, ...(links || []).map((l) =>
      el("figure", { "data-link": l.label },
        el("img", { src: l.qr_png, alt: "QR: " + l.url, width: "192", height: "192" }),
        el("figcaption", {}, names[l.label] || l.label, el("br"), el("a", { href: l.url, class: "mono" }, l.url)))));
  }

  async function refresh() {
    if (ce.byId("app").hidden) return;
    let s;
    try {
      s = await ce.request("GET", "/api/v1/discovery" + (pair ? "?pair=" + encodeURIComponent(pair) : ""), {});
    } catch (e) {
      panel.replaceChildren(el("h2", {}, S.title), el("p", { class: "error" }, S.cannot + i18n.err(e)));
      return;
    }
    const m = s.mdns;
    const input = el("input", { id: "dnssd-pair", inputmode: "numeric", maxlength: "6", size: "8", value: pair });
    panel.replaceChildren(
      el("h2", {}, S.title),
      el("p", {}, el("b", {}, S.mdns + ": "), m ? (m.active ? (m.interfaces || []).join(", ") : "") + (m.problem ? " " + m.problem : "") : S.mdnsOff),
      el("h3", {}, S.dns), dnsTable(s.dns),
      el("h3", {}, S.links), linkList(s.links),
      el("p", {}, el("label", { for: "dnssd-pair" }, S.pairLabel + " "), input,
        el("button", { type: "button", onclick: () => {
          // Full-width digits (０-９) from a Chinese input method count too.
          pair = input.value.replace(/[\uFF10-\uFF19]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0xFF10 + 48)).trim();
          refresh();
        } }, S.pairGo)));
  }
  i18n.ready.then(() => {
    new MutationObserver(refresh).observe(ce.byId("app"), { attributes: true, attributeFilter: ["hidden"] });
    refresh();
    setInterval(refresh, 15000);
  });
})();
