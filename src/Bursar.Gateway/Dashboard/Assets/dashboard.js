// Bursar dashboard: reads the admin reports API (the same rollups as `bursar report`) and draws SVG charts.
// No external assets. Every label goes through textContent: tag values come from callers and are never parsed as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fde", "#1f9d62", "#c7811a", "#8a4fd1", "#d0477a", "#1596a8", "#6b7a8f", "#b35c1e", "#4f8a2b", "#a33b3b"];

function usd(v) {
  const n = Number(v) || 0;
  const abs = Math.abs(n);
  if (abs >= 1000) return "$" + n.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (abs >= 1) return "$" + n.toFixed(2);
  if (abs === 0) return "$0";
  return "$" + n.toFixed(4);
}
// a report row's cost: unknown when no call in it is priced, "+ unpriced" when some are (the API's cost is null then)
function money(r) {
  if (r.calls > 0 && r.unpriced_calls === r.calls) return "unknown";
  return usd(r.priced_cost) + (r.unpriced_calls > 0 ? " + unpriced" : "") + (r.estimated_calls > 0 ? " (estimated)" : "");
}
const count = v => (Number(v) || 0).toLocaleString("en-US");
const pct = v => ((Number(v) || 0) * 100).toFixed(1) + "%";

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function empty(host, message) {
  host.replaceChildren(el("div", { class: "empty" }, message));
}

async function api(path) {
  const resp = await fetch(path, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (resp.status === 401) { location.href = "/dashboard"; throw new Error("signed out"); }
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch { /* not JSON */ }
    throw new Error(`${path}: ${resp.status} ${detail}`);
  }
  return resp.json();
}

