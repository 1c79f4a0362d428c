// Small DOM helpers and formatters shared by the pages.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "html") el.innerHTML = v; // only for markup we build ourselves
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function badge(text, kind = text) {
  return h("span", { class: `badge ${kind}` }, text);
}

export function panel(title, ...children) {
  return h("section", { class: "panel" }, title ? h("div", { class: "panel-head" }, h("h2", {}, title)) : null, ...children);
}

export function stat(label, value, sub) {
  return h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), sub ? h("div", { class: "sub" }, sub) : null);
}

export function table(headers, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("div", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map((c) => h("th", { class: c.num ? "num" : "" }, c.label ?? c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((cell, i) => h("td", { class: headers[i] && headers[i].num ? "num" : "" }, cell))))),
  );
}

export function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${value.toFixed(2)} ms`;
  if (value < 1000) return `${Math.round(value)} ms`;
  if (value < 60000) return `${(value / 1000).toFixed(2)} s`;
  return `${(value / 60000).toFixed(1)} min`;
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 60) return `${Math.round(value)}s`;
  if (value < 3600) return `${Math.floor(value / 60)}m ${Math.round(value % 60)}s`;
  if (value < 86400) return `${Math.floor(value / 3600)}h ${Math.round((value % 3600) / 60)}m`;
  return `${Math.floor(value / 86400)}d ${Math.round((value % 86400) / 3600)}h`;
}

export function ago(ts) {
  if (!ts) return "–";
  return `${seconds(Math.max(0, Date.now() / 1000 - ts))} ago`;
}

export function clock(ts) {
  if (!ts) return "–";
  return new Date(ts * 1000).toLocaleString();
}

export function pct(value) {
  return `${(100 * (value || 0)).toFixed(value && value < 0.01 ? 2 : 1)}%`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// Pretty JSON with a few colours, built as DOM (no HTML injection).
export function jsonView(value) {
  const pre = h("pre", { class: "json" });
  const text = JSON.stringify(value, null, 2) ?? "null";
  const token = /("(?:\\.|[^"\\])*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b/g;
  let last = 0;
  for (const m of text.matchAll(token)) {
    pre.append(text.slice(last, m.index));
    if (m[1] && m[2]) pre.append(h("span", { class: "json-key" }, m[1]), m[2]);
    else if (m[1]) pre.append(h("span", { class: "json-string" }, m[1]));
    else if (m[3]) pre.append(h("span", { class: "json-number" }, m[3]));
    else pre.append(h("span", { class: "json-literal" }, m[4]));
    last = m.index + m[0].length;
  }
  pre.append(text.slice(last));
  return pre;
}

export function notice(text, kind = "") {
  return h("div", { class: `notice ${kind}` }, text);
}

export function errorBox(err) {
  return notice(err && err.message ? err.message : String(err), "bad");
}

export function windowSelect(current, onChange) {
  const choices = [
    [900, "Last 15 minutes"],
    [3600, "Last hour"],
    [6 * 3600, "Last 6 hours"],
    [24 * 3600, "Last 24 hours"],
    [7 * 86400, "Last 7 days"],
  ];
  const select = h("select", { "aria-label": "time window", onchange: (e) => onChange(Number(e.target.value)) },
    choices.map(([v, label]) => h("option", { value: v, selected: Number(current) === v }, label)));
  return select;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h("textarea", {}, text);
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}
