// The dashboard's router: #/path?query picks a page module; leaving a page stops its
// streams, timers and charts.
import { post, get } from "./api.js";
import { h, clear, errorBox } from "./ui.js";
import * as apps from "./pages/apps.js";
import * as app from "./pages/app.js";
import * as playground from "./pages/playground.js";
import * as analytics from "./pages/analytics.js";
import * as errors from "./pages/errors.js";
import * as logs from "./pages/logs.js";
import * as requestPage from "./pages/request.js";

const ROUTES = [
  [/^\/?$/, apps, "apps"],
  [/^\/apps$/, apps, "apps"],
  [/^\/apps\/([^/]+)$/, app, "apps"],
  [/^\/apps\/([^/]+)\/playground$/, playground, "apps"],
  [/^\/apps\/([^/]+)\/analytics$/, analytics, "apps"],
  [/^\/apps\/([^/]+)\/logs$/, logs, "apps"],
  [/^\/analytics$/, analytics, "analytics"],
  [/^\/errors$/, errors, "errors"],
  [/^\/logs$/, logs, "logs"],
  [/^\/requests\/([^/]+)$/, requestPage, "errors"],
];

let current = null;

class PageContext {
  constructor() {
    this.controller = new AbortController();
    this.cleanups = [];
  }
  get signal() {
    return this.controller.signal;
  }
  every(ms, fn) {
    const id = setInterval(fn, ms);
    this.cleanups.push(() => clearInterval(id));
  }
  // Run `load` now and then every `ms`. A load that fails shows its error above
  // `anchor` until one succeeds: a moment's failure (the first load's included) neither
  // leaves the page dead nor hides what went wrong. The first load's result, if any.
  async refreshing(load, ms, anchor) {
    let shown = null;
    const attempt = async () => {
      try {
        const out = await load();
        shown?.remove();
        shown = null;
        return out;
      } catch (err) {
        if (!this.live || err.name === "AbortError") return undefined;
        const box = errorBox(err);
        if (shown) shown.replaceWith(box);
        else anchor.before(box);
        shown = box;
        return undefined;
      }
    };
    const first = await attempt();
    this.every(ms, attempt);
    return first;
  }
  onLeave(fn) {
    this.cleanups.push(fn);
  }
  get live() {
    return !this.controller.signal.aborted;
  }
  leave() {
    this.controller.abort();
    for (const fn of this.cleanups) {
      try {
        fn();
      } catch (e) {
        console.error(e);
      }
    }
  }
}

export function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

async function route() {
  const raw = window.location.hash.replace(/^#/, "") || "/apps";
  const [path, qs] = raw.split("?", 2);
  const query = Object.fromEntries(new URLSearchParams(qs || ""));
  if (current) current.leave();
  const ctx = (current = new PageContext());
  const view = clear(document.getElementById("view"));
  for (const [pattern, module, nav] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    try {
      await module.render(view, m.slice(1).map(decodeURIComponent), query, ctx);
    } catch (err) {
      if (ctx.live) view.append(errorBox(err));
    }
    return;
  }
  view.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/apps" }, "Back to the apps")));
}

async function whoami() {
  const el = document.getElementById("whoami");
  try {
    const me = await get("/whoami");
    el.textContent = me.auth ? `signed in with ${me.key_id}` : "auth is off on this platform";
    if (!me.auth) document.getElementById("sign-out").hidden = true;
  } catch {
    /* the pages say what is wrong */
  }
}

document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await post("/logout");
  } finally {
    window.location.href = "/dashboard/login";
  }
});

window.addEventListener("hashchange", route);
whoami();
route();
