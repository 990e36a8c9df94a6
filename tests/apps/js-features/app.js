// Spin feature probe (JavaScript): one component, many routes, each proving one host capability.
// Same routes and JSON shapes as tests/apps/py-features (see tests/apps/README.md). Built by
// scripts/build-test-apps with @spinframework/build-tools (j2w → componentize-js/StarlingMonkey);
// the `wasi:*` and `fermyon:*` modules below are component imports declared in wit/world.wit.
import { get as getVariable } from "fermyon:spin/variables@2.0.0";
import { get as getConfig, getAll as getAllConfig } from "wasi:config/store@0.2.0-draft-2024-09-27";
import { getEnvironment } from "wasi:cli/environment@0.2.0";
import { exit } from "wasi:cli/exit@0.2.0";
import { getDirectories } from "wasi:filesystem/preopens@0.2.0";

const STATIC_DIR = "/static";
const CONTENT_TYPES = { txt: "text/plain", json: "application/json", html: "text/html" };

// Renders a WIT error (a ComponentError whose payload is a variant or an enum string) as
// `kebab-case-name[: payload]`, the same text the Python probe produces.
function errorText(err) {
  const payload = err && err.payload;
  if (typeof payload === "string") return payload;
  if (payload && payload.tag !== undefined) {
    return payload.val === undefined ? payload.tag : `${payload.tag}: ${payload.val}`;
  }
  return String(err);
}

function text(status, body, contentType = "text/plain") {
  return new Response(body, { status, headers: { "content-type": contentType } });
}

function json(status, value) {
  return text(status, JSON.stringify(value) + "\n", "application/json");
}

function readVariable(name) {
  try {
    return { value: getVariable(name) };
  } catch (err) {
    return { error: errorText(err) };
  }
}

function readConfig(name) {
  try {
    return { value: getConfig(name) ?? null };
  } catch (err) {
    return { error: errorText(err) };
  }
}

function variablesReport() {
  const names = ["greeting", "secret_token"];
  const report = { spin: {}, wasi_config: {} };
  for (const name of names) {
    report.spin[name] = readVariable(name);
    report.wasi_config[name] = readConfig(name);
  }
  try {
    report.wasi_config_all = Object.fromEntries(getAllConfig());
  } catch (err) {
    report.wasi_config_all = { error: errorText(err) };
  }
  return report;
}

// StarlingMonkey has no fs API, so files are read through wasi:filesystem directly. Spin preopens
// a component's files at "/" (every `files` mount lands under that one directory), so open
// `static/<name>` relative to the "/" preopen and read it whole.
function serveFile(name) {
  const path = name ? `${STATIC_DIR}/${name}` : STATIC_DIR;
  const preopen = getDirectories().find(([, mount]) => mount === "/");
  if (!preopen) return text(500, "no preopened directory for /\n");
  const [root] = preopen;
  const relative = path.replace(/^\/+/, "");
  let descriptor;
  try {
    descriptor = root.openAt({ symlinkFollow: false }, relative, {}, { read: true });
    const stat = descriptor.stat();
    if (stat.type === "directory") {
      const names = [];
      const entries = descriptor.readDirectory();
      for (let entry = entries.readDirectoryEntry(); entry; entry = entries.readDirectoryEntry()) {
        names.push(entry.name);
      }
      return json(200, names.sort());
    }
    const chunks = [];
    let offset = 0n;
    for (;;) {
      const [chunk, end] = descriptor.read(65536n, offset);
      chunks.push(chunk);
      offset += BigInt(chunk.length);
      if (end || chunk.length === 0) break;
    }
    const extension = name.split(".").pop();
    return new Response(new Blob(chunks), {
      status: 200,
      headers: { "content-type": CONTENT_TYPES[extension] ?? "application/octet-stream" },
    });
  } catch (err) {
    const reason = errorText(err);
    return reason === "no-entry" ? text(404, `not found: ${path}\n`) : text(500, `${reason}\n`);
  }
}

// JS code cannot execute `unreachable`: StarlingMonkey catches exceptions, "too much recursion"
// and out-of-memory and answers 500 itself. `exit` (the default) calls wasi:cli/exit with an
// error, which ends the instance mid-request the way a trap does; `throw` shows the 500 path.
function trap(kind) {
  if (kind === "throw") throw new Error("js-features: exception escaping the handler on purpose");
  exit({ tag: "err", val: undefined });
  throw new Error("wasi:cli/exit returned");
}

function randomHex() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function handle(request) {
  const url = new URL(request.url);
  const path = url.pathname;
  const method = request.method;

  if (path === "/echo" && method === "POST") {
    const contentType = request.headers.get("content-type") ?? "application/octet-stream";
    return new Response(request.body, { status: 200, headers: { "content-type": contentType } });
  }
  if (path === "/headers" || path.startsWith("/headers/")) {
    return json(200, {
      method,
      url: request.url,
      path_with_query: path + url.search,
      authority: url.host,
      scheme: url.protocol.replace(/:$/, ""),
      headers: Object.fromEntries(request.headers),
      header_entries: Array.from(request.headers),
    });
  }
  if (path === "/variables") return json(200, variablesReport());
  if (path.startsWith("/variables/")) {
    const result = readVariable(path.slice("/variables/".length));
    return "value" in result ? text(200, result.value) : text(500, result.error + "\n");
  }
  if (path === "/files" || path.startsWith("/files/")) {
    return serveFile(decodeURIComponent(path.slice("/files".length).replace(/^\/+/, "")));
  }
  if (path === "/env") return json(200, Object.fromEntries(getEnvironment()));
  if (path === "/log") {
    console.log("js-features: line on stdout");
    console.error("js-features: line on stderr");
    return text(200, "logged\n");
  }
  if (path === "/trap") trap(url.searchParams.get("kind") ?? "exit");
  if (path === "/loop") {
    for (;;) {
      // busy on purpose: the host must interrupt it
    }
  }
  if (path === "/random") return text(200, randomHex() + "\n");
  if (path === "/time") return json(200, { wall_ms: Date.now(), monotonic_ms: performance.now() });
  if (path.startsWith("/users/")) {
    return json(200, { id: request.headers.get("spin-path-match-id"), path });
  }
  if (path === "/exact") return text(200, "exact\n");
  if (path === "/chain") {
    try {
      const reply = await fetch("http://hello.spin.internal/");
      return text(reply.status, await reply.text());
    } catch (err) {
      return text(502, `chain failed: ${err}\n`);
    }
  }
  return text(404, `js-features has no route for ${method} ${path}\n`);
}

addEventListener("fetch", (event) => {
  event.respondWith(handle(event.request));
});
