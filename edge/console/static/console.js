// CampusEdge admin console: plain JS, no build step, no external assets, so
// it works on a school LAN with no internet.
"use strict";

// codes holds the last pairing code per classroom, so that it survives the
// re-render that every live event and the periodic refresh do.
const state = { me: null, classrooms: new Map(), terminals: new Map(), codes: new Map(), ws: null, retry: 0 };
const $ = ce.byId;
const api = (method, path, body) => ce.request(method, path, { body });
const el = ce.el;
const t = i18n.t;

// homeroomCell shows and edits the class whose home the classroom is.
function homeroomCell(c) {
  const input = el("input", { class: "homeroom", value: c.homeroom || "", maxlength: "64", placeholder: t("classrooms.homeroom"), "aria-label": t("classrooms.col.homeroom") });
  const msg = el("span", { class: "error" });
  input.onchange = async () => {
    msg.textContent = "";
    try {
      const r = await api("PUT", "/api/v1/classrooms/" + encodeURIComponent(c.id) + "/homeroom", { homeroom: input.value });
      state.classrooms.set(r.id, r);
    } catch (e) { msg.textContent = i18n.err(e); }
  };
  return el("td", {}, input, msg);
}

function render() {
  const tb = $("classrooms");
  tb.replaceChildren();
  for (const c of [...state.classrooms.values()].sort((a, b) => a.room_code.localeCompare(b.room_code))) {
    const tr = el("tr", { "data-classroom": c.id });
    const online = [...state.terminals.values()].filter((t) => t.classroom_id === c.id && t.online).length;
    tr.append(el("td", {}, c.room_code), el("td", {}, c.name), el("td", {}, i18n.number(online)));
    const td = el("td");
    const btn = el("button", { class: "pair-btn" }, t("classrooms.pair"));
    const out = el("span", { class: "code" });
    const show = (r) => {
      out.textContent = r.code;
      out.title = t("classrooms.code_expires", { time: i18n.time(r.expires_at) });
      out.dataset.code = r.code;
    };
    const kept = state.codes.get(c.id);
    if (kept && Date.parse(kept.expires_at) > Date.now()) show(kept); else state.codes.delete(c.id);
    btn.onclick = async () => {
      try {
        const r = await api("POST", "/api/v1/classrooms/" + encodeURIComponent(c.id) + "/pairing-codes");
        state.codes.set(c.id, r);
        show(r);
      } catch (e) { out.textContent = i18n.err(e); }
    };
    td.append(btn, " ", out);
    tr.append(td, homeroomCell(c));
    tr.append(el("td", {},
      el("button", { class: "quiet rename-btn", onclick: async () => {
        const name = prompt(t("classrooms.rename_prompt"), c.name);
        if (!name) return;
        try { state.classrooms.set(c.id, await api("PATCH", "/api/v1/classrooms/" + encodeURIComponent(c.id), { name })); render(); }
        catch (e) { $("classroom-error").textContent = i18n.err(e); }
      } }, t("classrooms.rename")), " ",
      el("button", { class: "quiet delete-btn", onclick: async () => {
        if (!confirm(t("classrooms.remove_confirm"))) return;
        try { await api("DELETE", "/api/v1/classrooms/" + encodeURIComponent(c.id)); state.classrooms.delete(c.id); render(); }
        catch (e) { $("classroom-error").textContent = i18n.err(e); }
      } }, t("classrooms.remove"))));
    tb.append(tr);
  }
  const tt = $("terminals");
  tt.replaceChildren();
  for (const term of [...state.terminals.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    const tr = el("tr", { "data-terminal": term.id, title: term.id });
    const room = state.classrooms.get(term.classroom_id);
    tr.append(el("td", {}, term.name), el("td", { "data-classroom": term.classroom_id }, room ? room.name : term.classroom_id, room ? el("span", { class: "sub" }, " · " + room.room_code) : null),
      el("td", { class: "pill state " + (term.online ? "on" : "off") }, term.online ? t("terminals.online") : t("terminals.offline")),
      el("td", {}, i18n.ago(term.last_seen)), el("td", {}, term.version || ""), el("td", {}, term.addr || ""));
    const kind = el("select", { class: "kind-select", onchange: async () => {
      try { state.terminals.set(term.id, await api("PATCH", "/api/v1/terminals/" + encodeURIComponent(term.id), { kind: kind.value })); render(); }
      catch (e) { $("classroom-error").textContent = i18n.err(e); }
    } });
    for (const v of ["", "big_screen", "agent"]) {
      const o = el("option", { value: v }, t("terminals.kind." + (v || "unset")));
      if ((term.kind || "") === v) o.selected = true;
      kind.append(o);
    }
    tr.append(el("td", {}, kind), el("td", {}, el("button", { class: "warn unpair-btn", onclick: async () => {
      if (!confirm(t("terminals.unpair_confirm"))) return;
      try { await api("DELETE", "/api/v1/terminals/" + encodeURIComponent(term.id)); state.terminals.delete(term.id); render(); }
      catch (e) { $("classroom-error").textContent = i18n.err(e); }
    } }, t("terminals.unpair"))));
    tt.append(tr);
  }
}

async function refreshHealth() {
  try {
    const res = await fetch("/healthz");
    const h = await res.json();
    const box = $("health");
    box.replaceChildren(el("p", { class: "pill " + (h.status === "ok" ? "on" : "off") }, t("health.status", { status: t("health.state." + h.status) })));
    const ul = el("ul");
    for (const [name, c] of Object.entries(h.checks || {})) {
      const label = i18n.has("health.check." + name) ? t("health.check." + name) : name;
      ul.append(el("li", { "data-check": name }, c.ok ? t("health.check_ok", { name: label }) : t("health.check_degraded", { name: label, detail: c.detail })));
    }
    box.append(ul);
  } catch (e) { $("health").textContent = t("health.unreachable", { message: i18n.err(e) }); }
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/api/v1/ws");
  state.ws = ws;
  // The session cookie goes with the upgrade; the hello carries no token.
  ws.onopen = () => ws.send(JSON.stringify({ type: "hello", v: 1 }));
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "welcome") {
      state.retry = 0;
      $("link").textContent = t("console.link.live"); $("link").className = "pill on";
      $("edge-name").textContent = t("console.edge", { id: m.edge_id });
    } else if (m.type === "snapshot") {
      state.classrooms = new Map(m.classrooms.map((c) => [c.id, c]));
      state.terminals = new Map(m.terminals.map((t) => [t.id, t]));
      render();
    } else if (m.type === "event") {
      if (m.kind === "terminal") { if (m.removed) state.terminals.delete(m.terminal.id); else state.terminals.set(m.terminal.id, m.terminal); }
      if (m.kind === "classroom") { if (m.removed) state.classrooms.delete(m.classroom.id); else state.classrooms.set(m.classroom.id, m.classroom); }
      render();
    } else if (m.type === "error" && m.code === "unauthorized") {
      signOut(t("console.refused", { message: m.message }));
    }
  };
  ws.onclose = () => {
    $("link").textContent = t("console.link.offline"); $("link").className = "pill off";
    if (!state.me || state.ws !== ws) return;
    // Back off with jitter so that many consoles do not reconnect in step.
    const delay = Math.min(30000, 500 * 2 ** state.retry++) * (0.5 + Math.random() / 2);
    setTimeout(connect, delay);
  };
}

