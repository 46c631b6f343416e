// Resource cache panel: catalogue search with cache state and pins,
// prefetch progress, disk use, bandwidth schedule, teacher uploads.
// Self-contained: it reads the admin token the console keeps
// (common.js: ce.stored("admin")) and refreshes while the app is visible.
"use strict";

(() => {
  const el = ce.byId;
  const token = () => ce.stored("admin");
  const call = (method, path, body, type) => ce.request(method, path, { token: token(), body, type });
  const td = (text, cls) => ce.el("td", { class: cls }, text);
  let query = "";

  function size(n) {
    if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GiB";
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
    if (n >= 1 << 10) return (n / (1 << 10)).toFixed(0) + " KiB";
    return n + " B";
  }

  function bar(done, total) {
    const p = ce.el("progress");
    p.max = Math.max(total, 1);
    p.value = Math.min(done, total);
    return p;
  }

  function renderStatus(st) {
    const u = st.usage;
    el("cache-usage").textContent = "Used " + size(u.used_bytes) + (u.quota_bytes ? " of " + size(u.quota_bytes) + " quota" : "") +
      " · pinned " + size(u.pinned_bytes) + " · disk free " + size(u.free_bytes) +
      " (" + size(u.reserve_bytes || 0) + " kept for records, " + size(u.available_bytes || 0) + " left for the cache)" + " · " + u.blobs + " files";
    const bw = st.bandwidth;
    el("cache-bandwidth").textContent = "WAN cap now: " + (bw.now_bps ? (bw.now_bps / 1e6).toFixed(1) + " Mbit/s" : "none") + " · schedule " + bw.schedule;
    const p = st.prefetch;
    el("cache-overall").replaceChildren(
      document.createTextNode("Prefetch: " + p.cached + " of " + p.wanted + " items ready (" + size(p.bytes_done) + " of " + size(p.bytes_wanted) + "), " + p.active + " downloading, " + p.failed + " failed · horizon " + p.horizon_days + " days "),
      bar(p.bytes_done, p.bytes_wanted));
    const tb = el("cache-items");
    tb.replaceChildren();
    for (const it of st.items) {
      const tr = ce.el("tr", { "data-id": it.id });
      tr.append(td(it.title), td(it.id, "mono"), td((it.reasons || ["read-through"]).join(", ")), td(it.state + (it.downloading ? " ↓" : "")));
      const prog = ce.el("td");
      prog.append(bar(it.bytes, it.size), document.createTextNode(" " + size(it.bytes) + " / " + size(it.size) + (it.rate_bps ? " · " + (it.rate_bps / 1e6).toFixed(1) + " Mbit/s" : "")));
      tr.append(prog, td(it.error || "", "error"));
      tb.append(tr);
    }
    el("cache-uploads").textContent = st.uploads.length ? st.uploads.length + " school-made item(s) waiting to reach the city catalogue" + st.uploads.filter((u) => u.error).map((u) => " · " + u.id + ": " + u.error).join("") : "All school-made items are in the city catalogue.";
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
      tr.append(ce.el("td", {}, link), td(it.subject || ""), td(it.grade || ""), td(size(it.size)), td(it.state + (it.downloading ? " ↓" : "")));
      const act = ce.el("td");
      for (const [label, method] of [["Pin", "PUT"], ["Unpin", "DELETE"]]) {
        const b = ce.el("button", { class: "cache-" + label.toLowerCase() }, label);
        b.onclick = async () => {
          el("cache-error").textContent = "";
          try { await call(method, "/api/v1/cache/pins/" + it.id); } catch (e) { el("cache-error").textContent = e.message; }
          refresh();
        };
        act.append(b);
      }
      tr.append(act);
      tb.append(tr);
    }
    el("catalog-count").textContent = data.total + " item(s)" + (data.sync.last_error ? " · last sync failed: " + data.sync.last_error : "");
  }

  async function refresh() {
    if (!token() || el("app").hidden) return;
    try {
      renderStatus(await call("GET", "/api/v1/cache"));
      await renderCatalog();
    } catch (e) {
      el("cache-error").textContent = e.message;
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
      el("cache-upload-result").textContent = "Stored as " + it.id;
      e.target.reset();
    } catch (err) {
      el("cache-error").textContent = err.message;
    }
    refresh();
  };
  setInterval(refresh, 2000);
  refresh();
})();
