// What the Playground reads from an app's OpenAPI document: its operations, each one's
// input JSON schema (references resolved, file inputs turned into upload fields), and the
// files in an output (to show images and audio inline).

export function operations(doc) {
  const out = [];
  for (const [path, ops] of Object.entries((doc && doc.paths) || {})) {
    for (const [method, op] of Object.entries(ops || {})) {
      if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
      out.push({ path, method, summary: op.summary || op.description || "", op });
    }
  }
  return out;
}

function resolvePointer(doc, ref) {
  if (!ref.startsWith("#/")) return null;
  let node = doc;
  for (const part of ref.slice(2).split("/")) {
    node = node && node[part.replace(/~1/g, "/").replace(/~0/g, "~")];
  }
  return node || null;
}

// Inline every local $ref (cycles end as a plain object after `depth` levels).
export function deref(schema, doc, depth = 0, seen = []) {
  if (Array.isArray(schema)) return schema.map((s) => deref(s, doc, depth, seen));
  if (!schema || typeof schema !== "object") return schema;
  if (typeof schema.$ref === "string") {
    const { $ref, ...rest } = schema;
    if (seen.includes($ref) || depth > 12) return { type: "object", title: rest.title || $ref.split("/").pop() };
    const target = resolvePointer(doc, $ref);
    if (!target) return rest;
    return deref({ ...target, ...rest }, doc, depth + 1, [...seen, $ref]);
  }
  const out = {};
  for (const [k, v] of Object.entries(schema)) out[k] = deref(v, doc, depth, seen);
  return out;
}

// A tidal.toolkit File or Image model (what File's JSON schema looks like).
export function isFileModel(s) {
  return !!(s && s.type === "object" && s.properties && s.properties.url && ("content_type" in s.properties || "file_name" in s.properties));
}

function isImageModel(s) {
  return isFileModel(s) && (("width" in s.properties && "height" in s.properties) || /image/i.test(s.title || ""));
}

// Turn the schema into what the form library renders well: a File/Image input becomes an
// upload field (its value the file's URL), `X | None` becomes X, `const` a fixed enum.
export function formSchema(schema, uploadHandler) {
  if (Array.isArray(schema)) return schema.map((s) => formSchema(s, uploadHandler));
  if (!schema || typeof schema !== "object") return schema;
  const choices = schema.anyOf || schema.oneOf;
  if (Array.isArray(choices)) {
    const models = choices.filter(isFileModel);
    if (models.length) return uploadField(schema, models[0], uploadHandler);
    const nonNull = choices.filter((c) => c && c.type !== "null");
    if (nonNull.length === 1) {
      const { anyOf, oneOf, ...rest } = schema;
      return formSchema({ ...nonNull[0], ...rest, title: rest.title || nonNull[0].title }, uploadHandler);
    }
  }
  if (isFileModel(schema)) return uploadField(schema, schema, uploadHandler);
  const out = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k === "properties" && v && typeof v === "object") {
      out.properties = Object.fromEntries(Object.entries(v).map(([name, sub]) => [name, formSchema(sub, uploadHandler)]));
    } else if (k === "items" || k === "additionalProperties" || k === "anyOf" || k === "oneOf" || k === "allOf") {
      out[k] = formSchema(v, uploadHandler);
    } else out[k] = v;
  }
  if (out.const !== undefined && !out.enum) out.enum = [out.const];
  if (out.type === "boolean" && !out.format) out.format = "checkbox";
  if (out.allOf && out.allOf.length === 1 && !out.type) {
    const { allOf, ...rest } = out;
    return { ...allOf[0], ...rest };
  }
  return out;
}

function uploadField(schema, model, uploadHandler) {
  const image = isImageModel(model);
  return {
    type: "string",
    format: "url",
    title: schema.title || model.title || (image ? "Image" : "File"),
    description: `${schema.description || model.description || ""} Upload a file, or give an http(s) or data: URL.`.trim(),
    default: typeof schema.default === "string" ? schema.default : undefined,
    options: {
      upload: { upload_handler: uploadHandler, auto_upload: true, mime_type: image ? ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/svg+xml"] : [] },
      tidal_file: image ? "image" : "file",
    },
    links: [{ href: "{{self}}", rel: image ? "Preview" : "Open", mediaType: image ? "image" : undefined }],
  };
}

export function inputSchema(doc, op) {
  const body = op.op.requestBody;
  const content = body && body.content && (body.content["application/json"] || Object.values(body.content)[0]);
  if (!content || !content.schema) return null;
  return deref(content.schema, doc);
}

// Files in an output: objects with a `url` and a content type or name, and data: URIs.
export function findFiles(value, path = "output", out = []) {
  if (Array.isArray(value)) value.forEach((v, i) => findFiles(v, `${path}[${i}]`, out));
  else if (value && typeof value === "object") {
    if (typeof value.url === "string" && (value.content_type || value.file_name || /^https?:|^data:/.test(value.url))) {
      out.push({ path, url: value.url, type: value.content_type || guessType(value.url, value.file_name), name: value.file_name, size: value.file_size, width: value.width, height: value.height });
    } else for (const [k, v] of Object.entries(value)) findFiles(v, `${path}.${k}`, out);
  } else if (typeof value === "string" && value.startsWith("data:")) {
    out.push({ path, url: value, type: value.slice(5).split(/[;,]/)[0] });
  }
  return out;
}

export function guessType(url, name) {
  const ext = ((name || url || "").split(/[?#]/)[0].split(".").pop() || "").toLowerCase();
  const types = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp", svg: "image/svg+xml", mp3: "audio/mpeg", wav: "audio/wav", ogg: "audio/ogg", flac: "audio/flac", mp4: "video/mp4", webm: "video/webm" };
  return types[ext] || "";
}

// A file the platform serves (/files/...) is shown from this page's origin, whatever
// host name the runner put in its URL.
export function localUrl(url) {
  try {
    const u = new URL(url, window.location.href);
    if (/^\/files\/[0-9a-f]{32}\//.test(u.pathname)) return u.pathname + u.search;
  } catch {
    /* not a URL: leave it */
  }
  return url;
}

// A plausible example value for a schema (used when a field has no default).
export function example(schema) {
  if (!schema || typeof schema !== "object") return null;
  if (schema.default !== undefined) return schema.default;
  if (schema.examples && schema.examples.length) return schema.examples[0];
  if (schema.enum) return schema.enum[0];
  switch (schema.type) {
    case "string":
      return "";
    case "integer":
    case "number":
      return schema.minimum ?? 0;
    case "boolean":
      return false;
    case "array":
      return [];
    case "object": {
      const out = {};
      for (const [k, v] of Object.entries(schema.properties || {})) if ((schema.required || []).includes(k)) out[k] = example(v);
      return out;
    }
    default:
      return null;
  }
}
