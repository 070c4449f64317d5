// The reviewer's page (streams/api/review_page.py). Everything shown comes from the review API
// with the reviewer's token; the token lives in this tab's sessionStorage, never in a URL,
// and the page's own address never changes (the selected line is kept here, in memory).
"use strict";

(() => {
  const TOKEN_KEY = "claims-review-token";
  const API = "v1";  // relative: the page is /review, the API /v1 on the same origin
  const $ = id => document.getElementById(id);
  const state = {config: null, me: null, items: [], selected: null};

  class ApiFailure extends Error {
    constructor(status, error, body) {
      super(error && error.message ? error.message : `HTTP ${status}`);
      this.status = status;
      this.code = error && error.code;
      this.field = error && error.field;
      this.body = body;
    }
  }

  // --- messages: one clear line each -------------------------------------------------------

  function showError(err) {
    const el = $("error");
    let text;
    if (err instanceof ApiFailure) {
      text = `${err.status}${err.code ? " " + err.code : ""}: ${err.message}` + (err.field ? ` (field: ${err.field})` : "");
    } else {
      text = `The worker could not be reached: ${err && err.message ? err.message : err}`;
    }
    el.textContent = text;
    el.hidden = false;
    $("notice").hidden = true;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function notify(text) {
    clearError();
    $("notice").textContent = text;
    $("notice").hidden = false;
  }

  // --- the API ----------------------------------------------------------------------------------

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  async function api(method, path, body, given) {
    const headers = {"Accept": "application/json", "Authorization": `Bearer ${given || token() || ""}`};
    const init = {method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer"};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(`${API}${path}`, init);
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const failure = new ApiFailure(resp.status, data && data.error, data);
      if (resp.status === 401 && !given) signedOut();
      throw failure;
    }
    return data;
  }

  const seg = s => encodeURIComponent(String(s));
  const linePath = item => `/reviews/${seg(item.claim_id)}/${seg(item.line_number)}`;

  // --- formatting -------------------------------------------------------------------------------

  function money(value) {
    if (value === null || value === undefined || value === "") return "";
    const text = String(value);
    const m = /^(-?)(\d+)(\.\d+)?$/.exec(text);
    if (!m) return text;
    return m[1] + m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (m[3] || "");
  }

  function age(seconds) {
    const s = Math.max(0, Math.floor(Number(seconds) || 0));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function when(ts) {
    if (!ts) return "";
    const d = new Date(ts);
    return isNaN(d) ? String(ts) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, " UTC");
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function fill(dl, pairs) {
    dl.replaceChildren();
    for (const [label, value] of pairs) {
      if (value === undefined || value === null || value === "" || (Array.isArray(value) && !value.length)) continue;
      dl.append(el("dt", label), el("dd", Array.isArray(value) ? value.join(", ") : value));
    }
    if (!dl.children.length) dl.append(el("dd", "none", "muted"));
  }

  // --- sign in / out ----------------------------------------------------------------------------

  function signedOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.me = null;
    state.selected = null;
    state.items = [];
    // nothing of the last reviewer's work stays on the page
    for (const id of ["queue-table", "other-lines", "history"]) $(id).querySelector("tbody").replaceChildren();
    for (const id of ["detail-line", "detail-pend", "detail-pricing", "detail-auth", "result-record"]) $(id).replaceChildren();
    for (const id of ["pay-amount", "pay-note", "deny-rarc", "deny-note"]) $(id).value = "";
    $("queue-count").textContent = "";
    $("who").hidden = true;
    $("workspace").hidden = true;
    $("detail").hidden = true;
    $("sign-in").hidden = false;
    $("token").value = "";
    if (message) notify(message);
    $("token").focus();
  }

  async function signIn(given) {
    const me = await api("GET", "/reviews/me", undefined, given);
    sessionStorage.setItem(TOKEN_KEY, given);
    state.me = me;
    $("who-name").textContent = me.name;
    $("who-queues").textContent = me.can_decide
      ? `decides ${me.queues && me.queues.length ? me.queues.join(", ") : "no queue"}`
      : "reads only";
    $("token").value = "";
    try {
      await loadQueue();
    } finally {
      if (state.me) {  // signed in even if the queue could not be read (Refresh tries again)
        $("who").hidden = false;
        $("sign-in").hidden = true;
        $("workspace").hidden = false;
      }
    }
  }

  // --- the queue --------------------------------------------------------------------------------

  function fillFilters() {
    const queues = new Set(), reasons = new Set();
    for (const v of Object.values(state.config.policy_versions)) {
      v.queues.forEach(q => queues.add(q));
      v.reasons.forEach(r => reasons.add(r.reason));
    }
    for (const [id, values] of [["filter-queue", queues], ["filter-reason", reasons]]) {
      const select = $(id);
      for (const value of [...values].sort()) {
        const o = el("option", value);
        o.value = value;
        select.append(o);
      }
    }
  }

  async function loadQueue() {
    const params = new URLSearchParams();
    if ($("filter-queue").value) params.set("queue", $("filter-queue").value);
    if ($("filter-reason").value) params.set("reason", $("filter-reason").value);
    params.set("limit", "200");
    const answer = await api("GET", `/reviews?${params}`);
    state.items = Array.isArray(answer) ? answer : [];
    const body = $("queue-table").querySelector("tbody");
    body.replaceChildren();
    for (const item of state.items) {
      const row = el("tr");
      row.dataset.reason = item.reason;
      row.dataset.queue = item.queue;
      if (state.selected && sameLine(state.selected, item)) row.classList.add("selected");
      const open = el("button", `${item.claim_id} / ${item.line_number}`, "open");
      open.type = "button";
      open.addEventListener("click", () => select(item).catch(showError));
      const cell = el("td");
      cell.append(open);
      row.append(el("td", age(item.age_seconds)), el("td", item.queue), el("td", item.reason), cell,
        el("td", item.procedure_code), el("td", item.service_date), el("td", money(item.charge_amount), "num"),
        el("td", money(item.suggested_amount), "num"));
      body.append(row);
    }
    $("queue-count").textContent = `(${answer.count !== undefined ? answer.count : state.items.length} waiting, oldest first)`;
    $("queue-empty").hidden = state.items.length > 0;
  }

  const sameLine = (a, b) => a.claim_id === b.claim_id && Number(a.line_number) === Number(b.line_number);

  // --- one line ---------------------------------------------------------------------------------

  function bookFor(item) {
    const versions = state.config.policy_versions;
    return versions[item.policy_version] || versions[state.config.default_version];
  }

  async function select(item) {
    clearError();
    $("notice").hidden = true;
    state.selected = item;
    for (const row of $("queue-table").querySelectorAll("tbody tr")) row.classList.remove("selected");
    const i = state.items.findIndex(x => sameLine(x, item));
    if (i >= 0) $("queue-table").querySelectorAll("tbody tr")[i].classList.add("selected");
    $("detail-title").textContent = `${item.line_number} of claim ${item.claim_id}`;
    fill($("detail-line"), [
      ["claim", item.claim_id], ["line", item.line_number], ["member", item.member_id],
      ["provider NPI", item.provider_npi], ["service date", item.service_date],
      ["procedure", item.procedure_code], ["modifiers", item.modifiers], ["NDC", item.ndc11],
      ["units", item.units], ["charge", money(item.charge_amount)], ["policy version", item.policy_version],
    ]);
    const pend = item.pend || {};
    fill($("detail-pend"), [
      ["reason", item.reason], ["queue", item.queue], ["rule", pend.rule], ["why", pend.message],
      ["suggested amount", money(item.suggested_amount)], ["pended at", when(item.pended_at)],
      ["waiting", age(item.age_seconds)],
    ]);
    const p = item.pricing || {};
    fill($("detail-pricing"), item.pricing ? [
      ["method", p.method], ["unit price", p.unit_price], ["quantity", p.quantity],
      ["contract %", p.contract_pct], ["price effective from", p.effective_from],
      ["the rules would allow", money(item.suggested_amount)],
    ] : [["pricing", "none"]]);
    const auth = item.authorization || {};
    fill($("detail-auth"), [
      ["number", item.authorization_number || auth.authorization_number], ["status", auth.status],
      ["codes", auth.procedure_codes], ["from", auth.start_date], ["to", auth.end_date],
      ["approved units", auth.approved_units], ["units used", auth.units_used],
      ["while pended", "the line holds the authorized units it would use and counts for duplicates; " +
        "a payment keeps them, a denial releases them"],
    ]);
    const others = item.other_lines || [];
    const body = $("other-lines").querySelector("tbody");
    body.replaceChildren();
    for (const o of others) {
      const row = el("tr");
      row.append(el("td", o.line_number), el("td", o.procedure_code), el("td", o.status, `status-${o.status}`),
        el("td", money(o.allowed_amount), "num"));
      body.append(row);
    }
    $("other-lines-none").hidden = others.length > 0;
    // the forms
    $("pay-amount").value = "";
    $("pay-amount").placeholder = item.suggested_amount ? String(item.suggested_amount) : "";
    $("pay-note").value = "";
    $("deny-rarc").value = "";
    $("deny-note").value = "";
    const carcs = $("deny-carc");
    carcs.replaceChildren();
    for (const c of bookFor(item).review_denial_carcs) {
      const o = el("option", c.text ? `${c.carc}: ${c.text}` : c.carc);
      o.value = c.carc;
      carcs.append(o);
    }
    const mayDecide = state.me && state.me.can_decide && (state.me.queues || []).includes(item.queue);
    $("decide").hidden = !mayDecide;
    $("read-only").hidden = mayDecide;
    $("read-only").textContent = state.me && state.me.can_decide
      ? `You do not decide the ${item.queue} queue.` : "This token may read the queue but not decide.";
    $("result").hidden = true;
    $("detail").hidden = false;
    await loadHistory(item);
  }

  async function loadHistory(item) {
    const answer = await api("GET", `${linePath(item)}/history`);
    const body = $("history").querySelector("tbody");
    body.replaceChildren();
    for (const ev of Array.isArray(answer) ? answer : []) {
      const details = Object.entries(ev)
        .filter(([k, v]) => !["seq", "event", "by", "at"].includes(k) && v !== null && v !== "" &&
          !(Array.isArray(v) && !v.length))
        .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : v}`).join("; ");
      const row = el("tr");
      row.append(el("td", ev.seq), el("td", ev.event, `event-${ev.event}`), el("td", ev.by), el("td", when(ev.at)),
        el("td", details));
      body.append(row);
    }
  }

  function showRecord(record) {
    const review = record.review || {};
    const adjustments = (record.adjustments || [])
      .map(a => `${a.group}-${a.carc}${a.rarc && a.rarc.length ? " (" + a.rarc.join(", ") + ")" : ""} ${money(a.amount)} ${a.rule}`);
    fill($("result-record"), [
      ["status", record.status], ["allowed", money(record.allowed_amount)], ["adjustments", adjustments],
      ["decided by", review.reviewer], ["action", review.action], ["decided at", when(review.decided_at)],
      ["note", review.note], ["reversed by", record.reversed_by],
    ]);
    $("result").dataset.status = record.status || "";
    $("result").hidden = false;
  }

  async function decide(body) {
    const item = state.selected;
    if (!item) return;
    for (const b of ["pay-button", "deny-button"]) $(b).disabled = true;
    try {
      const record = await api("POST", linePath(item), body);
      showRecord(record);
      $("decide").hidden = true;
      notify(`Line ${item.line_number} of claim ${item.claim_id}: ${record.status}` +
        (record.status === "PAID" ? ` at ${money(record.allowed_amount)}` : ""));
      await loadHistory(item);
      await loadQueue();
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 409 && err.body && err.body.current) showRecord(err.body.current);
      showError(err);
    } finally {
      for (const b of ["pay-button", "deny-button"]) $(b).disabled = false;
    }
  }

  // --- wiring -----------------------------------------------------------------------------------

  function wire() {
    $("sign-in-form").addEventListener("submit", e => {
      e.preventDefault();
      const given = $("token").value.trim();
      if (!given) return showError(new Error("enter your reviewer token"));
      clearError();
      signIn(given).catch(err => { $("token").value = ""; showError(err); });
    });
    $("sign-out").addEventListener("click", () => { clearError(); signedOut("Signed out."); });
    $("filters").addEventListener("submit", e => {
      e.preventDefault();
      clearError();
      loadQueue().catch(showError);
    });
    for (const id of ["filter-queue", "filter-reason"]) {
      $(id).addEventListener("change", () => { clearError(); loadQueue().catch(showError); });
    }
    $("pay-form").addEventListener("submit", e => {
      e.preventDefault();
      const body = {action: "PAY"};
      const amount = $("pay-amount").value.trim().replace(/,/g, "");
      if (amount) body.allowed_amount = amount;
      const note = $("pay-note").value.trim();
      if (note) body.note = note;
      decide(body);
    });
    $("deny-form").addEventListener("submit", e => {
      e.preventDefault();
      const body = {action: "DENY", carc: $("deny-carc").value};
      const rarc = $("deny-rarc").value.split(/[\s,]+/).map(s => s.trim().toUpperCase()).filter(Boolean);
      if (rarc.length) body.rarc = rarc;
      const note = $("deny-note").value.trim();
      if (note) body.note = note;
      decide(body);
    });
  }

  async function start() {
    wire();
    const resp = await fetch("review/config.json", {cache: "no-store"});
    if (!resp.ok) throw new ApiFailure(resp.status, {message: "the page's configuration could not be read"});
    state.config = await resp.json();
    fillFilters();
    const saved = token();
    if (saved) {
      try { await signIn(saved); return; } catch (err) { signedOut(); showError(err); return; }
    }
    signedOut();
  }

  window.reviewPage = {state};  // for tests and the curious: no token in it
  start().catch(showError);
})();
