// One request: its record, what it printed while it ran, and the traceback if it raised.
import { get } from "../api.js";
import { h, badge, panel, ms, clock, errorBox, notice } from "../ui.js";

const PHASES = { scale_up: "until a runner was wanted", pending: "waiting for capacity", boot: "process start + setup()", handoff: "ready → request" };

export async function render(view, [id], _query, ctx) {
  let r;
  for (let attempt = 0; ; attempt++) {
    try {
      r = await get(`/api/v1/requests/${encodeURIComponent(id)}`);
      break;
    } catch (err) {
      // Records are written within a second of the request's end.
      if (err.status !== 404 || attempt >= 6 || !ctx.live) {
        view.append(errorBox(err));
        return;
      }
      await new Promise((res) => setTimeout(res, 500));
    }
  }
  if (!ctx.live) return;
  const status = r.failed ? badge(r.error_type || `HTTP ${r.status_code ?? "none"}`, "failed") : badge(String(r.status_code), "ok");
  view.append(
    h("div", { class: "page-head" }, h("div", {}, h("div", { class: "crumbs" }, h("a", { href: `#/apps/${encodeURIComponent(r.app)}` }, r.app), " / request"), h("h1", { class: "mono" }, r.id)), status),
  );
  const dl = h("dl", { class: "kv" });
  const row = (k, v) => dl.append(h("dt", {}, k), h("dd", {}, v));
  row("App", h("a", { href: `#/apps/${encodeURIComponent(r.app)}` }, r.app));
  row("Endpoint", h("code", {}, `${r.method} ${r.endpoint}`));
  row("Via", r.kind === "queue" ? "queue API" : "sync (gateway)");
  row("Status", r.status_code === null ? "no HTTP answer" : String(r.status_code));
  row("Started", clock(r.started_at));
  row("Latency", ms(r.latency_ms));
  row("Queue wait", ms(r.queue_wait_ms));
  row("Runner", r.runner_id ? h("code", {}, r.runner_id) : "–");
  row("Revision", r.revision ? `r${r.revision}` : "–");
  row("Cold start", r.cold_start ? `${ms(r.cold_start_ms)} (${Object.entries(r.cold_breakdown || {}).map(([k, v]) => `${k} ${ms(v)}`).join(", ")})` : "no");
  view.append(panel("Request", dl));
  if (r.cold_start) {
    view.append(panel("Cold start breakdown", h("table", {}, h("tbody", {}, Object.entries(r.cold_breakdown || {}).map(([k, v]) => h("tr", {}, h("td", {}, h("code", {}, k)), h("td", { class: "muted" }, PHASES[k] || ""), h("td", { class: "num" }, ms(v))))))));
  }
  if (r.failed) {
    view.append(panel("Error", h("p", {}, badge(r.error_type || "error", "failed"), " ", h("span", { class: "mono", id: "error-message" }, r.error || "(no message)")),
      r.traceback ? h("pre", { class: "traceback", id: "traceback" }, r.traceback) : notice("No traceback in this request's logs (the platform answered it, or a direct server's output is only in its runner's log).")));
  }
  const logs = h("pre", { class: "logs", id: "request-logs" });
  if (r.logs.length) for (const l of r.logs) logs.append(h("span", { class: "log-time" }, `${l.timestamp.slice(11, 23)} `), h("span", { class: l.level === "ERROR" ? "log-error" : "" }, `${l.message}\n`));
  else logs.textContent = "Nothing printed under this request. (What a direct server prints is in its runner's log: see the app's Logs tab.)";
  view.append(panel("Logs", logs));
}
