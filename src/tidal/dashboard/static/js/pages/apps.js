// The app list: status, revision, runners up/starting, requests and errors in the last hour.
import { get } from "../api.js";
import { h, clear, badge, panel, table, ago } from "../ui.js";

export function appStatus(a) {
  const r = a.runners;
  if (r.ready > 0) return ["serving", "serving"];
  if (r.starting > 0) return ["starting", "starting"];
  if (r.pending > 0) return ["waiting for capacity", "pending"];
  return ["scaled to zero", "idle"];
}

// Apps per page: the page polls one page, never the whole list.
export const PAGE = 50;

export async function render(view, _params, query, ctx) {
  const cursor = query.after || "";
  view.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Apps"), h("div", { class: "muted" }, "Every deployed app, live; requests and errors over the last hour."))),
  );
  const body = h("div");
  view.append(body);

  async function load() {
    const page = `/api/v1/apps?limit=${PAGE}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
    const [list, counts] = await Promise.all([get(page), get("/api/v1/analytics/apps?window=3600")]);
    const byApp = Object.fromEntries(counts.map((c) => [`${c.owner}/${c.app}`, c]));
    const rows = list.map((a) => {
      const c = byApp[`${a.owner}/${a.name}`] || { requests: 0, errors: 0 };
      const [label, kind] = appStatus(a);
      return [
        h("a", { href: `#/apps/${encodeURIComponent(a.name)}`, class: "app-link", "data-app": a.name }, h("strong", {}, a.name)),
        badge(label, kind),
        `r${a.revision}`,
        h("span", { title: "ready / starting (pending)" }, `${a.runners.ready} up`, a.runners.starting + a.runners.pending ? ` · ${a.runners.starting + a.runners.pending} starting` : ""),
        h("span", { class: "requests-1h" }, String(c.requests)),
        c.errors ? h("a", { class: "bad-text", href: `#/errors?app=${encodeURIComponent(a.name)}&window=3600` }, String(c.errors)) : "0",
        String(a.endpoints.length),
        a.public ? badge("public", "info") : badge("private"),
        ago(a.updated_at),
      ];
    });
    if (!ctx.live) return;
    clear(body).append(
      panel(
        null,
        table(
          ["App", "Status", "Revision", "Runners", { label: "Requests 1h", num: true }, { label: "Errors 1h", num: true }, { label: "Endpoints", num: true }, "Access", "Updated"],
          rows,
          cursor ? "No more apps." : "No apps yet: deploy one with `tidal deploy app.py::MyApp`.",
        ),
      ),
      pager(list),
    );
  }

  // A full page may have more after it: the next starts after its last app.
  function pager(list) {
    const links = [];
    if (cursor) links.push(h("a", { href: "#/apps", class: "first-page" }, "First page"));
    if (list.length === PAGE) {
      const last = list[list.length - 1];
      links.push(h("a", { href: `#/apps?after=${encodeURIComponent(`${last.owner}/${last.name}`)}`, class: "next-page" }, "Next page"));
    }
    return h("div", { class: "pager" }, ...links.flatMap((a, i) => (i ? [" · ", a] : [a])));
  }

  await ctx.refreshing(load, 3000, body);
}
