// i18n.js: the city console's two catalogues, English and Simplified
// Chinese, and the one function that applies them. Static text carries
// data-i18n (text) or data-i18n-placeholder (placeholder), as the edge console's i18n.js keys; scripts call
// window.cityI18n.t(key, ...args) for what they build. The choice is kept
// in localStorage; the default follows the browser's language.
"use strict";

window.cityI18n = (() => {
  const catalogues = {
    en: {
      title: "CampusEdge city console", signin: "Sign in", signout: "Sign out", user: "user", password: "password",
      schools: "Schools", edges: "Edges", tokens: "Enrolment tokens", imports: "Imports", catalog: "Catalogue",
      accounts: "Staff accounts", code: "Code", name: "Name", add: "Add", online: "Online", school: "School",
      refresh: "Refresh", health: "Health", lastsync: "Last sync", acked: "Records synced", version: "Version",
      certexp: "Certificate expires", ttl: "Valid for (hours)", issue: "Issue token",
      tokenonce: "Shown once: give it to the school's admin (scan the QR code with the phone), then enter it with edged enrol.",
      expires: "Expires", usedby: "Used by", kind: "Kind", roster: "Roster", timetable: "Timetable", staffkind: "Staff",
      csvhere: "or paste the CSV here", preview: "Preview", apply: "Apply", row: "Row", column: "Column",
      problem: "Problem", change: "Change", key: "Key", from: "Was", to: "Becomes", titlecol: "Title",
      subject: "Subject", grade: "Grade", save: "Save", role: "Role", city_admin: "City admin",
      school_admin: "School admin", content_editor: "Content editor", revoke: "Revoke", all: "all schools",
      none: "(no school)", never: "never", revoked: "revoked", saved: "Saved",
      h_ok: "online", h_offline: "offline", h_never_seen: "never seen", h_revoked: "revoked",
      h_cert_expiring: "certificate expiring", h_cert_expired: "certificate expired",
      op_add: "add", op_remove: "remove", op_change: "change",
      summary: "{0} edges: {1} online, {2} offline, {3} never seen",
      previewok: "{0} rows: {1} added, {2} removed, {3} changed, {4} unchanged. Nothing is applied until you press Apply.",
      previewbad: "{0} row error(s): fix the file and preview again. Nothing was applied.",
      applied: "Applied as change {0}: the school's edges pick it up on their next pull (within a minute).",
      confirmrevoke: "Revoke edge {0}? It stops syncing at once and must be enrolled again.",
      badlogin: "User name or password is wrong.",
      uploads: "School uploads", show: "Show", st_pending: "awaiting review", st_published: "published", st_rejected: "rejected", st_all: "all",
      received: "Received", file: "File", decision: "Decision", publish: "Publish", reject: "Reject", reason: "reason for the school",
      open: "open", reviewedby: "by {0}, {1}", needreason: "Write the reason the school will read, then press Reject.",
      uploadssummary: "{0} shown", published: "Published: every school's edge lists it on its next catalogue pull.",
      uploadshelp: "Lessons and documents that teachers uploaded at their school wait here until a city admin or content editor publishes them into the catalogue (every school's edge then lists them) or rejects them with a reason.",
      noreview: "This hub publishes uploads at once (cityhub -upload-review=false): nothing waits here.",
      backlog: "Backlog", backlogof: "{0}, oldest {1}", u_s: "{0} s", u_min: "{0} min", u_h: "{0} h", u_d: "{0} d",
      healthtab: "Sync health", hrange: "Range", h6: "last 6 hours", h24: "last 24 hours", h168: "last 7 days",
      healthhelp: "The city's sync in 5-minute steps, kept for 7 days by every hub replica together: edges online, records received, sync requests refused or failed, and the records still waiting on the edges.",
      c_online: "Edges online (of enrolled)", c_records: "Records received per 5 min", c_errors: "Sync errors per 5 min", c_backlog: "Records waiting on edges",
      nodata: "No data yet: the hub adds a point every minute.", latest: "now {0}",
      firmware: "Firmware", target: "Target", channel: "Channel", wave: "Wave", updated: "Updated", failing: "Failing",
      nextwave: "Advance to {0} %", stop: "Stop",
      fwhelp: "Each release reaches the share of its channel's edges its wave says. Advance a wave when the updated edges are healthy; Stop (0 %) halts it at once.",
      plainhttp: "This page is open over plain HTTP: the sign-in cookie is only kept over HTTPS. Open it at the hub's HTTPS address (port 9443 by default).",
    },
    "zh-CN": {
      title: "CampusEdge 城市控制台", signin: "登录", signout: "退出", user: "用户名", password: "密码",
      schools: "学校", edges: "边缘服务器", tokens: "注册令牌", imports: "导入", catalog: "资源目录",
      accounts: "工作人员账号", code: "代码", name: "名称", add: "添加", online: "在线", school: "学校",
      refresh: "刷新", health: "状态", lastsync: "最近同步", acked: "已同步记录", version: "版本",
      certexp: "证书到期", ttl: "有效期（小时）", issue: "生成令牌",
      tokenonce: "仅显示一次：交给学校管理员（用手机扫描二维码），再用 edged enrol 输入。",
      expires: "到期", usedby: "使用者", kind: "类型", roster: "花名册", timetable: "课程表", staffkind: "教职工",
      csvhere: "或在此粘贴 CSV", preview: "预览", apply: "应用", row: "行", column: "列",
      problem: "问题", change: "变更", key: "键", from: "原值", to: "新值", titlecol: "标题",
      subject: "学科", grade: "年级", save: "保存", role: "角色", city_admin: "城市管理员",
      school_admin: "学校管理员", content_editor: "内容编辑", revoke: "吊销", all: "全部学校",
      none: "（无学校）", never: "从未", revoked: "已吊销", saved: "已保存",
      h_ok: "在线", h_offline: "离线", h_never_seen: "从未连接", h_revoked: "已吊销",
      h_cert_expiring: "证书即将到期", h_cert_expired: "证书已过期",
      op_add: "新增", op_remove: "删除", op_change: "修改",
      summary: "共 {0} 台：{1} 台在线，{2} 台离线，{3} 台从未连接",
      previewok: "{0} 行：新增 {1}，删除 {2}，修改 {3}，不变 {4}。按“应用”之前不会有任何改动。",
      previewbad: "{0} 处行错误：请修改文件后重新预览。没有应用任何内容。",
      applied: "已作为第 {0} 号变更应用：学校的边缘服务器将在下次拉取时（一分钟内）获取。",
      confirmrevoke: "吊销边缘服务器 {0}？它会立即停止同步，需要重新注册。",
      badlogin: "用户名或密码错误。",
      uploads: "学校上传", show: "显示", st_pending: "待审核", st_published: "已发布", st_rejected: "已退回", st_all: "全部",
      received: "收到时间", file: "文件", decision: "处理", publish: "发布", reject: "退回", reason: "给学校的退回理由",
      open: "打开", reviewedby: "审核人 {0}，{1}", needreason: "请先填写学校会看到的退回理由，再按“退回”。",
      uploadssummary: "显示 {0} 项", published: "已发布：各校边缘服务器下次拉取资源目录时即可看到。",
      uploadshelp: "教师在学校上传的课件和文档在此等待：城市管理员或内容编辑将其发布到资源目录（之后各校边缘服务器都能看到），或填写理由退回。",
      noreview: "本城市中心上传后立即发布（cityhub -upload-review=false）：这里不会有待审核内容。",
      backlog: "积压", backlogof: "{0} 条，最早 {1}", u_s: "{0} 秒", u_min: "{0} 分钟", u_h: "{0} 小时", u_d: "{0} 天",
      healthtab: "同步状况", hrange: "时间范围", h6: "最近 6 小时", h24: "最近 24 小时", h168: "最近 7 天",
      healthhelp: "全市同步情况，每 5 分钟一个点，由各城市中心副本共同记录并保留 7 天：在线边缘服务器、收到的记录、被拒绝或失败的同步请求，以及仍在边缘服务器上等待上传的记录。",
      c_online: "在线边缘服务器（共注册）", c_records: "每 5 分钟收到的记录", c_errors: "每 5 分钟同步错误", c_backlog: "边缘服务器上等待的记录",
      nodata: "暂无数据：城市中心每分钟记录一个点。", latest: "当前 {0}",
      firmware: "固件", target: "平台", channel: "通道", wave: "批次", updated: "已更新", failing: "失败",
      nextwave: "推进到 {0}%", stop: "停止",
      fwhelp: "每个版本按其批次比例推送给该通道的边缘服务器。已更新的服务器正常后再推进下一批；“停止”（0%）立即暂停推送。",
      plainhttp: "此页面通过明文 HTTP 打开：登录 Cookie 只在 HTTPS 下保存。请通过城市中心的 HTTPS 地址（默认端口 9443）打开。",
    },
  };
  let lang = localStorage.getItem("cityhub.lang") || (navigator.language.startsWith("zh") ? "zh-CN" : "en");

  // t is the text of key in the chosen language, {n} replaced by args[n].
  function t(key, ...args) {
    const s = (catalogues[lang] && catalogues[lang][key]) || catalogues.en[key] || key;
    return s.replace(/\{(\d)\}/g, (_, n) => String(args[+n]));
  }

  // apply translates the static text under root.
  function apply(root) {
    document.documentElement.lang = lang;
    for (const e of (root || document).querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
    for (const e of (root || document).querySelectorAll("[data-i18n-placeholder]")) e.placeholder = t(e.dataset.i18nPlaceholder);
  }

  function set(l) {
    if (!catalogues[l]) return;
    lang = l;
    localStorage.setItem("cityhub.lang", l);
    apply();
  }

  return Object.freeze({ t, apply, set, lang: () => lang });
})();
