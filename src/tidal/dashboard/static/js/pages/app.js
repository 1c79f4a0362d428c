// One app: status, endpoints (from its OpenAPI document), scaling settings (the same
// PATCH as `tidal apps scale`), revisions with rollback, and its runners.
import { get, patch, post } from "../api.js";
import { h, clear, badge, panel, table, stat, seconds, ago, clock, errorBox, notice } from "../ui.js";
import { appStatus } from "./apps.js";
import { operations } from "../schema.js";

export function appHeader(name, active, extra) {
  const tab = (id, label, href) => h("a", { href, class: active === id ? "active" : "", "data-tab": id }, label);
  const base = `#/apps/${encodeURIComponent(name)}`;
  return [
    h("div", { class: "page-head" }, h("div", {}, h("div", { class: "crumbs" }, h("a", { href: "#/apps" }, "Apps"), " / ", name), h("h1", {}, name)), extra || null),
    h("nav", { class: "tabs" }, tab("overview", "Overview", base), tab("playground", "Playground", `${base}/playground`), tab("analytics", "Analytics", `${base}/analytics`), tab("logs", "Logs", `${base}/logs`)),
  ];
}

// The scalable options, as `tidal apps scale` names them.
const SCALING = [
  ["keep_alive", "Seconds an idle runner is kept before it stops.", false],
  ["min_concurrency", "Runners kept up even with no requests.", false],
  ["max_concurrency", "At most this many runners (empty: the platform's default).", true],
  ["concurrency_buffer", "Spare runners kept above what the load needs.", false],
  ["concurrency_buffer_perc", "Spare runners as a percentage of the load (0-100).", false],
  ["scaling_delay", "Seconds a request waits before it asks for a new runner.", false],
  ["request_timeout", "Seconds a request may take, waiting included (empty: the default).", true],
];

function runnerRows(runners) {
  const now = Date.now() / 1000;
  const live = ["failure_delay", "pending", "docker_pull", "setup", "idle", "running", "draining", "terminating"];
  const sorted = [...runners].sort((a, b) => (live.includes(b.state) - live.includes(a.state)) || b.created_at - a.created_at);
  return sorted.map((r) => [
    h("code", {}, r.id),
    badge(r.state.toUpperCase(), r.state),
    `r${r.revision}`,
    r.machine_type || "–",
    r.gpus.length ? r.gpus.join(", ") : "–",
    r.ended_at ? `lived ${seconds(r.ended_at - r.created_at)}` : seconds(now - r.created_at),
    String(r.in_flight),
    String(r.served),
    r.reason ? h("span", { class: r.state === "failed" ? "bad-text" : "muted" }, r.reason) : "",
  ]);
}

export async function render(view, [name], _query, ctx) {
  view.append(...appHeader(name, "overview"));
  const summary = h("div", { class: "grid cards" });
  const notes = h("div");
  const endpoints = h("div");
  const scaling = h("div");
  const revisions = h("div");
  const runners = h("div");
  view.append(
    summary,
    notes,
    h("div", { class: "grid two" }, panel("Endpoints", endpoints), panel("Scaling", scaling)),
    panel("Runners", runners),
    panel("Revisions", revisions),
  );

  async function refresh() {
    const [app, list] = await Promise.all([get(`/api/v1/apps/${encodeURIComponent(name)}`), get(`/api/v1/apps/${encodeURIComponent(name)}/runners`)]);
    if (!ctx.live) return app;
    const [label, kind] = appStatus(app);
    clear(summary).append(
      stat("Status", badge(label, kind)),
      stat("Revision", `r${app.revision}`, `updated ${ago(app.updated_at)}`),
      stat("Runners", `${app.runners.ready} up`, `${app.runners.starting} starting · ${app.runners.pending} pending · ${app.runners.draining} draining`),
      stat("Waiting", String(app.waiting), "requests at the gateway"),
      stat("Access", app.public ? "public" : "private", app.public ? "no key needed" : "an API key needed"),
      // A direct server's own web UI, opened with a browser session for this app only.
      ...(app.options.exposed_port ? [stat("Web UI", h("a", { href: `/dashboard/open/${encodeURIComponent(app.owner)}/${encodeURIComponent(app.name)}`, target: "_blank", rel: "noopener", class: "open-ui" }, "Open"), "in a new tab")] : []),
    );
    clear(notes).append(...app.notes.map((n) => notice(n)));
    clear(runners).append(table(["Runner", "State", "Rev", "Machine", "GPUs", "Age", { label: "In flight", num: true }, { label: "Served", num: true }, "Why"], runnerRows(list), "No runners: the app is scaled to zero."));
    return app;
  }

  // The panels that need the app are drawn once its first load succeeds.
  let drawn = false;
  await ctx.refreshing(async () => {
    const app = await refresh();
    if (!drawn && ctx.live) {
      drawn = true;
      renderEndpoints(endpoints, name);
      renderScaling(scaling, name, app, refresh);
      renderRevisions(revisions, name, refresh);
    }
  }, 2000, summary);
}

