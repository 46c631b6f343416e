// i18n.js: every page of the edge speaks the school's language. One
// message catalogue per language (/i18n/<tag>.json, e.g. en.json and
// zh-CN.json; /i18n/languages.json lists them, so adding a language is
// adding a file); no string in the pages' code. The language is the one
// chosen on this device (kept in localStorage: a preference, not a
// credential), else the first of the browser's languages there is a
// catalogue for, else the edge's -language. Dates and times are shown in
// the edge's -time-zone (default Asia/Shanghai), sizes and numbers in the
// language's format. Load it after /common.js; pages wait for i18n.ready.
"use strict";

window.i18n = (() => {
  const storeKey = "campusedge.lang";
  let lang = "en";
  let zone = "Asia/Shanghai";
  let msgs = {};
  let fallback = {};
  let languages = {};

  const get = (url) => fetch(url, { cache: "no-cache" }).then((r) => (r.ok ? r.json() : Promise.reject(new Error(url + ": " + r.status))));

  // pick chooses among the available tags: the device's choice, the
  // browser's languages (zh, zh-Hans and zh-CN all take zh-CN), the edge's.
  function pick(avail, edgeLang) {
    const has = (t) => Object.prototype.hasOwnProperty.call(avail, t);
    const saved = localStorage.getItem(storeKey);
    if (saved && has(saved)) return saved;
    for (const l of navigator.languages || [navigator.language]) {
      if (has(l)) return l;
      const base = l.split("-")[0];
      const match = Object.keys(avail).find((t) => t === base || t.split("-")[0] === base);
      if (match) return match;
    }
    return has(edgeLang) ? edgeLang : Object.keys(avail)[0] || "en";
  }

  // t is the message key in the page's language with {name} replaced from
  // vars; a key missing from the catalogue falls back to English, then to
  // the key itself (visible, so a missing translation is noticed).
  function t(key, vars) {
    let s = msgs[key] ?? fallback[key] ?? key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined || vars[k] === null ? m : String(vars[k])));
    return s;
  }

  // has reports whether the catalogue has key.
  const has = (key) => key in msgs || key in fallback;

  // apply translates the elements under root that carry data-i18n (text),
  // data-i18n-html (trusted markup from the catalogue: links, code),
  // data-i18n-placeholder, data-i18n-title, data-i18n-aria-label,
  // data-i18n-alt and data-i18n-value.
  function apply(root) {
    const r = root || document;
    for (const e of r.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
    for (const e of r.querySelectorAll("[data-i18n-html]")) e.innerHTML = t(e.dataset.i18nHtml);
    // data-i18n-value: an input's default value, replaced only while the
    // person has not typed over it.
    for (const e of r.querySelectorAll("[data-i18n-value]")) {
      if (e.value === e.defaultValue) e.value = e.defaultValue = t(e.dataset.i18nValue);
    }
    for (const [attr, ds] of [["placeholder", "i18nPlaceholder"], ["title", "i18nTitle"], ["aria-label", "i18nAriaLabel"], ["alt", "i18nAlt"]]) {
      for (const e of r.querySelectorAll("[data-i18n-" + attr + "]")) e.setAttribute(attr, t(e.dataset[ds]));
    }
    document.documentElement.lang = lang;
    const title = document.querySelector("title[data-i18n]");
    if (title) document.title = t(title.dataset.i18n);
  }

  // err is what a person reads for a failed API call: the catalogue's text
  // for its error code when there is one, else the API's own message.
  function err(e) {
    if (e && e.code && has("err." + e.code)) return t("err." + e.code, { message: e.message });
    return (e && e.message) || String(e);
  }

  // problem is one import problem ({row, column, code, args, message}) in
  // the page's language.
  function problem(p) {
    const where = p.row ? (p.column ? t("import.at_column", { row: p.row, column: p.column }) : t("import.at_row", { row: p.row })) : "";
    const what = has("import." + p.code) ? t("import." + p.code, Object.assign({ row: p.row, column: p.column }, p.args || {})) : p.message;
    return where + what;
  }

  const fmt = (opts) => new Intl.DateTimeFormat(lang, Object.assign({ timeZone: zone }, opts));
  const valid = (iso) => iso && !String(iso).startsWith("0001") && !isNaN(Date.parse(iso));
  // dateTime, date and time format an RFC 3339 time in the school's zone.
  const dateTime = (iso) => (valid(iso) ? fmt({ dateStyle: "medium", timeStyle: "short" }).format(new Date(iso)) : t("common.never"));
  const date = (iso) => (valid(iso) ? fmt({ dateStyle: "medium" }).format(new Date(iso)) : "");
  const time = (iso) => (valid(iso) ? fmt({ timeStyle: "short" }).format(new Date(iso)) : "");

  // ago says how long ago a time was, or its date and time when long ago.
  function ago(iso) {
    if (!valid(iso)) return t("common.never");
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    const rel = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
    return s < 60 ? rel.format(-s, "second") : s < 3600 ? rel.format(-Math.round(s / 60), "minute") : dateTime(iso);
  }

  // duration formats seconds as "1 h 5 min" / "1小时5分钟".
  function duration(sec) {
    sec = Math.round(sec);
    if (sec < 60) return t("unit.seconds", { n: number(sec) });
    if (sec < 3600) return t("unit.minutes", { n: number(Math.round(sec / 60)) });
    return t("unit.hours", { n: number(Math.floor(sec / 3600)), m: number(Math.round((sec % 3600) / 60)) });
  }

  const number = (n, digits) => new Intl.NumberFormat(lang, digits === undefined ? {} : { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(n);

  // size formats a byte count in binary units.
  function size(n) {
    const units = [["GiB", 1 << 30], ["MiB", 1 << 20], ["KiB", 1 << 10]];
    for (const [u, v] of units) if (n >= v) return number(n / v, u === "KiB" ? 0 : 1) + " " + u;
    return number(n) + " B";
  }

  // rate formats bits per second as Mbit/s.
  const rate = (bps) => number(bps / 1e6, 1) + " Mbit/s";

  // fold turns full-width forms a Chinese input method types (`１２`,
  // `，`, `（`) into ASCII and the ideographic space into a space, as the
  // edge's textnorm.Fold does; Chinese characters stay.
  const fold = (s) => String(s).replace(/[\uFF01-\uFF5E]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0xFEE0)).replace(/\u3000/g, " ").trim();

  // splitList splits a list as people type it: on , ， 、 ; ； or new
  // lines, each item folded and trimmed, empty items dropped (textnorm.Split).
  const splitList = (s) => String(s).split(/[,，、;；\r\n]+/).map(fold).filter(Boolean);

  // switcher is a language menu; choosing reloads the page in it.
  function switcher() {
    const sel = document.createElement("select");
    sel.className = "lang-switch";
    sel.setAttribute("aria-label", t("common.language"));
    for (const [tag, name] of Object.entries(languages)) {
      const o = document.createElement("option");
      o.value = tag; o.textContent = name; o.lang = tag;
      sel.append(o);
    }
    sel.value = lang;
    sel.onchange = () => { localStorage.setItem(storeKey, sel.value); location.reload(); };
    return sel;
  }

  const ready = (async () => {
    let edgeLang = "zh-CN";
    try {
      const [avail, edge] = await Promise.all([get("/i18n/languages.json"), get("/api/v1/edge").catch(() => ({}))]);
      languages = avail;
      if (edge.time_zone) zone = edge.time_zone;
      if (edge.language) edgeLang = edge.language;
      lang = pick(avail, edgeLang);
      fallback = await get("/i18n/en.json");
      msgs = lang === "en" ? fallback : await get("/i18n/" + encodeURIComponent(lang) + ".json");
    } catch (e) {
      console.error("i18n: catalogue not loaded:", e);
    }
    const go = () => {
      apply(document);
      const slot = document.querySelector("[data-lang-switch]");
      if (slot) slot.replaceChildren(switcher());
    };
    if (document.readyState === "loading") await new Promise((r) => document.addEventListener("DOMContentLoaded", r, { once: true }));
    go();
  })();

  return Object.freeze({
    t, has, apply, err, problem, dateTime, date, time, ago, duration, number, size, rate, fold, splitList, ready,
    get lang() { return lang; }, get zone() { return zone; },
  });
})();
