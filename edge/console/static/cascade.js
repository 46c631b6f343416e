// Cascade links: the console's panel of every lesson this edge pulls from
// another school's edge and every school pulling one from here, with the
// link's state, the upstream edge's bandwidth estimate, the layer the link
// carries, its loss and whether the video is paused. It reads GET
// /api/v1/cascade/links every 2 s while signed in (the same sign-in as the
// rest of the console).
"use strict";
(() => {
  const el = ce.el;
  const t = i18n.t;
  const kbps = (n) => t("cascade.kbps", { n: i18n.number(n) });

  function row(l) {
    const peer = el("td", {}, l.peer, el("span", { class: "sub" }, " · " + t("cascade.session", { id: l.session.slice(0, 8) })));
    const state = el("td", {}, el("span", { class: "pill state " + (l.state === "connected" ? "on" : "off") }, t("cascade.state." + l.state)),
      el("span", { class: "sub" }, " " + t("cascade.since", { time: i18n.time(l.since) })));
    let estimate = t("cascade.not_measured");
    let layer = "—";
    let loss = "—";
    if (l.measured) {
      estimate = l.estimate_kbps > 0 ? kbps(l.estimate_kbps) : t("cascade.no_estimate");
      if (l.layers > 0) {
        const q = l.quality ? t("cascade.quality." + l.quality) : t("cascade.single_layer");
        layer = l.width > 0 ? t("cascade.layer_value", { quality: q, width: l.width, height: l.height }) : q;
      }
      loss = i18n.number(l.loss_pct, 1) + " %";
    }
    const video = l.measured && l.paused ? el("td", { class: "error" }, t("cascade.video.paused", { time: i18n.time(l.paused_since) }))
      : el("td", {}, l.measured ? t("cascade.video.playing") : "—");
    const tr = el("tr", { "data-direction": l.direction, "data-peer": l.peer, "data-state": l.state, "data-estimate": String(l.estimate_kbps), "data-quality": l.quality || "", "data-height": String(l.height || 0) },
      el("td", {}, t("cascade.direction." + l.direction)), peer, state,
      el("td", { "data-cell": "estimate" }, estimate),
      el("td", {}, l.direction === "upstream" ? kbps(l.receive_kbps || 0) : "—"),
      el("td", { "data-cell": "layer" }, layer), el("td", {}, loss), video);
    return tr;
  }

  async function refresh() {
    if (ce.byId("app").hidden) return;
    const err = ce.byId("cascade-error");
    try {
      const r = await ce.request("GET", "/api/v1/cascade/links", {});
      const links = r.links || [];
      ce.byId("cascade-links").replaceChildren(...links.map(row));
      ce.byId("cascade-none").hidden = links.length > 0;
      ce.byId("cascade-table").hidden = links.length === 0;
      err.textContent = "";
    } catch (e) { err.textContent = t("cascade.unreadable", { message: i18n.err(e) }); }
  }

  i18n.ready.then(() => { refresh(); setInterval(refresh, 2000); });
  document.addEventListener("ce-signed-in", refresh);
})();