async function renderEndpoints(el, name) {
  let doc = null;
  try {
    doc = await get(`/api/v1/apps/${encodeURIComponent(name)}/openapi.json`);
  } catch {
    el.append(h("div", { class: "empty" }, "This app serves no OpenAPI document, so its endpoints are not known here."));
    return;
  }
  const rows = operations(doc).map((op) => [
    h("span", { class: "badge method" }, op.method.toUpperCase()),
    h("code", {}, op.path),
    op.summary || "",
    op.method === "post" ? h("a", { href: `#/apps/${encodeURIComponent(name)}/playground?endpoint=${encodeURIComponent(op.path)}` }, "Try it") : h("span", { class: "muted small" }, "GET: call directly"),
  ]);
  el.append(table(["", "Path", "Summary", ""], rows, "No endpoints in its OpenAPI document."));
}

function renderScaling(el, name, app, refresh) {
  const form = h("form", { class: "scaling-form" });
  const status = h("div");
  const inputs = {};
  for (const [field, help, nullable] of SCALING) {
    const value = app.options[field];
    const input = h("input", { type: "number", min: "0", step: "1", name: field, id: `scale-${field}`, value: value ?? "", placeholder: nullable ? "default" : "" });
    inputs[field] = [input, value, nullable];
    const overridden = field in (app.scaling_overrides || {});
    form.append(
      h("div", { class: "form-row" }, h("label", { for: `scale-${field}` }, field, overridden ? h("span", { class: "badge info", title: "changed live; overrides the code's value", style: "margin-left:6px" }, "live") : null), input, h("div", { class: "help" }, help)),
    );
  }
  form.append(h("div", { class: "toolbar" }, h("button", { type: "submit", class: "primary" }, "Save scaling"), h("span", { class: "muted small" }, "The same change as `tidal apps scale`: takes effect at once, no redeploy.")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const changes = {};
    for (const [field, [input, before, nullable]] of Object.entries(inputs)) {
      const text = input.value.trim();
      const value = text === "" ? (nullable ? null : before) : Number(text);
      if (value !== before) changes[field] = value;
    }
    clear(status);
    if (!Object.keys(changes).length) {
      status.append(notice("Nothing changed."));
      return;
    }
    try {
      const updated = await patch(`/api/v1/apps/${encodeURIComponent(name)}/scaling`, changes);
      for (const [field, entry] of Object.entries(inputs)) entry[1] = updated.options[field];
      status.append(notice(`Saved: ${Object.entries(changes).map(([k, v]) => `${k}=${v}`).join(", ")}`, "ok"));
      refresh();
    } catch (err) {
      status.append(errorBox(err));
    }
  });
  el.append(status, form);
}

async function renderRevisions(el, name, refresh) {
  async function load() {
    const revs = await get(`/api/v1/apps/${encodeURIComponent(name)}/revisions`);
    const rows = revs.map((r) => [
      h("strong", {}, `r${r.revision}`),
      r.current ? badge("current", "ok") : "",
      clock(r.created_at),
      h("code", {}, (r.bundle_digest || "").slice(0, 12)),
      r.rolled_back_from ? `rollback to r${r.rolled_back_from}` : r.kind,
      r.current
        ? ""
        : h("button", {
            class: "small",
            type: "button",
            "data-rollback": r.revision,
            onclick: async (e) => {
              if (!window.confirm(`Roll ${name} back to revision ${r.revision}? Its code becomes a new revision, rolled out ready-first.`)) return;
              e.target.disabled = true;
              try {
                await post(`/api/v1/apps/${encodeURIComponent(name)}/rollback`, { revision: r.revision });
                await load();
                refresh();
              } catch (err) {
                el.prepend(errorBox(err));
                e.target.disabled = false;
              }
            },
          }, "Roll back"),
    ]);
    clear(el).append(table(["Revision", "", "Deployed", "Bundle", "Kind", ""], rows));
  }
  try {
    await load();
  } catch (err) {
    el.append(errorBox(err));
  }
}
