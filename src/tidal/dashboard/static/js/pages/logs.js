// Live runner logs of an app: the last lines of every runner, then new lines as they come.
import { get, streamLines } from "../api.js";
import { h, clear, errorBox } from "../ui.js";
import { appHeader } from "./app.js";

export async function render(view, params, query, ctx) {
  let name = params[0];
  if (params[0]) view.append(...appHeader(name, "logs"));
  else {
    const apps = await get("/api/v1/apps");
    name = query.app || (apps[0] && apps[0].name);
    view.append(h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Logs"), h("div", { class: "muted" }, "Every runner's output, live."))));
    if (!name) {
      view.append(h("div", { class: "empty" }, "No apps yet."));
      return;
    }
    view.append(h("div", { class: "toolbar", style: "margin-bottom:12px" }, "App ",
      h("select", { "aria-label": "app", onchange: (e) => (window.location.hash = `#/logs?app=${encodeURIComponent(e.target.value)}`) }, apps.map((a) => h("option", { value: a.name, selected: a.name === name }, a.name)))));
  }
  const pre = h("pre", { class: "logs tall", id: "live-logs" });
  const state = h("span", { class: "badge info", id: "follow-state" }, "following");
  const filter = h("input", { type: "search", placeholder: "filter lines", "aria-label": "filter" });
  let follow = true;
  const pause = h("button", { type: "button", class: "small", onclick: () => {
    follow = !follow;
    pause.textContent = follow ? "Pause" : "Follow";
    state.textContent = follow ? "following" : "paused";
    if (follow) pre.scrollTop = pre.scrollHeight;
  } }, "Pause");
  const clearBtn = h("button", { type: "button", class: "small", onclick: () => clear(pre) }, "Clear");
  view.append(h("div", { class: "toolbar", style: "margin-bottom:8px" }, state, pause, clearBtn, filter), pre);
  const colour = /^\[(r-[0-9a-f]+)\] (.*)$/;
  const add = (line) => {
    const m = line.match(colour);
    const el = h("div", { class: "log-line" }, m ? [h("span", { class: "log-runner" }, `[${m[1]}] `), h("span", { class: /error|traceback|failed/i.test(m[2]) ? "log-error" : "" }, m[2])] : line);
    if (filter.value && !line.includes(filter.value)) el.hidden = true;
    pre.append(el);
    while (pre.childNodes.length > 5000) pre.removeChild(pre.firstChild);
    if (follow) pre.scrollTop = pre.scrollHeight;
  };
  filter.addEventListener("input", () => {
    for (const el of pre.children) el.hidden = !!filter.value && !el.textContent.includes(filter.value);
  });
  try {
    await streamLines(`/api/v1/apps/${encodeURIComponent(name)}/logs?follow=true&lines=200`, add, ctx.signal);
  } catch (err) {
    if (ctx.live && err.name !== "AbortError") view.append(errorBox(err));
  }
}
