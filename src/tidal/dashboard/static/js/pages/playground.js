// The Playground: a form per endpoint from its input JSON schema (json-editor), sent
// through the queue API; status, queue position and logs live; then the output (images
// and audio inline, files as links, JSON pretty) and the same call as curl, Python, JS.
import { get, raw, streamEvents, upload } from "../api.js";
import { h, clear, badge, panel, jsonView, errorBox, notice, ms, bytes, copyText } from "../ui.js";
import { appHeader } from "./app.js";
import { operations, inputSchema, formSchema, findFiles, localUrl, example } from "../schema.js";
import { snippets } from "../snippets.js";

/* global JSONEditor */

function uploadHandler(_path, file, cbs) {
  upload(file, (p) => cbs.updateProgress(p))
    .then((stored) => cbs.success(stored.url))
    .catch((err) => cbs.failure(`upload failed: ${err.message}`));
}

export async function render(view, [name], query, ctx) {
  view.append(...appHeader(name, "playground"));
  const owner = document.body.dataset.owner;
  let doc;
  try {
    doc = await get(`/api/v1/apps/${encodeURIComponent(name)}/openapi.json`);
  } catch (err) {
    view.append(notice(err.status === 404 ? "This app serves no OpenAPI document, so the Playground cannot build a form for it." : err.message, "bad"));
    return;
  }
  const ops = operations(doc);
  const runnable = ops.filter((o) => o.method === "post");
  if (!runnable.length) {
    view.append(notice("This app has no POST endpoints: the queue API (and so the Playground) calls POST endpoints."));
    return;
  }
  const chosen = runnable.find((o) => o.path === query.endpoint) || runnable[0];

  const picker = h("div", { class: "endpoint-pick" }, ops.map((o) =>
    h("button", {
      type: "button",
      class: o === chosen ? "active" : "",
      disabled: o.method !== "post",
      title: o.method !== "post" ? "GET endpoints are called directly, not through the queue" : o.summary,
      "data-endpoint": o.path,
      onclick: () => (window.location.hash = `#/apps/${encodeURIComponent(name)}/playground?endpoint=${encodeURIComponent(o.path)}`),
    }, h("span", { class: "badge method" }, o.method.toUpperCase()), " ", o.path),
  ));
  view.append(picker);

  const formHolder = h("div", { class: "je-form", id: "playground-form" });
  // Disabled until the form is ready (json-editor says so on an animation frame, which
  // a busy or hidden tab delays): a click before then would find no handler and do
  // nothing at all, though the form is already filled in.
  const runButton = h("button", { type: "button", class: "primary", id: "run", disabled: true }, "Run");
  const resetButton = h("button", { type: "button", disabled: true }, "Reset");
  const formErrors = h("div");
  const result = h("div", { id: "playground-result" }, h("div", { class: "empty" }, "Fill the form and press Run: the request goes through the queue API."));
  const snippetBox = h("div");
  view.append(
    h("div", { class: "playground" },
      panel(`Input · POST ${chosen.path}`, chosen.summary ? h("p", { class: "muted" }, chosen.summary) : null, formHolder, formErrors, h("div", { class: "toolbar", style: "margin-top:12px" }, runButton, resetButton)),
      panel("Result", result),
    ),
    panel("Call it from code", snippetBox),
  );

  const schema = inputSchema(doc, chosen);
  const shaped = schema ? formSchema(schema, uploadHandler) : { type: "object", title: " ", properties: {} };
  const editor = new JSONEditor(formHolder, {
    schema: shaped,
    theme: "html",
    iconlib: null,
    disable_edit_json: true,
    disable_properties: true,
    disable_collapse: true,
    disable_array_delete_all_rows: true,
    disable_array_delete_last_row: true,
    prompt_before_delete: false,
    no_additional_properties: true,
    show_errors: "interaction",
    use_default_values: true,
    form_name_root: "input",
  });
  ctx.onLeave(() => editor.destroy());
  await new Promise((resolve) => editor.on("ready", resolve));
  if (!ctx.live) return;

  const base = document.body.dataset.base || window.location.origin;
  const auth = document.body.dataset.auth === "on";
  let lastInput = null;
  const updateSnippets = () => {
    const value = clean(editor.getValue());
    const text = JSON.stringify(value);
    if (text === lastInput) return;
    lastInput = text;
    renderSnippets(snippetBox, snippets({ base, owner, app: name, path: chosen.path, input: value, auth }));
  };
  editor.on("change", updateSnippets);
  updateSnippets();
  resetButton.addEventListener("click", () => editor.setValue(example(shaped)));

  runButton.addEventListener("click", async () => {
    clear(formErrors);
    const problems = editor.validate();
    if (problems.length) {
      editor.showValidationErrors(problems);
      formErrors.append(notice(problems.map((p) => `${p.path.replace(/^root\.?/, "") || "input"}: ${p.message}`).join("\n"), "bad"));
      return;
    }
    runButton.disabled = true;
    try {
      await run(result, { owner, name, path: chosen.path, input: clean(editor.getValue()), ctx });
    } finally {
      runButton.disabled = false;
    }
  });
  runButton.disabled = resetButton.disabled = false;
}

// Drop empty optional strings the form adds (an empty file URL is not a file).
function clean(value) {
  if (Array.isArray(value)) return value.map(clean);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) if (v !== "" && v !== undefined) out[k] = clean(v);
    return out;
  }
  return value;
}