// enter shows the console to a signed-in admin; anyone else is pointed
// to their own page.
function enter(me) {
  state.me = me;
  $("signin-error").textContent = "";
  if (!ce.has(me, "admin")) {
    $("signin-other").hidden = false; $("signin-who").textContent = me.name || me.staff_id;
    return;
  }
  $("who").textContent = me.name || me.staff_id || "";
  $("signin").hidden = true; $("app").hidden = false; $("signout").hidden = false;
  connect();
  refreshHealth();
  setInterval(refreshHealth, 10000);
  setInterval(render, 15000);
  document.dispatchEvent(new Event("ce-signed-in"));
}

async function signIn(creds) {
  try {
    await ce.signIn(creds);
  } catch (e) {
    $("signin-error").textContent = creds.admin_token && e.status === 401 ? t("console.wrong_token") : t("console.refused", { message: i18n.err(e) });
    return;
  }
  $("token").value = ""; $("signin-password").value = "";
  const me = await ce.me();
  if (me) enter(me);
}

async function signOut(msg) {
  state.me = null;
  await ce.signOut();
  if (state.ws) { const ws = state.ws; state.ws = null; ws.close(); }
  $("signin").hidden = false; $("app").hidden = true; $("signout").hidden = true;
  $("signin-error").textContent = msg || "";
}

$("signin-form").onsubmit = (e) => {
  e.preventDefault();
  if ($("token").value.trim()) { signIn({ admin_token: $("token").value.trim() }); return; }
  signIn({ id: $("signin-id").value.trim(), password: $("signin-password").value });
};
$("signin-token").onclick = () => signIn({ admin_token: $("token").value.trim() });
$("signout").onclick = () => signOut("");
$("classroom-form").onsubmit = async (e) => {
  e.preventDefault();
  $("classroom-error").textContent = "";
  try {
    const c = await api("POST", "/api/v1/classrooms", { name: $("classroom-name").value, room_code: $("classroom-room").value, homeroom: $("classroom-homeroom").value });
    state.classrooms.set(c.id, c);
    render();
    $("classroom-form").reset();
  } catch (err) { $("classroom-error").textContent = i18n.err(err); }
};
i18n.ready.then(() => ce.me()).then((me) => { if (me) enter(me); }); // still signed in (the cookie)
