// raylane dashboard: fetches api/<page> every few seconds and draws it with Plotly.
// No framework, no CDN: plotly.min.js is served by the dashboard from the plotly package.
"use strict";

const PAGE = document.body.dataset.page;
const REFRESH_MS = 1000 * parseFloat(document.body.dataset.refreshS || "5");
const PLOT_CFG = { displayModeBar: false, responsive: true };
const COLORS = { primary: "#2f6fde", shadow: "#e8833a", ok: "#2a9d5b", bad: "#d64541", grey: "#8a94a8" };

// ---------------------------------------------------------------- formatting
function isNum(v) { return typeof v === "number" && isFinite(v); }
function fmtInt(v) { return isNum(v) ? Math.round(v).toLocaleString("en-US") : "–"; }
function fmtPct(v) { return isNum(v) ? (100 * v).toFixed(2) + " %" : "–"; }
function fmtMs(v) { return isNum(v) ? v.toFixed(2) + " ms" : "–"; }
function fmtNum(v, d) { return isNum(v) ? v.toFixed(d === undefined ? 4 : d) : "–"; }
function fmtAny(v) {
  if (v === null || v === undefined) return "n/a";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  return String(v);
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–"; }
function dates(ts) { return (ts || []).map((t) => new Date(t * 1000)); }
function slug(s) { return String(s).replace(/[^A-Za-z0-9_-]/g, "_"); }

function card(id, label, text) {
  return `<div class="card"><div class="label">${esc(label)}</div><div class="num" id="${id}">${esc(text)}</div></div>`;
}
function table(id, head, rows) {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join("");
  const body = rows.length
    ? rows.map((r) => "<tr>" + r.map((c) => (c && c.html !== undefined ? `<td class="${c.cls || ""}">${c.html}</td>` : `<td>${esc(c)}</td>`)).join("") + "</tr>").join("")
    : `<tr><td colspan="${head.length}" class="muted">none yet</td></tr>`;
  return `<table id="${id}"><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table>`;
}
function num(text, id) { return { html: `<span${id ? ` id="${id}"` : ""}>${esc(text)}</span>`, cls: "n" }; }
function chart(id) { return `<div class="chart" id="${id}"></div>`; }
function layout(title, extra) {
  extra = extra || {};
  const lay = Object.assign({
    title: { text: title, font: { size: 13 }, x: 0.02 },
    margin: { l: 50, r: 20, t: 34, b: 36 }, legend: { orientation: "h", y: -0.22 },
    paper_bgcolor: "#fff", plot_bgcolor: "#fff", font: { size: 11 },
  }, extra);
  // long category names (columns, error classes) push the margins instead of being cut
  lay.xaxis = Object.assign({ automargin: true }, extra.xaxis || {});
  lay.yaxis = Object.assign({ automargin: true }, extra.yaxis || {});
  return lay;
}
function plot(id, traces, lay) {
  const el = document.getElementById(id);
  if (el) Plotly.react(el, traces, lay, PLOT_CFG);
}

// ---------------------------------------------------------------- shadow vs primary
function renderShadow(d) {
  if (!d.shadows.length) return `<p class="muted">pipeline ${esc(d.pipeline)} has no shadow models.</p>`;
  let html = "";
  for (const s of d.shadows) {
    const a = s.aggregate, p = `shadow-${slug(s.name)}`;
    const cls = s.verdict === "ready to promote" ? "ok" : (s.gated ? "bad" : "info");
    html += `<h2>${esc(s.name)}: ${esc(a.shadow_model || s.name)} v${esc(a.shadow_version || "?")} vs primary ${esc(a.primary_model || "")} v${esc(a.primary_version || "?")}</h2>`;
    html += `<div class="verdict ${cls}" id="${p}-verdict">${esc(s.verdict)}</div>`;
    html += `<p class="muted">the newest ${fmtInt(d.window)} compared events of this version pair (what <code>raylane promote</code> gates on)</p>`;
    html += '<div class="cards">' +
      card(`${p}-n`, "events compared", fmtInt(a.n)) +
      card(`${p}-agreement_rate`, "decision agreement", fmtPct(a.agreement_rate)) +
      card(`${p}-primary_flag_rate`, "flag rate primary", fmtPct(a.primary_flag_rate)) +
      card(`${p}-shadow_flag_rate`, "flag rate shadow", fmtPct(a.shadow_flag_rate)) +
      card(`${p}-mean_abs_delta`, "mean |Δ score|", fmtNum(a.mean_abs_delta)) +
      card(`${p}-p95_abs_delta`, "p95 |Δ score|", fmtNum(a.p95_abs_delta)) +
      card(`${p}-primary_latency_p50_ms`, "primary p50", fmtMs(a.primary_latency_p50_ms)) +
      card(`${p}-primary_latency_p99_ms`, "primary p99", fmtMs(a.primary_latency_p99_ms)) +
      card(`${p}-shadow_latency_p50_ms`, "shadow p50", fmtMs(a.shadow_latency_p50_ms)) +
      card(`${p}-shadow_latency_p99_ms`, "shadow p99", fmtMs(a.shadow_latency_p99_ms)) +
      card(`${p}-errors`, "shadow errors / timeouts", `${fmtInt(a.errors)} / ${fmtInt(a.timeouts)}`) +
      "</div>";
    if (s.gates.length) {
      html += "<h2>Promotion gates</h2>" + table(`${p}-gates`, ["gate", "threshold", "measured", "result", "detail"],
        s.gates.map((g) => [g.name, num(fmtAny(g.threshold)), num(fmtAny(g.measured), `${p}-gate-${slug(g.name)}`),
          { html: g.passed ? "pass" : "FAIL", cls: g.passed ? "pass" : "fail" }, g.detail || ""]));
    }
    html += '<div class="grid2" style="margin-top:12px">' + chart(`${p}-c-agree`) + chart(`${p}-c-lat`) +
      chart(`${p}-c-hist`) + chart(`${p}-c-scatter`) + "</div>";
  }
  return html;
}
function drawShadow(d) {
  for (const s of d.shadows) {
    const p = `shadow-${slug(s.name)}`, tl = s.timeline, x = dates(tl.t);
    plot(`${p}-c-agree`, [
      { x, y: tl.agreement, name: "agreement", mode: "lines+markers", line: { color: COLORS.ok } },
      { x, y: tl.primary_flag_rate, name: "flag rate primary", yaxis: "y2", mode: "lines+markers", line: { color: COLORS.primary } },
      { x, y: tl.shadow_flag_rate, name: "flag rate shadow", yaxis: "y2", mode: "lines+markers", line: { color: COLORS.shadow, dash: "dot" } },
    ], layout("Agreement and flag rate over time", {
      margin: { l: 60, r: 60, t: 34, b: 36 },
      yaxis: { tickformat: ".0%", title: "agreement", range: [0, 1.02] },
      yaxis2: { overlaying: "y", side: "right", tickformat: ".1%", title: "flag rate", rangemode: "tozero", automargin: true },
    }));
    plot(`${p}-c-lat`, [
      { x, y: tl.primary_p50, name: "primary p50", mode: "lines+markers", line: { color: COLORS.primary } },
      { x, y: tl.primary_p99, name: "primary p99", mode: "lines+markers", line: { color: COLORS.primary, dash: "dash" } },
      { x, y: tl.shadow_p50, name: "shadow p50", mode: "lines+markers", line: { color: COLORS.shadow } },
      { x, y: tl.shadow_p99, name: "shadow p99", mode: "lines+markers", line: { color: COLORS.shadow, dash: "dash" } },
    ], layout("Model call latency per batch (ms)", { yaxis: { rangemode: "tozero" } }));
    const h = s.delta_histogram;
    plot(`${p}-c-hist`, h ? [{ type: "bar", x: h.centers, y: h.counts, width: h.width, marker: { color: COLORS.grey }, name: "events" }] : [],
      layout("Score delta (shadow − primary)", { yaxis: { type: "log", title: "events" }, bargap: 0 }));
    const sc = s.scatter;
    const pts = (agree) => {
      const xs = [], ys = [];
      if (sc) sc.primary.forEach((v, i) => { if (sc.agree[i] === agree) { xs.push(v); ys.push(sc.shadow[i]); } });
      return { x: xs, y: ys };
    };
    const ag = pts(true), dis = pts(false);
    plot(`${p}-c-scatter`, [
      { x: [0, 1], y: [0, 1], mode: "lines", line: { color: "#ccd", dash: "dot" }, name: "equal", hoverinfo: "skip" },
      { ...ag, mode: "markers", type: "scatter", name: "same decision", marker: { size: 4, color: COLORS.primary, opacity: 0.5 } },
      { ...dis, mode: "markers", type: "scatter", name: "different decision", marker: { size: 6, color: COLORS.bad } },
    ], layout("Sampled score pairs", { xaxis: { title: "primary score", range: [0, 1] }, yaxis: { title: "shadow score", range: [0, 1] } }));
  }
}

// ---------------------------------------------------------------- pipeline
function renderPipeline(d) {
  const t = d.totals;
  let html = "";
  if (d.metrics_error) html += `<div class="verdict bad">metrics: ${esc(d.metrics_error)}</div>`;
  if (!d.scraped) html += `<div class="verdict info">no metrics yet from ${esc(d.source)}: is the pipeline running?</div>`;
  const breakersOpen = Object.entries(d.breakers).filter(([, v]) => v > 0).map(([k]) => k);
  html += '<div class="cards">' +
    card("pipe-in", "events in", fmtInt(t.in)) + card("pipe-scored", "scored", fmtInt(t.scored)) +
    card("pipe-flagged", "flagged", fmtInt(t.flagged)) + card("pipe-dlq", "DLQ", fmtInt(t.dlq)) +
    card("pipe-batches", "batches", fmtInt(t.batches)) + card("pipe-commits", "offset commits", fmtInt(t.commits)) +
    card("pipe-batch-mean", "mean batch size", fmtNum(d.batch_size.mean, 1)) +
    card("pipe-e2e-p50", "event→scored p50", fmtMs(d.event_to_scored.p50)) +
    card("pipe-e2e-p99", "event→scored p99", fmtMs(d.event_to_scored.p99)) +
    card("pipe-paused", "paused replicas", fmtInt(d.paused_replicas)) +
    card("pipe-breakers", "open breakers", breakersOpen.length ? breakersOpen.join(", ") : "none") +
    card("pipe-since-commit", "s since last commit", fmtNum(d.seconds_since_commit, 1)) +
    "</div>";
  html += '<div class="grid2" style="margin-top:12px">' + chart("pipe-c-rates") + chart("pipe-c-lag") +
    chart("pipe-c-stages") + chart("pipe-c-e2e") + chart("pipe-c-dlq") + "</div>";
  html += '<h2>Details</h2><div class="tables">';
  html += table("pipe-stages", ["stage", "p50", "p99"], Object.entries(d.stages).map(([st, q]) =>
    [st.replace(/_ms$/, ""), num(fmtMs(q.p50), `pipe-stage-${slug(st)}-p50`), num(fmtMs(q.p99), `pipe-stage-${slug(st)}-p99`)]));
  html += table("pipe-dlq-classes", ["DLQ error class", "records"], Object.entries(d.dlq_by_class).map(([k, v]) => [k, num(fmtInt(v), `pipe-dlq-${slug(k)}`)]));
  html += table("pipe-breaker-table", ["dependency breaker", "state"], Object.entries(d.breakers).map(([k, v]) =>
    [k, { html: v > 0 ? "open" : "closed", cls: v > 0 ? "fail" : "pass" }]));
  html += table("pipe-lag-table", ["partition", "lag"], Object.entries(d.lag).map(([k, v]) => [d.lag_labels[k] || k, num(fmtInt(v), `pipe-lag-${slug(k)}`)]));
  html += table("pipe-retries", ["retries by stage", "batches"], Object.entries(d.retries).map(([k, v]) => [k, num(fmtInt(v))]));
  html += "</div>";
  return html;
}
function drawPipeline(d) {
  const r = d.rates, x = dates(r.t);
  plot("pipe-c-rates", [
    { x, y: r.in, name: "in", mode: "lines", line: { color: COLORS.grey } },
    { x, y: r.scored, name: "scored", mode: "lines", line: { color: COLORS.primary } },
    { x, y: r.flagged, name: "flagged", mode: "lines", line: { color: COLORS.shadow } },
    { x, y: r.dlq, name: "DLQ", mode: "lines", line: { color: COLORS.bad } },
  ], layout("Events per second", { yaxis: { rangemode: "tozero" } }));
  plot("pipe-c-lag", [{ type: "bar", x: Object.keys(d.lag).map((p) => d.lag_labels[p] || p), y: Object.values(d.lag), marker: { color: COLORS.primary } }],
    layout("Consumer lag per partition (records)", { yaxis: { rangemode: "tozero" }, xaxis: { type: "category" } }));
  const st = Object.keys(d.stages);
  plot("pipe-c-stages", [
    { type: "bar", name: "p50", x: st.map((s) => s.replace(/_ms$/, "")), y: st.map((s) => d.stages[s].p50), marker: { color: COLORS.primary } },
    { type: "bar", name: "p99", x: st.map((s) => s.replace(/_ms$/, "")), y: st.map((s) => d.stages[s].p99), marker: { color: COLORS.shadow } },
  ], layout("Stage latency per batch (ms)", { barmode: "group" }));
  const e = d.event_to_scored;
  plot("pipe-c-e2e", [
    { x: dates(e.t), y: e.p50_series, name: "p50", mode: "lines", connectgaps: false, line: { color: COLORS.primary } },
    { x: dates(e.t), y: e.p99_series, name: "p99", mode: "lines", connectgaps: false, line: { color: COLORS.shadow } },
  ], layout("Event → scored latency (ms)", { yaxis: { rangemode: "tozero" } }));
  plot("pipe-c-dlq", [{ type: "bar", x: Object.keys(d.dlq_by_class), y: Object.values(d.dlq_by_class), marker: { color: COLORS.bad } }],
    layout("DLQ records by error class"));
}

// ---------------------------------------------------------------- drift
function renderDrift(d) {
  let html = "";
  if (!d.configured) return `<p class="muted">pipeline ${esc(d.pipeline)} has no drift section.</p>`;
  const s = d.state;
  if (!s) {
    html += '<div class="verdict info" id="drift-verdict">no window evaluated yet</div>';
  } else {
    html += `<div class="verdict ${s.open ? "bad" : "ok"}" id="drift-verdict">${s.open ? "OPEN drift alert" : "no drift alert"} on ${esc(s.model_name)} v${esc(s.model_version)}</div>`;
    html += '<div class="cards">' +
      card("drift-share", "drifted share (latest window)", fmtNum(s.drift_share, 3)) +
      card("drift-threshold", "alert threshold", fmtNum(s.threshold, 3)) +
      card("drift-windows", `windows of v${d.model_version}`, fmtInt(d.windows.length)) +
      card("drift-columns", "drifted columns", `${s.drifted_columns.length} of ${d.columns.length}`) +
      card("drift-window-end", "latest window end", s.window_end.slice(0, 19).replace("T", " ")) + "</div>";
    html += `<p id="drift-column-names">drifted in the latest window: ${s.drifted_columns.length ? s.drifted_columns.map(esc).join(", ") : "none"}</p>`;
  }
  html += '<div class="grid2" style="margin-top:12px">' + chart("drift-c-heat") + chart("drift-c-share") + "</div>";
  html += "<h2>Windows (newest first)</h2>" + table("drift-window-table", ["window end", "events", "drifted share", "drifted columns", "report"],
    d.windows.slice().reverse().map((w) => [w.end.slice(0, 19).replace("T", " "), num(fmtInt(w.count)), num(fmtNum(w.drift_share, 3)),
      w.drifted_columns.join(", ") || "–",
      w.report ? { html: `<a href="reports/${encodeURIComponent(w.report)}" target="_blank">report</a>` } : "–"]));
  if (d.reports.length) {
    html += "<h2>Reports on disk</h2><ul id=\"drift-reports\">" +
      d.reports.map((r) => `<li><a href="reports/${encodeURIComponent(r)}" target="_blank">${esc(r)}</a></li>`).join("") + "</ul>";
  }
  return html;
}
function drawDrift(d) {
  const x = d.windows.map((w) => w.end.slice(11, 19));
  plot("drift-c-heat", [{ type: "heatmap", x, y: d.columns, z: d.scores, colorscale: "YlOrRd", reversescale: true, colorbar: { title: "score" }, hoverongaps: false }],
    layout(`Per-column drift score per window (v${d.model_version})`, { xaxis: { type: "category" } }));
  plot("drift-c-share", [
    { x, y: d.windows.map((w) => w.drift_share), type: "bar", name: "drifted share",
      marker: { color: d.windows.map((w) => (w.drifted ? COLORS.bad : COLORS.ok)) } },
    { x, y: d.windows.map((w) => w.threshold), mode: "lines", name: "threshold", line: { color: "#333", dash: "dash" } },
  ], layout("Drifted share of columns per window", { yaxis: { range: [0, 1] } }));
}

// ---------------------------------------------------------------- actions and models
function renderActions(d) {
  let html = "<h2>Action handlers</h2>";
  const outcomes = ["done", "duplicate", "failed", "error"];
  const handlers = new Set([...d.handlers.map((h) => h.handler), ...Object.keys(d.outcomes)]);
  html += '<div class="tables">' + table("act-outcomes", ["handler", ...outcomes, "retries", "breaker"], [...handlers].map((h) => [
    h, ...outcomes.map((o) => num(fmtInt((d.outcomes[h] || {})[o] || 0), `act-${slug(h)}-${o}`)),
    num(fmtInt(d.retries[h] || 0)),
    { html: (d.breakers[h] || 0) > 0 ? "open" : "closed", cls: (d.breakers[h] || 0) > 0 ? "fail" : "pass" }]));
  const webhooks = d.handlers.filter((h) => h.handler === "webhook");
  html += table("act-webhook", ["webhook breaker", "state"], webhooks.length
    ? webhooks.map((h) => [h.topic, { html: (d.breakers.webhook || 0) > 0 ? "open" : "closed", cls: (d.breakers.webhook || 0) > 0 ? "fail" : "pass" }])
    : [["no webhook handler configured", "–"]]);
  html += table("act-dlq", ["action DLQ topic", "records"], Object.entries(d.action_dlq).map(([k, v]) => [k, num(fmtInt(v))]));
  html += table("act-cache", ["model deployment", "cache hit rate", "hot swaps"],
    [...new Set([...Object.keys(d.cache_hit_rate), ...Object.keys(d.model_swaps)])].map((k) =>
      [k, num(fmtPct(d.cache_hit_rate[k])), num(fmtInt(d.model_swaps[k] || 0))]));
  html += "</div>" + '<div class="grid2" style="margin-top:12px">' + chart("act-c-outcomes") + "</div>";
  const m = d.models;
  html += `<h2>Model versions${m.name ? ": " + esc(m.name) : ""}</h2>`;
  if (d.mlflow_error) html += `<div class="verdict bad">MLflow: ${esc(d.mlflow_error)}</div>`;
  html += '<div class="tables">' + table("models-aliases", ["alias", "version"], Object.entries(m.aliases || {}).sort().map(([a, v]) =>
    [a, num("v" + v, `alias-${slug(a)}`)]));
  html += table("models-versions", ["version", "aliases", "status", "registered"], (m.versions || []).map((v) =>
    [num("v" + v.version), v.aliases.join(", ") || "–", v.status, when(v.created_ms)])) + "</div>";
  html += "<h2>Promotion history</h2>" + table("models-history", ["when", "action", "from", "to", "who", "gates", "reason"],
    d.history.slice().reverse().map((e) => {
      const gates = e.gates || [];
      const failed = gates.filter((g) => !g.passed).map((g) => g.name);
      return [when(e.at), e.action, "v" + e.from_version, "v" + e.to_version, e.actor,
        (gates.length ? (failed.length ? "failed: " + failed.join(", ") : "all passed") : "–") + (e.forced ? " (forced)" : ""), e.reason || ""];
    }));
  return html;
}
function drawActions(d) {
  const handlers = Object.keys(d.outcomes), outcomes = ["done", "duplicate", "failed", "error"];
  const colors = { done: COLORS.ok, duplicate: COLORS.grey, failed: COLORS.bad, error: COLORS.shadow };
  plot("act-c-outcomes", outcomes.map((o) => ({ type: "bar", name: o, x: handlers, y: handlers.map((h) => d.outcomes[h][o] || 0), marker: { color: colors[o] } })),
    layout("Action outcomes per handler", { barmode: "stack" }));
}

// ---------------------------------------------------------------- loop
const PAGES = {
  shadow: [renderShadow, drawShadow], pipeline: [renderPipeline, drawPipeline],
  drift: [renderDrift, drawDrift], actions: [renderActions, drawActions],
};
let lastHtml = "";
async function refresh() {
  const status = document.getElementById("status");
  try {
    const resp = await fetch(`api/${PAGE}`, { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) throw new Error(`${resp.status} ${await resp.text()}`);
    const data = await resp.json();
    const [render, draw] = PAGES[PAGE];
    const html = render(data);
    const main = document.getElementById("main");
    if (html !== lastHtml) { main.innerHTML = html; lastHtml = html; }
    draw(data);
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "status";
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || "0") + 1);
  } catch (e) {
    status.textContent = "refresh failed: " + e.message;
    status.className = "status error";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
