// Recent failed requests grouped by error type and message; each group lists its
// requests, which open with their logs and traceback.
import { get } from "../api.js";
import { h, clear, badge, ago, clock, windowSelect } from "../ui.js";

export async function render(view, _params, query, ctx) {
  const windowSeconds = Number(query.window || 24 * 3600);
  const app = query.app || "";
  const go = (changes) => {
    const q = new URLSearchParams({ window: windowSeconds, ...(app ? { app } : {}), ...changes });
    for (const [k, v] of [...q.entries()]) if (v === "") q.delete(k);
    window.location.hash = `#/errors?${q}`;
  };
  const apps = await get("/api/v1/apps");
  view.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Errors"), h("div", { class: "muted" }, "Failed requests (4xx, 5xx, timeouts, cancellations) grouped by error type and message."))),
    h("div", { class: "toolbar", style: "margin-bottom:16px" },
      windowSelect(windowSeconds, (w) => go({ window: w })),
      h("select", { "aria-label": "app", onchange: (e) => go({ app: e.target.value }) }, h("option", { value: "" }, "All apps"), apps.map((a) => h("option", { value: a.name, selected: a.name === app }, a.name))),
    ),
  );
  const list = h("div", { id: "error-groups" });
  view.append(list);

  async function load() {
    const q = new URLSearchParams({ window: windowSeconds });
    if (app) q.set("app", app);
    const data = await get(`/api/v1/errors?${q}`);
    if (!ctx.live) return;
    clear(list);
    if (!data.groups.length) {
      list.append(h("div", { class: "panel empty" }, "No failed requests in this window."));
      return;
    }
    for (const g of data.groups) {
      list.append(h("article", { class: "error-group", "data-error-type": g.error_type },
        h("div", { class: "toolbar" }, badge(g.error_type, "failed"), h("strong", {}, `${g.count}×`), h("a", { href: `#/apps/${encodeURIComponent(g.app)}` }, g.app), ...g.endpoints.map((e) => h("code", {}, e))),
        h("div", { class: "msg" }, g.message || "(no message)"),
        h("div", { class: "meta" },
          h("span", {}, `last ${ago(g.last_seen)}`), h("span", {}, `first ${clock(g.first_seen)}`),
          h("span", {}, `status ${g.status_codes.map((s) => s ?? "none").join(", ")}`)),
        h("div", { class: "meta", style: "margin-top:6px" }, "Requests: ", g.request_ids.map((id) => h("a", { href: `#/requests/${id}`, class: "mono request-link" }, id.slice(0, 12)))),
      ));
    }
  }
  await ctx.refreshing(load, 5000, list);
}
