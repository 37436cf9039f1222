// BBProxy dashboard: refreshes the server-rendered page from /status every
// 2 s. Rows are keyed (domain + backend) and a cell is written only when its
// text changed, so a refresh of 1,000 backends touches only what moved.
"use strict";
(function () {
  const REFRESH_MS = 2000;
  const $ = (sel, root) => (root || document).querySelector(sel);
  const stats = { refreshes: 0, firstRenderMs: null, lastRenderMs: null, maxUpdateMs: 0, errors: 0 };
  window.bbproxyDashboard = stats;

  // ---- formatting (the same as the server's first view) ----
  const pad = (n) => String(n).padStart(2, "0");
  function time(t) {
    if (t == null) return "";
    const d = new Date(t * 1000);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
  }
  function date(t) {
    if (t == null) return "";
    const d = new Date(t * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + " UTC";
  }
  const rate = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const pct = (x) => (x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1) + "%";
  const ms = (x) => (x == null ? "–" : x < 10 ? x.toFixed(2) + " ms" : x < 1000 ? x.toFixed(0) + " ms" : (x / 1000).toFixed(2) + " s");
  const daysLeft = (t, now) => Math.floor((t - now) / 86400);
  const label = { closed: "closed", open: "open", half_open: "half-open" };

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function pill(cls, text) {
    return el("span", { class: "pill " + cls }, text);
  }
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // ---- sparkline: requests (line) and errors (bars) per 5 s ----
  const SVG = "http://www.w3.org/2000/svg";
  function spark(requests, errors) {
    const w = 120, h = 26, n = requests.length;
    const max = Math.max(1, ...requests);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("class", "spark");
    const x = (i) => ((i + 0.5) * w) / n;
    const y = (v) => h - 1 - (v / max) * (h - 3);
    errors.forEach((e, i) => {
      if (!e) return;
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", (x(i) - w / n / 2).toFixed(1));
      r.setAttribute("width", (w / n).toFixed(1));
      r.setAttribute("y", y(e).toFixed(1));
      r.setAttribute("height", (h - 1 - y(e)).toFixed(1));
      r.setAttribute("class", "err");
      svg.appendChild(r);
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", requests.map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1)).join(" "));
    line.setAttribute("class", "req");
    svg.appendChild(line);
    const title = document.createElementNS(SVG, "title");
    const total = requests.reduce((a, b) => a + b, 0), errs = errors.reduce((a, b) => a + b, 0);
    title.textContent = total + " requests, " + errs + " errors in the last " + (n * 5 / 60) + " min";
    svg.appendChild(title);
    return svg;
  }

  // ---- backends ----
  const rows = new Map(); // key -> {tr, last: {field: text}}
  const keyOf = (domain, address) => domain + " " + address;

  function stateCell(b) {
    const frag = document.createDocumentFragment();
    frag.appendChild(pill("breaker-" + b.breaker, label[b.breaker] || b.breaker));
    if (b.drained) frag.appendChild(pill("drained", "drained"));
    if (b.health !== "unchecked") frag.appendChild(pill("health-" + b.health, b.health));
    const sub = [];
    if (b.breaker_since != null) sub.push(label[b.breaker] + " since " + time(b.breaker_since));
    if (b.last_failure) sub.push("last failure " + b.last_failure.reason + " at " + time(b.last_failure.at));
    if (sub.length) frag.appendChild(el("div", { class: "sub" }, sub.join(" · ")));
    return frag;
  }
  const stateSig = (b) => [b.breaker, b.drained, b.health, b.breaker_since, b.last_failure && b.last_failure.at].join("|");

  function newRow(domain, b) {
    const tr = el("tr", { "data-key": keyOf(domain, b.address), "data-domain": domain, "data-backend": b.address });
    tr.appendChild(el("td", { class: "name" }));
    tr.appendChild(el("td", { class: "state", "data-f": "state" }));
    for (const f of ["in_flight", "rps", "err", "p50", "p99"]) tr.appendChild(el("td", { class: "num", "data-f": f }));
    tr.appendChild(el("td", { class: "spark-cell", "data-f": "spark" }));
    const act = el("td", { class: "act", "data-f": "act" });
    act.appendChild(el("button", { type: "button", "data-action": "drain", hidden: "" }, "Drain"));
    tr.appendChild(act);
    const name = tr.firstChild;
    name.appendChild(el("span", { class: "addr" }, b.address));
    if (b.weight !== 1) name.appendChild(el("span", { class: "weight", title: "weight" }, "×" + b.weight));
    return tr;
  }

  function cell(tr, f) {
    return tr.querySelector('[data-f="' + f + '"]');
  }

  function updateRow(entry, b, actions) {
    const tr = entry.tr, last = entry.last;
    const sig = stateSig(b);
    if (last.state !== sig) {
      const c = cell(tr, "state");
      c.replaceChildren(stateCell(b));
      last.state = sig;
      tr.classList.toggle("is-open", b.breaker === "open");
      tr.classList.toggle("is-drained", b.drained);
      tr.dataset.breaker = b.breaker;
      tr.dataset.drained = b.drained ? "true" : "false";
    }
    setText(cell(tr, "in_flight"), String(b.in_flight));
    setText(cell(tr, "rps"), rate(b.rps));
    const err = cell(tr, "err");
    setText(err, pct(b.error_rate));
    err.classList.toggle("bad", b.error_rate >= 0.05);
    setText(cell(tr, "p50"), ms(b.p50_ms));
    setText(cell(tr, "p99"), ms(b.p99_ms));
    const sparkSig = b.spark_requests.join(",") + "/" + b.spark_errors.join(",");
    if (last.spark !== sparkSig) {
      cell(tr, "spark").replaceChildren(spark(b.spark_requests, b.spark_errors));
      last.spark = sparkSig;
    }
    const button = $("button", cell(tr, "act"));
    const want = actions ? (b.drained ? "undrain" : "drain") : "";
    if (last.act !== want) {
      button.hidden = !actions;
      button.dataset.action = want || "drain";
      button.textContent = b.drained ? "Undrain" : "Drain";
      last.act = want;
    }
  }

  function renderDomains(doc) {
    const host = $("#domains");
    const seen = new Set();
    for (const d of doc.domains) {
      let body = host.querySelector('tbody[data-domain="' + CSS.escape(d.name) + '"]');
      if (!body) {
        body = el("tbody", { "data-domain": d.name });
        const head = el("tr", { class: "domain" });
        head.appendChild(el("th", { colspan: "9" }));
        body.appendChild(head);
        host.appendChild(body);
      }
      const counts = { open: 0, drained: 0, rps: 0 };
      for (const b of d.backends) {
        const key = keyOf(d.name, b.address);
        seen.add(key);
        let entry = rows.get(key);
        if (!entry) {
          entry = { tr: newRow(d.name, b), last: {} };
          rows.set(key, entry);
          body.appendChild(entry.tr);
          entry.tr.hidden = !matches(entry.tr);
        }
        updateRow(entry, b, doc.admin_actions);
        if (b.breaker !== "closed") counts.open++;
        if (b.drained) counts.drained++;
        counts.rps += b.rps;
      }
      const th = $("tr.domain th", body);
      const summary = d.name + " — " + d.backends.length + " backend" + (d.backends.length === 1 ? "" : "s") +
        ", " + rate(counts.rps) + " req/s" + (counts.open ? ", " + counts.open + " not closed" : "") +
        (counts.drained ? ", " + counts.drained + " drained" : "") + (d.health_check ? "" : ", no health check");
      setText(th, summary);
    }
    for (const [key, entry] of rows) {
      if (!seen.has(key)) {
        entry.tr.remove();
        rows.delete(key);
      }
    }
    for (const body of host.querySelectorAll("tbody[data-domain]")) {
      if (!doc.domains.some((d) => d.name === body.dataset.domain)) body.remove();
    }
  }

  // ---- search ----
  const search = $("#search");
  function matches(tr) {
    const q = (search.value || "").trim().toLowerCase();
    return !q || tr.dataset.key.toLowerCase().includes(q);
  }
  function applySearch() {
    for (const { tr } of rows.values()) tr.hidden = !matches(tr);
  }
  search.addEventListener("input", applySearch);

  // ---- the small tables: rebuilt when their content changed ----
  const sigs = {};
  function table(id, items, sig, row) {
    const s = JSON.stringify(sig);
    if (sigs[id] === s) return;
    sigs[id] = s;
    const body = $("#" + id + " tbody");
    body.replaceChildren(...items.map(row));
    $("#" + id).classList.toggle("empty", items.length === 0);
  }
  function tr(cells) {
    const r = el("tr");
    for (const c of cells) {
      const td = el("td", c.cls ? { class: c.cls } : {});
      if (c.node) td.appendChild(c.node); else td.textContent = c.text == null ? "" : String(c.text);
      if (c.title) td.title = c.title;
      r.appendChild(td);
    }
    return r;
  }

  function renderPlugins(doc) {
    table("plugins", doc.plugins, doc.plugins.map((p) => [p.sha256, p.calls, p.faults, p.suspended, p.suspended_calls]), (p) => {
      const kinds = Object.entries(p.faults_by_kind).map(([k, n]) => k + " " + n).join(", ");
      return tr([
        { text: p.role },
        { text: p.source, cls: "mono" },
        { text: p.sha256.slice(0, 12), cls: "mono", title: p.sha256 },
        { text: p.contract, cls: "mono" },
        { text: p.calls, cls: "num" },
        { text: p.faults ? p.faults + (kinds ? " (" + kinds + ")" : "") : "0", cls: p.faults ? "num bad" : "num" },
        {
          text: p.suspended.length ? p.suspended.map((t) => t.tenant + " until " + time(t.until)).join("; ") : "no",
          cls: p.suspended.length ? "bad" : "",
        },
      ]);
    });
  }

  function renderCerts(doc) {
    table("certificates", doc.certificates, [doc.certificates, Math.floor(doc.now / 3600)], (c) => {
      const left = c.not_after != null ? daysLeft(c.not_after, doc.now) : null;
      return tr([
        { text: c.name, cls: "mono" },
        { text: c.source },
        { text: c.issuer || "(none yet)" },
        { text: c.not_after != null ? date(c.not_after) + " (" + left + " d)" : "–", cls: left != null && left < 14 ? "bad" : "" },
        { text: c.renewal_at != null ? date(c.renewal_at) : "–" },
        { text: c.last_error ? time(c.last_error.at) + ": " + c.last_error.error : "none", cls: c.last_error ? "bad" : "" },
      ]);
    });
  }

  function renderReloads(doc) {
    table("reloads", doc.reloads, doc.reloads, (r) =>
      tr([
        { text: time(r.at) },
        { node: pill(r.result === "ok" ? "breaker-closed" : "breaker-open", r.result) },
        { text: r.generation == null ? "–" : r.generation, cls: "num" },
        { text: r.error || "", cls: "mono" },
      ]));
  }

  function renderDrained(doc) {
    const list = [];
    for (const d of doc.domains) for (const b of d.backends) if (b.drained) list.push({ domain: d.name, b });
    table("drained", list, list.map((x) => [x.domain, x.b.address, x.b.in_flight]), (x) =>
      tr([{ text: x.domain, cls: "mono" }, { text: x.b.address, cls: "mono" }, { text: x.b.in_flight, cls: "num" }]));
  }

  // ---- tracing: fixed cells, text only ----
  function renderTracing(doc) {
    const t = doc.tracing;
    const table = $("#tracing");
    const f = (name) => $('[data-f="' + name + '"]', table);
    const on = t != null;
    table.dataset.enabled = on ? "true" : "false";
    const pillEl = $(".pill", f("state"));
    setText(pillEl, on ? "on" : "off");
    pillEl.className = "pill " + (on ? "breaker-closed" : "drained");
    setText(f("endpoint"), on ? t.otlp_traces_url : "–");
    setText(f("sample_ratio"), on ? String(t.sample_ratio) : "–");
    setText(f("exported"), on ? String(t.spans_exported) : "–");
    setText(f("failed"), on ? t.spans_failed + " (" + t.failed_exports + ")" : "–");
    f("failed").classList.toggle("bad", on && t.failed_exports > 0);
    setText(f("dropped"), on ? String(t.spans_dropped) : "–");
    f("dropped").classList.toggle("bad", on && t.spans_dropped > 0);
  }

  function renderHeader(doc) {
    setText($("#generation"), String(doc.generation));
    setText($("#loaded-at"), time(doc.loaded_at));
    setText($("#version"), doc.version);
    setText($("#not-closed"), String(doc.breakers_not_closed));
    $("#not-closed").parentElement.classList.toggle("bad", doc.breakers_not_closed > 0);
    const err = $("#reload-error");
    setText(err, doc.last_reload_error ? "last reload failed at " + time(doc.last_reload_error.at) + ": " + doc.last_reload_error.error : "");
    err.hidden = !doc.last_reload_error;
    $("#token-box").hidden = !doc.admin_actions;
  }

  function render(doc) {
    const t0 = performance.now();
    renderHeader(doc);
    renderDomains(doc);
    renderPlugins(doc);
    renderCerts(doc);
    renderReloads(doc);
    renderDrained(doc);
    renderTracing(doc);
    const took = performance.now() - t0;
    stats.refreshes++;
    stats.lastRenderMs = took;
    if (stats.firstRenderMs == null) stats.firstRenderMs = took;
    else stats.maxUpdateMs = Math.max(stats.maxUpdateMs, took);
    document.body.dataset.refreshes = String(stats.refreshes);
  }

  async function refresh() {
    try {
      const resp = await fetch("/status?compact", { cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
      setText($("#updated"), "updated " + time(Date.now() / 1000));
      $("#updated").classList.remove("bad");
    } catch (e) {
      stats.errors++;
      setText($("#updated"), "cannot reach /status (" + e.message + "); retrying");
      $("#updated").classList.add("bad");
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  // ---- actions ----
  const tokenInput = $("#token");
  tokenInput.value = sessionStorage.getItem("bbproxy-token") || "";
  tokenInput.addEventListener("change", () => sessionStorage.setItem("bbproxy-token", tokenInput.value));
  $("#domains").addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr");
    const note = $("#action-note");
    button.disabled = true;
    try {
      const resp = await fetch("/backends/" + button.dataset.action, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + tokenInput.value },
        body: JSON.stringify({ domain: row.dataset.domain, backend: row.dataset.backend }),
      });
      const answer = await resp.json().catch(() => ({}));
      setText(note, resp.ok
        ? row.dataset.backend + (answer.drained ? " drained" : " undrained")
        : "refused: " + (answer.error || "HTTP " + resp.status));
      note.classList.toggle("bad", !resp.ok);
    } finally {
      button.disabled = false;
    }
  });

  // Index the rows the server rendered, so the first refresh updates them
  // in place instead of building the table again.
  for (const trEl of document.querySelectorAll("#domains tr[data-key]")) {
    rows.set(trEl.dataset.key, { tr: trEl, last: {} });
  }
  document.documentElement.classList.add("js");
  refresh();
})();
