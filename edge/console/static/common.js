// common.js: what every page of the edge shares — the console and the
// live-class pages alike — written once: requests with a bearer token,
// relative time, element building, signing in and out.
// Plain JS with no build step and no external assets (a school LAN may
// have no internet); each page loads it first, as /common.js, and uses the
// one namespace object it defines, window.ce.
"use strict";

window.ce = (() => {
  // No credential is kept in the browser's storage: a person signs in and
  // the edge sets an HttpOnly session cookie no script can read; a paired
  // screen's token is an HttpOnly cookie too. Session tokens of a live
  // class live in page memory only.

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

  // signIn signs this browser in: creds is {id, password} (a PIN is a
  // password of 6 digits) or {admin_token}. Resolves with the sign-in.
  const signIn = (creds) => request("POST", "/api/v1/auth/signin", { body: creds });
  // signOut ends this browser's sign-in.
  const signOut = () => request("POST", "/api/v1/auth/signout").catch(() => ({}));
  // me resolves with who is signed in, or null.
  const me = () => request("GET", "/api/v1/auth/me").catch(() => null);
  // has says whether the signed-in person p holds role (admin holds all).
  const has = (p, role) => !!p && (p.kind === "admin_token" || (p.roles || []).includes("admin") || (p.roles || []).includes(role));

  return Object.freeze({ request, ago, el, byId, signIn, signOut, me, has });
})();