// Horizontal bars: one row per item, value label at the end. data-total holds the sum of the drawn values.
function hbars(host, items, { label, value, format = usd, name, color, none = "No calls in this window." }) {
  if (!items.length) return empty(host, none);
  const rowH = 24, valueW = 90;
  const width = Math.max(320, host.clientWidth || 560); // drawn at 1:1 so text keeps its size in any panel
  const labelW = Math.min(200, Math.round(width * 0.34));
  const max = Math.max(...items.map(value), 0) || 1;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${items.length * rowH + 4}`, role: "img", "data-chart": name });
  let total = 0;
  items.forEach((it, i) => {
    const v = value(it);
    total += v;
    const y = i * rowH + 2;
    const g = el("svg:g", { "data-label": label(it), "data-value": String(v) });
    const maxChars = Math.floor(labelW / 6.5);
    const text = el("svg:text", { x: 0, y: y + 15 }, label(it).length > maxChars ? label(it).slice(0, maxChars - 1) + "…" : label(it));
    const w = Math.max(v > 0 ? 2 : 0, (width - labelW - valueW) * v / max);
    const rect = el("svg:rect", { x: labelW, y: y + 3, width: w, height: rowH - 8, rx: 3, fill: color ? color(it, i) : COLORS[0] });
    rect.append(el("svg:title", {}, `${label(it)}: ${format(v, it)}`));
    g.append(text, rect, el("svg:text", { x: labelW + w + 6, y: y + 15, class: "muted" }, format(v, it)));
    svg.append(g);
  });
  svg.setAttribute("data-total", String(total));
  svg.setAttribute("data-count", String(items.length));
  host.replaceChildren(svg);
}

// Vertical bars over days.
function trendChart(host, points, from, to) {
  if (!points.length) return empty(host, "No calls in this window.");
  // one bar per UTC day of the window, days without calls included
  const byDay = new Map(points.map(p => [p.day, p]));
  const trend = [];
  const first = new Date(Math.max(Date.parse(from), Date.parse(points[0].day + "T00:00:00Z") - 6 * 86400000));
  for (let d = Date.UTC(first.getUTCFullYear(), first.getUTCMonth(), first.getUTCDate()); d < Date.parse(to); d += 86400000) {
    const day = new Date(d).toISOString().slice(0, 10);
    trend.push(byDay.get(day) || { day, cost: 0, saved: 0, calls: 0 });
  }
  const width = Math.max(480, host.clientWidth || 1100), height = 220, left = 60, bottom = 28, top = 10;
  const max = Math.max(...trend.map(t => t.cost), 0) || 1;
  const bw = (width - left) / trend.length;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "data-chart": "trend" });
  for (let i = 0; i <= 4; i++) {
    const y = top + (height - top - bottom) * (1 - i / 4);
    svg.append(el("svg:line", { x1: left, x2: width, y1: y, y2: y, class: "axis" }), el("svg:text", { x: 0, y: y + 4, class: "muted" }, usd(max * i / 4)));
  }
  let total = 0;
  trend.forEach((t, i) => {
    total += t.cost;
    const h = (height - top - bottom) * t.cost / max;
    const x = left + i * bw;
    const g = el("svg:g", { "data-label": t.day, "data-value": String(t.cost) });
    const barW = Math.min(bw * 0.7, 48);
    const rect = el("svg:rect", { x: x + (bw - barW) / 2, y: height - bottom - h, width: barW, height: Math.max(h, t.cost > 0 ? 1 : 0), rx: 2, fill: COLORS[0] });
    rect.append(el("svg:title", {}, `${t.day}: ${usd(t.cost)} spent, ${usd(t.saved)} saved, ${count(t.calls)} calls`));
    g.append(rect);
    if (trend.length <= 31 || i % Math.ceil(trend.length / 15) === 0) g.append(el("svg:text", { x: x + bw / 2, y: height - 10, "text-anchor": "middle", class: "muted" }, t.day.slice(5)));
    svg.append(g);
  });
  svg.setAttribute("data-total", String(total));
  host.replaceChildren(svg);
}

function table(host, headers, rows) {
  const t = el("table");
  const head = el("tr");
  headers.forEach(h => head.append(el("th", {}, h)));
  t.append(head);
  rows.forEach(r => {
    const tr = el("tr");
    r.forEach(c => tr.append(c instanceof Node ? (() => { const td = el("td"); td.append(c); return td; })() : el("td", {}, c)));
    t.append(tr);
  });
  host.replaceChildren(t);
}

function budgets(host, list) {
  if (!list.length) return empty(host, "No budgets yet: bursar budgets set, or PUT /admin/budgets/{id}.");
  table(host, ["budget", "period", "spent", "limit", "used", ""], list.map(b => {
    const used = b.limit_usd > 0 ? (b.spent_usd + b.reserved_usd) / b.limit_usd : 0;
    const bar = el("div", { class: "bar" + (used >= 1 ? " over" : b.soft_limit_reached ? " soft" : ""), "data-budget": b.id, "data-used": String(used) });
    bar.append(el("span", { style: `width:${Math.min(100, used * 100).toFixed(1)}%` }));
    const flag = used >= 1 ? "limit reached" : b.soft_limit_reached ? "soft limit" : "";
    return [`${b.scope}${b.value ? " " + b.value : ""}`, b.period, usd(b.spent_usd), usd(b.limit_usd), bar, el("span", { class: "flag" }, flag)];
  }));
}

// the batch lever's work in flight: deferred jobs waiting for a flush, and provider batches whose lines are not all on the ledger
function pending(host, note, work) {
  note.textContent = `${count(work.queued_jobs)} deferred jobs queued, ${count(work.submitted_jobs)} in a provider batch, ${count(work.open_batches.length)} batches not yet collected.`;
  note.setAttribute("data-queued", String(work.queued_jobs));
  note.setAttribute("data-batches", String(work.open_batches.length));
  const rows = [
    ...work.queues.map(q => ["queued jobs", `${q.deployment} / ${q.model}`, count(q.jobs), q.oldest_queued_at.slice(0, 16).replace("T", " "), "deadline " + q.nearest_deadline.slice(0, 16).replace("T", " ")]),
    ...work.open_batches.map(b => [b.deferred_jobs ? "batch of jobs" : "batch", `${b.deployment}: ${b.id}`, count(b.lines), b.created_at.slice(0, 16).replace("T", " "), `${b.phase}${b.provider_status ? " (" + b.provider_status + ")" : ""}, up to ${usd(b.worst_usd)}`]),
  ];
  if (!rows.length) return empty(host, "Nothing pending: no deferred job is queued and every batch is on the ledger.");
  table(host, ["what", "where", "calls", "since (UTC)", "state"], rows);
}

function whatIf(host, notes, ladder) {
  if (!ladder.calls) { empty(host, "No calls in this window to replay."); notes.replaceChildren(); return; }
  const steps = [{ lever: "baseline", monthly_cost: ladder.baseline_monthly }, ...ladder.steps];
  hbars(host, steps, { label: s => s.lever, value: s => s.monthly_cost, name: "whatif", color: (s, i) => i === 0 ? COLORS[6] : COLORS[1] });
  const span = ladder.window_days >= 1 ? `${ladder.window_days.toFixed(1)} days` : `${(ladder.window_days * 24).toFixed(1)} hours`;
  const lines = [`${count(ladder.calls)} calls over ${span} (${count(Math.round(ladder.requests_per_day))} requests/day), scaled to a month; the cost after each lever, applied in order.`];
  if (ladder.too_short_to_extrapolate) lines.push(`Too short to extrapolate (under 24 h of traffic): the monthly figures assume this window's rate held all day, every day. Meter a full day or more before trusting them.`);
  if (!ladder.worth_it) lines.push("Below ~1,000 requests a day, engineering time outweighs token savings: meter first, optimize later.");
  ladder.steps.forEach(s => lines.push(`${s.lever}: ${s.assumption}`));
  notes.replaceChildren(...lines.map(l => el("div", {}, l)));
}

