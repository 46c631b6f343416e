// common.js: what every page of the edge shares — the console and the
// live-class pages alike — written once: requests with a bearer token,
// relative time, element building and the keys the pages keep in storage.
// Plain JS with no build step and no external assets (a school LAN may
// have no internet); each page loads it first, as /common.js, and uses the
// one namespace object it defines, window.ce.
"use strict";

window.ce = (() => {
  // keys: what the pages keep in the browser. The admin token lives for
  // the tab (sessionStorage); a paired classroom screen keeps its terminal
  // token across restarts (localStorage).
  const keys = {
    admin: { area: () => sessionStorage, key: "campusedge.admin" },
    terminal: { area: () => localStorage, key: "campusedge-terminal" },
  };

  // stored is the value kept under name ("admin" or "terminal"), "" if none.
  function stored(name) {
    const k = keys[name];
    return k.area().getItem(k.key) || "";
  }

  // store keeps value under name; an empty value removes it.
  function store(name, value) {
    const k = keys[name];
    if (value) k.area().setItem(k.key, value); else k.area().removeItem(k.key);
  }

  // request calls the edge's API and resolves with the JSON answer ({} for
  // none). opts: token (sent as "Authorization: Bearer <token>" whenever it
  // is a string), body (JSON unless type is given, then sent as it is).
  // A non-2xx answer rejects with an Error carrying the API's message and
  // the HTTP status.
  async function request(method, path, opts) {
    const o = opts || {};
    const headers = {};
    if (typeof o.token === "string") headers.Authorization = "Bearer " + o.token;
    if (o.body !== undefined) headers["Content-Type"] = o.type || "application/json";
    const res = await fetch(path, { method, headers, body: o.body === undefined ? undefined : (o.type ? o.body : JSON.stringify(o.body)) });
    const data = res.status === 204 ? {} : await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = new Error((data.error && data.error.message) || res.statusText);
      err.status = res.status;
      err.code = data.error && data.error.code;
      throw err;
    }
    return data;
  }

  // ago says how long ago an RFC 3339 time was, in the page's language
  // once /i18n.js has loaded ("never" for none).
  function ago(iso) {
    if (window.i18n) return window.i18n.ago(iso);
    if (!iso || iso.startsWith("0001")) return "never";
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : new Date(iso).toLocaleString();
  }

  // el builds an element: attrs are attributes ("on…" ones are listeners,
  // undefined and null ones are left out), kids are appended (strings as
  // text; undefined and null ones are left out).
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== undefined && k !== null) e.append(k);
    return e;
  }

  const byId = (id) => document.getElementById(id);

  return Object.freeze({ stored, store, request, ago, el, byId });
})();
