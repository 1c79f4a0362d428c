// The Playground's call, as code to copy: curl, Python and JavaScript against the queue API.
// The key is never filled in: the snippets read it from $TIDAL_KEY.

function shellQuote(text) {
  return `'${text.replace(/'/g, `'"'"'`)}'`;
}

function pythonLiteral(value, indent = 0) {
  const pad = "    ".repeat(indent + 1);
  const end = "    ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => pad + pythonLiteral(v, indent + 1)).join(",\n")},\n${end}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pythonLiteral(v, indent + 1)}`).join(",\n")},\n${end}}`;
}

export function snippets({ base, owner, app, path, input, auth }) {
  const url = `${base}/queue/${owner}/${app}${path}`;
  const json = JSON.stringify(input ?? {});
  const pretty = JSON.stringify(input ?? {}, null, 2);
  const keyHeader = auth ? ` \\\n  -H "Authorization: Key $TIDAL_KEY"` : "";
  const curl = `# Submit to the queue; the answer has the request's status_url and response_url.
curl -s -X POST ${shellQuote(url)}${keyHeader} \\
  -H "Content-Type: application/json" \\
  -d ${shellQuote(json)}

# Then poll its status, and fetch the result once it is COMPLETED:
curl -s ${shellQuote(`${base}/queue/${owner}/${app}/requests/REQUEST_ID/status`)}${auth ? ' -H "Authorization: Key $TIDAL_KEY"' : ""}
curl -s ${shellQuote(`${base}/queue/${owner}/${app}/requests/REQUEST_ID`)}${auth ? ' -H "Authorization: Key $TIDAL_KEY"' : ""}`;

  const python = `import os
import time

import httpx

BASE = ${JSON.stringify(base)}
headers = {${auth ? '"Authorization": f"Key {os.environ[\'TIDAL_KEY\']}"' : ""}}
arguments = ${pythonLiteral(input ?? {})}

submitted = httpx.post(f"{BASE}/queue/${owner}/${app}${path}", json=arguments, headers=headers).json()
while httpx.get(submitted["status_url"], headers=headers).json()["status"] != "COMPLETED":
    time.sleep(0.5)
print(httpx.get(submitted["response_url"], headers=headers).json())

# Or with fal's own client (an https platform): FAL_KEY=<id>:<secret>,
# FAL_RUN_HOST=<host:port>, FAL_QUEUE_RUN_HOST=<host:port>/queue, then
# fal_client.subscribe("${owner}/${app}${path}", arguments=arguments)`;

  const javascript = `const BASE = ${JSON.stringify(base)};
const headers = {${auth ? " Authorization: `Key ${process.env.TIDAL_KEY}`," : ""} "Content-Type": "application/json" };

const submitted = await (await fetch(\`\${BASE}/queue/${owner}/${app}${path}\`, {
  method: "POST",
  headers,
  body: JSON.stringify(${pretty.replace(/\n/g, "\n  ")}),
})).json();
let status;
do {
  await new Promise((r) => setTimeout(r, 500));
  status = await (await fetch(submitted.status_url, { headers })).json();
} while (status.status !== "COMPLETED");
console.log(await (await fetch(submitted.response_url, { headers })).json());`;

  return { curl, python, javascript };
}