async function load() {
  const days = document.getElementById("days").value;
  const status = document.getElementById("status");
  status.className = "status";
  status.textContent = "Loading…";
  try {
    const q = `days=${encodeURIComponent(days)}`;
    const [feature, team, customer, model, outcome, template, budgetList, ladder] = await Promise.all([
      api(`/admin/reports/spend?by=feature&${q}`), api(`/admin/reports/spend?by=team&${q}`), api(`/admin/reports/spend?by=customer&${q}`),
      api(`/admin/reports/spend?by=model&${q}`), api(`/admin/reports/spend?by=outcome&${q}`), api(`/admin/reports/spend?by=template&${q}`),
      api("/admin/budgets"), api(`/admin/reports/whatif?${q}`),
    ]);
    pending(document.getElementById("pending"), document.getElementById("pending-note"), await api("/admin/batches/pending"));
    const total = feature.total;
    const setKpi = (id, text, value) => { const e = document.querySelector(`[data-testid=${id}]`); e.textContent = text; e.setAttribute("data-value", String(value)); };
    setKpi("kpi-spend", money(total), total.priced_cost);
    setKpi("kpi-calls", count(total.calls), total.calls);
    setKpi("kpi-saved", usd(total.saved), total.saved);
    setKpi("kpi-per-call", total.cost_per_call === null ? money(total) === "unknown" ? "unknown" : usd(total.priced_cost / Math.max(1, total.calls)) + " + unpriced" : usd(total.cost_per_call), total.cost_per_call === null ? "unknown" : total.cost_per_call);
    setKpi("kpi-unpriced", count(total.unpriced_calls), total.unpriced_calls);
    const refused = outcome.rows.filter(r => r.group === "refused").reduce((a, r) => a + r.calls, 0);
    setKpi("kpi-refused", count(refused), refused);

    trendChart(document.getElementById("chart-trend"), feature.trend, feature.from, feature.to);
    const byCost = { label: r => r.group, value: r => r.priced_cost, format: (v, r) => money(r) };
    hbars(document.getElementById("chart-feature"), feature.rows.slice(0, 12), { ...byCost, name: "by-feature" });
    hbars(document.getElementById("chart-team"), team.rows.slice(0, 12), { ...byCost, name: "by-team" });
    hbars(document.getElementById("chart-customer"), customer.rows.slice(0, 12), { ...byCost, name: "by-customer" });
    hbars(document.getElementById("chart-model"), model.rows.slice(0, 12), { ...byCost, name: "by-model" });
    hbars(document.getElementById("chart-savings"), feature.savings, { label: s => s.lever, value: s => s.saved, name: "savings", color: () => COLORS[1] });

    const cacheRows = model.rows.filter(r => r.calls > 0).flatMap(r => [
      { label: `${r.group}: response cache`, v: r.response_cache_hits / r.calls },
      { label: `${r.group}: prompt cache`, v: r.input_tokens ? r.cached_input_tokens / r.input_tokens : 0 },
    ].filter(x => x.v > 0));
    hbars(document.getElementById("chart-cache"), cacheRows, { label: r => r.label, value: r => r.v, format: pct, name: "cache", none: "No cache hits in this window.", color: (r, i) => COLORS[i % 2 ? 5 : 3] });

    hbars(document.getElementById("chart-routing"), model.rows, { label: r => r.group, value: r => r.calls, format: count, name: "routing", color: (r, i) => COLORS[i % COLORS.length] });
    const routed = model.rows.reduce((a, r) => a + r.routed_calls, 0);
    document.getElementById("routing-note").textContent = `${count(routed)} of ${count(total.calls)} calls (${pct(total.calls ? routed / total.calls : 0)}) served on another model than the one asked for (route policies, budget downgrades).`;

    budgets(document.getElementById("budgets"), budgetList);
    whatIf(document.getElementById("chart-whatif"), document.getElementById("whatif-notes"), ladder);
    table(document.getElementById("drivers"), ["feature / model", "calls", "cost", "share"], feature.top_drivers.map(d => [d.group, count(d.calls), money(d), pct(d.share)]));
    const tagged = template.rows.filter(r => r.group !== "(none)");
    if (tagged.length) table(document.getElementById("templates"), ["template", "calls", "cost/call", "output tok/call", "cost"],
      tagged.map(r => [r.group, count(r.calls), r.cost_per_call === null ? "unknown" : usd(r.cost_per_call), count(Math.round(r.output_tokens / Math.max(1, r.calls))), money(r)]));
    else empty(document.getElementById("templates"), "No calls tagged with x-bursar-template in this window.");
    if (feature.tasks.length) table(document.getElementById("tasks"), ["feature", "runs", "ended by a cap", "calls/run", "cost/run"],
      feature.tasks.map(t => [t.feature, count(t.runs), count(t.ended_runs), (t.calls / Math.max(1, t.runs)).toFixed(1), usd(t.cost_per_run)]));
    else empty(document.getElementById("tasks"), "No runs (x-bursar-run) in this window.");
    status.textContent = `${count(total.calls)} calls from ${feature.from.slice(0, 16).replace("T", " ")} to ${feature.to.slice(0, 16).replace("T", " ")} UTC. Updated ${new Date().toLocaleTimeString()}.`;
    document.body.setAttribute("data-loaded", "true");
  } catch (e) {
    status.className = "status error";
    status.textContent = "Could not load the reports: " + e.message;
  }
}

document.getElementById("days").addEventListener("change", load);
load();
// keep the numbers fresh while the tab is open
setInterval(() => { if (document.visibilityState === "visible") load(); }, 60000);