async function run(result, { owner, name, path, input, ctx }) {
  const started = performance.now();
  const statusBadge = h("span", { id: "run-status" }, badge("SUBMITTING", "info"));
  const position = h("span", { class: "muted", id: "queue-position" });
  const elapsed = h("span", { class: "muted mono" });
  const idLink = h("span");
  const logs = h("pre", { class: "logs", id: "run-logs" }, "");
  const output = h("div", { id: "run-output" });
  clear(result).append(
    h("div", { class: "status-line" }, statusBadge, position, elapsed, idLink),
    h("h3", {}, "Logs"), logs,
    h("h3", { style: "margin-top:14px" }, "Output"), output,
  );
  const timer = setInterval(() => (elapsed.textContent = ms(performance.now() - started)), 100);
  ctx.onLeave(() => clearInterval(timer));
  const q = `/queue/${encodeURIComponent(owner)}/${encodeURIComponent(name)}`;
  try {
    const resp = await raw("POST", `${q}${path}`, input);
    const submitted = await resp.json();
    if (!resp.ok) throw new Error(submitted.detail || `HTTP ${resp.status}`);
    const id = submitted.request_id;
    clear(idLink).append("request ", h("a", { href: `#/requests/${id}`, class: "mono" }, id));
    let shownLogs = 0;
    await streamEvents(`${q}/requests/${id}/status/stream?logs=1`, (event) => {
      if (typeof event !== "object") return;
      clear(statusBadge).append(badge(event.status));
      position.textContent = event.status === "IN_QUEUE" && event.queue_position !== undefined ? `position ${event.queue_position} in the queue` : "";
      const lines = event.logs || [];
      for (const line of lines.slice(shownLogs)) logs.append(h("span", { class: line.level === "ERROR" ? "log-error" : "" }, `${line.message}\n`));
      shownLogs = Math.max(shownLogs, lines.length);
      logs.scrollTop = logs.scrollHeight;
    }, ctx.signal);
    clearInterval(timer);
    elapsed.textContent = ms(performance.now() - started);
    if (!logs.textContent) logs.textContent = "(nothing printed)";
    const answer = await raw("GET", `${q}/requests/${id}`);
    const type = answer.headers.get("content-type") || "";
    const body = type.includes("json") ? await answer.json() : await answer.text();
    if (!answer.ok) {
      clear(statusBadge).append(badge("FAILED", "failed"));
      output.append(
        notice(`${(body && body.error_type) || answer.headers.get("x-fal-error-type") || `HTTP ${answer.status}`}: ${body && body.detail !== undefined ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : body}`, "bad"),
        h("p", {}, h("a", { href: `#/requests/${id}` }, "See the request, its logs and traceback →")),
      );
      if (body && typeof body === "object") output.append(jsonView(body));
      return;
    }
    clear(statusBadge).append(badge("COMPLETED"));
    renderOutput(output, body);
  } catch (err) {
    clearInterval(timer);
    if (ctx.live) result.append(errorBox(err));
  }
}

export function renderOutput(el, body) {
  const files = typeof body === "object" ? findFiles(body) : [];
  if (files.length) {
    const media = h("div", { class: "output-media" });
    for (const f of files) {
      const url = localUrl(f.url);
      const caption = h("figcaption", {}, f.path.replace(/^output\.?/, "") || "output", f.width && f.height ? ` · ${f.width}×${f.height}` : "", f.size ? ` · ${bytes(f.size)}` : "", " · ", h("a", { href: url, target: "_blank", rel: "noopener" }, f.name || "open"));
      if ((f.type || "").startsWith("image/")) media.append(h("figure", {}, h("img", { src: url, alt: f.name || "output image", class: "output-image" }), caption));
      else if ((f.type || "").startsWith("audio/")) media.append(h("figure", {}, h("audio", { src: url, controls: true, class: "output-audio" }), caption));
      else if ((f.type || "").startsWith("video/")) media.append(h("figure", {}, h("video", { src: url, controls: true, class: "output-video", style: "max-width:100%" }), caption));
      else media.append(h("p", {}, "File: ", h("a", { href: url, target: "_blank", rel: "noopener", class: "output-file" }, f.name || url), f.size ? ` (${bytes(f.size)})` : ""));
    }
    el.append(media);
  }
  el.append(typeof body === "object" ? jsonView(body) : h("pre", { class: "json" }, String(body)));
}

function renderSnippets(el, all) {
  const current = el.dataset.lang || "curl";
  clear(el);
  const code = h("pre", { class: "code", id: "snippet" });
  const copy = h("button", { type: "button", class: "copy small" }, "Copy");
  const tabs = h("div", { class: "snippet-tabs" });
  const show = (lang) => {
    el.dataset.lang = lang;
    code.textContent = all[lang];
    code.dataset.lang = lang;
    tabs.querySelectorAll("button").forEach((b) => b.classList.toggle("active", b.dataset.lang === lang));
  };
  for (const [lang, label] of [["curl", "curl"], ["python", "Python"], ["javascript", "JavaScript"]]) {
    tabs.append(h("button", { type: "button", class: "small", "data-lang": lang, onclick: () => show(lang) }, label));
  }
  copy.addEventListener("click", async () => {
    copy.textContent = (await copyText(code.textContent)) ? "Copied" : "Copy failed";
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  });
  el.append(tabs, h("div", { class: "snippet-wrap" }, code, copy));
  show(current);
}
