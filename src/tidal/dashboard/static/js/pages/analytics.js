// Analytics per app and endpoint, from the platform's request records: requests over
// time, latency and queue-wait percentiles, error rate, cold starts and their breakdown,
// runners over time (Chart.js).
import { get } from "../api.js";
import { h, clear, panel, stat, table, ms, pct, clock, badge, windowSelect } from "../ui.js";
import { appHeader } from "./app.js";

/* global Chart */

const COLORS = { p50: "#1565c0", p95: "#ef6c00", p99: "#c62828", ok: "#43a047", error: "#e53935", ready: "#2e7d32", starting: "#1e88e5", pending: "#fb8c00", draining: "#8e24aa", in_flight: "#455a64", cold: "#6d4c41" };
const PHASE_LABELS = { scale_up: "until a runner was wanted", pending: "waiting for capacity", boot: "process start + setup()", handoff: "ready → request" };

function label(t, bucket) {
  const d = new Date(t * 1000);
  if (bucket >= 86400) return d.toLocaleDateString();
  if (bucket >= 60) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function chart(canvas, config, charts) {
  const c = new Chart(canvas, config);
  charts.push(c);
  return c;
}

const X = { ticks: { maxTicksLimit: 8, maxRotation: 0, autoSkip: true } };

const BASE_OPTIONS = {
  responsive: true,
  maintainAspectRatio: false,
  animation: false,
  interaction: { mode: "index", intersect: false },
  plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
};

export async function render(view, params, query, ctx) {
  let name = params[0];
  const windowSeconds = Number(query.window || 3600);
  const endpoint = query.endpoint || "";
  const go = (changes) => {
    const q = new URLSearchParams({ window: windowSeconds, ...(endpoint ? { endpoint } : {}), ...(params[0] ? {} : { app: name }), ...changes });
    for (const [k, v] of [...q.entries()]) if (v === "") q.delete(k);
    window.location.hash = name && params[0] ? `#/apps/${encodeURIComponent(name)}/analytics?${q}` : `#/analytics?${q}`;
  };
  if (params[0]) view.append(...appHeader(name, "analytics"));
  else {
    const apps = await get("/api/v1/apps");
    name = query.app || (apps[0] && apps[0].name);
    view.append(h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Analytics"), h("div", { class: "muted" }, "From the platform's own record of every request."))));
    if (!name) {
      view.append(h("div", { class: "empty" }, "No apps yet."));
      return;
    }
    view.append(h("div", { class: "toolbar", style: "margin-bottom:12px" }, "App ",
      h("select", { "aria-label": "app", onchange: (e) => go({ app: e.target.value, endpoint: "" }) }, apps.map((a) => h("option", { value: a.name, selected: a.name === name }, a.name)))));
  }

  const endpointSelect = h("select", { "aria-label": "endpoint", onchange: (e) => go({ endpoint: e.target.value }) }, h("option", { value: "" }, "All endpoints"));
  view.append(h("div", { class: "toolbar", style: "margin-bottom:16px" }, windowSelect(windowSeconds, (w) => go({ window: w })), endpointSelect, h("span", { class: "muted small", id: "analytics-updated" })));

  const cards = h("div", { class: "grid cards", id: "analytics-cards" });
  const canvases = {
    requests: h("canvas", { id: "chart-requests", "aria-label": "requests over time" }),
    latency: h("canvas", { id: "chart-latency", "aria-label": "latency percentiles" }),
    wait: h("canvas", { id: "chart-wait", "aria-label": "queue wait" }),
    runners: h("canvas", { id: "chart-runners", "aria-label": "runners over time" }),
    cold: h("canvas", { id: "chart-cold", "aria-label": "cold starts" }),
    breakdown: h("canvas", { id: "chart-breakdown", "aria-label": "cold start breakdown" }),
  };
  const box = (c) => h("div", { class: "chart-box" }, c);
  const endpointsTable = h("div");
  const recent = h("div");
  view.append(
    cards,
    h("div", { class: "grid two", style: "margin-top:16px" },
      panel("Requests", box(canvases.requests)),
      panel("Latency (p50 / p95 / p99)", box(canvases.latency)),
      panel("Queue wait (p50 / p95)", box(canvases.wait)),
      panel("Runners", box(canvases.runners)),
      panel("Cold starts", box(canvases.cold)),
      panel("Cold start breakdown (mean per cold start)", box(canvases.breakdown)),
    ),
    panel("By endpoint", endpointsTable),
    panel("Recent requests", recent),
  );

  const charts = [];
  ctx.onLeave(() => charts.forEach((c) => c.destroy()));
  let built = false;

  async function load() {
    const q = new URLSearchParams({ window: windowSeconds });
    if (endpoint) q.set("endpoint", endpoint);
    const [data, reqs] = await Promise.all([
      get(`/api/v1/apps/${encodeURIComponent(name)}/analytics?${q}`),
      get(`/api/v1/requests?app=${encodeURIComponent(name)}&window=${windowSeconds}&limit=15${endpoint ? `&endpoint=${encodeURIComponent(endpoint)}` : ""}`),
    ]);
    if (!ctx.live) return;
    if (endpointSelect.options.length === 1) {
      for (const e of data.endpoints) endpointSelect.append(h("option", { value: e.endpoint, selected: e.endpoint === endpoint }, e.endpoint));
      if (endpoint && ![...endpointSelect.options].some((o) => o.value === endpoint)) endpointSelect.append(h("option", { value: endpoint, selected: true }, endpoint));
    }
    const t = data.totals;
    clear(cards).append(
      stat("Requests", h("span", { id: "total-requests" }, String(t.requests)), `${data.bucket_seconds}s buckets`),
      stat("Error rate", h("span", { id: "error-rate", class: t.errors ? "bad-text" : "" }, pct(t.error_rate)), `${t.errors} failed`),
      stat("Latency p50", h("span", { id: "latency-p50" }, ms(t.latency_ms.p50)),
           `p95 ${ms(t.latency_ms.p95)} · p99 ${ms(t.latency_ms.p99)}` + (data.sampled < 1 ? ` · from a ${pct(data.sampled)} sample` : "")),
      stat("Queue wait p50", ms(t.queue_wait_ms.p50), `p95 ${ms(t.queue_wait_ms.p95)}`),
      stat("Cold starts", h("span", { id: "cold-starts" }, String(t.cold_starts)), t.cold_starts ? `p50 ${ms(t.cold_start_ms.p50)}` : "none in this window"),
    );
    const labels = data.series.map((b) => label(b.t, data.bucket_seconds));
    const series = {
      ok: data.series.map((b) => b.requests - b.errors),
      error: data.series.map((b) => b.errors),
      p50: data.series.map((b) => b.latency_ms.p50),
      p95: data.series.map((b) => b.latency_ms.p95),
      p99: data.series.map((b) => b.latency_ms.p99),
      w50: data.series.map((b) => b.queue_wait_ms.p50),
      w95: data.series.map((b) => b.queue_wait_ms.p95),
      cold: data.series.map((b) => b.cold_starts),
    };
    const runnerPoints = (key) => data.runners.map((s) => ({ x: s.t * 1000, y: s[key] })).concat(data.runners.length ? [{ x: data.until * 1000, y: data.runners[data.runners.length - 1][key] }] : []);
    const breakdown = t.cold_start_breakdown_ms;
    if (!built) {
      built = true;
      chart(canvases.requests, { type: "bar", data: { labels, datasets: [
        { label: "succeeded", data: series.ok, backgroundColor: COLORS.ok, stack: "r" },
        { label: "failed", data: series.error, backgroundColor: COLORS.error, stack: "r" },
      ] }, options: { ...BASE_OPTIONS, scales: { x: { ...X, stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } } }, charts);
      const lineOpts = { ...BASE_OPTIONS, spanGaps: true, scales: { x: X, y: { beginAtZero: true, title: { display: true, text: "ms" } } } };
      chart(canvases.latency, { type: "line", data: { labels, datasets: ["p50", "p95", "p99"].map((p) => ({ label: p, data: series[p], borderColor: COLORS[p], backgroundColor: COLORS[p], pointRadius: 2, tension: 0.2 })) }, options: lineOpts }, charts);
      chart(canvases.wait, { type: "line", data: { labels, datasets: [
        { label: "p50", data: series.w50, borderColor: COLORS.p50, backgroundColor: COLORS.p50, pointRadius: 2 },
        { label: "p95", data: series.w95, borderColor: COLORS.p95, backgroundColor: COLORS.p95, pointRadius: 2 },
      ] }, options: lineOpts }, charts);
      chart(canvases.runners, { type: "line", data: { datasets: ["ready", "starting", "pending", "in_flight"].map((k) => ({ label: k.replace("_", " "), data: runnerPoints(k), borderColor: COLORS[k], backgroundColor: COLORS[k], stepped: true, pointRadius: 0 })) },
        options: { ...BASE_OPTIONS, parsing: false, scales: { x: { type: "linear", min: data.since * 1000, max: data.until * 1000, ticks: { callback: (v) => label(v / 1000, data.bucket_seconds), maxTicksLimit: 8 } }, y: { beginAtZero: true, ticks: { precision: 0 } } } } }, charts);
      chart(canvases.cold, { type: "bar", data: { labels, datasets: [{ label: "cold starts", data: series.cold, backgroundColor: COLORS.cold }] }, options: { ...BASE_OPTIONS, scales: { x: X, y: { beginAtZero: true, ticks: { precision: 0 } } } } }, charts);
      chart(canvases.breakdown, { type: "bar", data: { labels: ["mean cold start"], datasets: Object.entries(PHASE_LABELS).map(([k, text], i) => ({ label: `${k}: ${text}`, data: [breakdown[k]], backgroundColor: ["#90a4ae", "#fb8c00", "#1e88e5", "#43a047"][i], stack: "c" })) },
        options: { ...BASE_OPTIONS, indexAxis: "y", scales: { x: { stacked: true, beginAtZero: true, title: { display: true, text: "ms" } }, y: { stacked: true } } } }, charts);
    } else {
      const [reqC, latC, waitC, runC, coldC, brC] = charts;
      for (const c of [reqC, latC, waitC, coldC]) c.data.labels = labels;
      reqC.data.datasets[0].data = series.ok;
      reqC.data.datasets[1].data = series.error;
      ["p50", "p95", "p99"].forEach((p, i) => (latC.data.datasets[i].data = series[p]));
      waitC.data.datasets[0].data = series.w50;
      waitC.data.datasets[1].data = series.w95;
      ["ready", "starting", "pending", "in_flight"].forEach((k, i) => (runC.data.datasets[i].data = runnerPoints(k)));
      runC.options.scales.x.min = data.since * 1000;
      runC.options.scales.x.max = data.until * 1000;
      coldC.data.datasets[0].data = series.cold;
      Object.keys(PHASE_LABELS).forEach((k, i) => (brC.data.datasets[i].data = [breakdown[k]]));
      charts.forEach((c) => c.update("none"));
    }
    clear(endpointsTable).append(table(
      ["Endpoint", { label: "Requests", num: true }, { label: "Errors", num: true }, { label: "Error rate", num: true }, { label: "p50", num: true }, { label: "p95", num: true }, { label: "p99", num: true }, { label: "Wait p95", num: true }, { label: "Cold starts", num: true }],
      data.endpoints.map((e) => [h("code", {}, e.endpoint), String(e.requests), String(e.errors), pct(e.error_rate), ms(e.latency_ms.p50), ms(e.latency_ms.p95), ms(e.latency_ms.p99), ms(e.queue_wait_ms.p95), String(e.cold_starts)]),
      "No requests in this window.",
    ));
    clear(recent).append(table(
      ["When", "Endpoint", "Via", "Status", { label: "Latency", num: true }, { label: "Wait", num: true }, "Cold", "Request"],
      reqs.map((r) => [clock(r.started_at), h("code", {}, r.endpoint), r.kind, r.failed ? badge(r.error_type || String(r.status_code ?? "error"), "failed") : badge(String(r.status_code), "ok"), ms(r.latency_ms), ms(r.queue_wait_ms), r.cold_start ? badge(`cold ${ms(r.cold_start_ms)}`, "info") : "", h("a", { href: `#/requests/${r.id}`, class: "mono" }, r.id.slice(0, 12))]),
      "No requests in this window.",
    ));
    document.getElementById("analytics-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  await ctx.refreshing(load, 5000, cards);
}
