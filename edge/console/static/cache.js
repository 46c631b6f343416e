// Resource cache panel: catalogue search with cache state and pins,
// prefetch progress, disk use, bandwidth schedule, teacher uploads.
// Self-contained: it uses the console sign-in
// (the session cookie) and refreshes while the app is visible.
"use strict";

(() => {
  const el = ce.byId;
  const call = (method, path, body, type) => ce.request(method, path, { body, type });
  const td = (text, cls) => ce.el("td", { class: cls }, text);
  const t = i18n.t;
  const size = i18n.size;
  const n = i18n.number;
  let query = "";
  // down is the inline SVG arrow shown while an item downloads.
  const down = () => ce.el("span", { class: "icon", title: t("cache.downloading"), "aria-label": t("cache.downloading") }, icons.el("down", 14));
  const stateCell = (it) => { const c = ce.el("td", { "data-state": it.state }, t("cache.state." + it.state)); if (it.downloading) c.append(" ", down()); return c; };

  function bar(done, total) {
    const p = ce.el("progress");
    p.max = Math.max(total, 1);
    p.value = Math.min(done, total);
    return p;
  }

  function renderStatus(st) {
    const u = st.usage;
    el("cache-usage").textContent = (u.quota_bytes ? t("cache.usage_quota", { used: size(u.used_bytes), quota: size(u.quota_bytes) }) : t("cache.usage", { used: size(u.used_bytes) })) +
      t("cache.usage_rest", { pinned: size(u.pinned_bytes), free: size(u.free_bytes), files: n(u.blobs), reserve: size(u.reserve_bytes || 0), available: size(u.available_bytes || 0) });
    const bw = st.bandwidth;
    el("cache-bandwidth").textContent = t("cache.bandwidth", { now: bw.now_bps ? i18n.rate(bw.now_bps) : t("cache.no_cap"), schedule: bw.schedule });
    const p = st.prefetch;
    el("cache-overall").replaceChildren(
      document.createTextNode(t("cache.prefetch", { cached: n(p.cached), wanted: n(p.wanted), done: size(p.bytes_done), total: size(p.bytes_wanted), active: n(p.active), failed: n(p.failed), days: n(p.horizon_days) }) + " "),
      bar(p.bytes_done, p.bytes_wanted));
    const tb = el("cache-items");
    tb.replaceChildren();
    for (const it of st.items) {
      const tr = ce.el("tr", { "data-id": it.id });
      tr.append(td(it.title), td(it.id, "mono"), td((it.reasons || ["read-through"]).map((r) => (i18n.has("cache.reason." + r.split(":")[0]) ? t("cache.reason." + r.split(":")[0]) : r)).join(t("common.list_sep"))), stateCell(it));
      const prog = ce.el("td");
      prog.append(bar(it.bytes, it.size), document.createTextNode(" " + size(it.bytes) + " / " + size(it.size) + (it.rate_bps ? " · " + i18n.rate(it.rate_bps) : "")));
      tr.append(prog, td(it.error || "", "error"));
      tb.append(tr);
    }
    el("cache-uploads").textContent = st.uploads.length ? t("cache.uploads_waiting", { n: n(st.uploads.length) }) + st.uploads.filter((u) => u.error).map((u) => " · " + u.id + ": " + u.error).join("") : t("cache.uploads_done");
  }

  async function renderCatalog() {
    const data = await call("GET", "/api/v1/catalog?limit=50&q=" + encodeURIComponent(query));
    const tb = el("catalog-items");
    tb.replaceChildren();
    for (const it of data.items) {
      const tr = ce.el("tr", { "data-id": it.id });
      // A new tab without a handle back to the console: whatever the item
      // is, it never gets a reference to the page that holds the token.
      const link = ce.el("a", { href: "/media/" + it.id, target: "_blank", rel: "noopener noreferrer" }, it.title);
      tr.append(ce.el("td", {}, link), td(it.subject || ""), td(it.grade || ""), td(size(it.size)), stateCell(it));
      const act = ce.el("td");
      for (const [label, method] of [["pin", "PUT"], ["unpin", "DELETE"]]) {
        const b = ce.el("button", { class: "cache-" + label }, t("cache." + label));
        b.onclick = async () => {
          el("cache-error").textContent = "";
          try { await call(method, "/api/v1/cache/pins/" + it.id); } catch (e) { el("cache-error").textContent = i18n.err(e); }
          refresh();
        };
        act.append(b);
      }
      tr.append(act);
      tb.append(tr);
    }
    el("catalog-count").textContent = t("cache.count", { n: n(data.total) }) + (data.sync.last_error ? t("cache.sync_failed", { message: data.sync.last_error }) : "");
  }

  async function refresh() {
    if (el("app").hidden) return;
    try {
      renderStatus(await call("GET", "/api/v1/cache"));
      await renderCatalog();
    } catch (e) {
      el("cache-error").textContent = i18n.err(e);
    }
  }

  el("catalog-search").oninput = (e) => { query = e.target.value; refresh(); };
  el("cache-upload-form").onsubmit = async (e) => {
    e.preventDefault();
    const f = el("cache-upload-file").files[0];
    if (!f) return;
    el("cache-error").textContent = "";
    try {
      const it = await call("POST", "/api/v1/media?title=" + encodeURIComponent(el("cache-upload-title").value) + "&subject=" + encodeURIComponent(el("cache-upload-subject").value), f, f.type || "application/octet-stream");
      el("cache-upload-result").textContent = t("cache.stored", { id: it.id });
      e.target.reset();
    } catch (err) {
      el("cache-error").textContent = i18n.err(err);
    }
    refresh();
  };
  i18n.ready.then(() => { setInterval(refresh, 2000); refresh(); });
})();
