// Key-value probe (JavaScript) on fermyon:spin/key-value@2.0.0; same routes and answers as the
// /kv routes of tests/apps/py-kv (no /incr: that needs wasi:keyvalue atomics, Python only here).
//   GET/PUT/DELETE /kv/<label>/<key>   read (404 if missing), set to the body, delete
//   GET /kv/<label>                    keys of the store, sorted JSON list
// Store errors are 500 with the error text: no-such-store, access-denied, store-table-full,
// other: <text>.
import { Store } from "fermyon:spin/key-value@2.0.0";

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

async function handle(request) {
  const path = new URL(request.url).pathname;
  const parts = path.replace(/^\/+|\/+$/g, "").split("/").map(decodeURIComponent);
  const method = request.method;
  if (parts[0] !== "kv" || parts.length < 2 || parts.length > 3) {
    return text(404, `js-kv has no route for ${method} ${path}\n`);
  }
  const [, label, key] = parts;
  const body = new Uint8Array(await request.arrayBuffer());
  let store;
  try {
    store = Store.open(label);
    if (key === undefined) {
      if (method !== "GET") return text(405, `${method} not allowed on a store\n`);
      return text(200, JSON.stringify(store.getKeys().sort()) + "\n", "application/json");
    }
    if (method === "GET") {
      const value = store.get(key);
      return value === undefined ? text(404, `no key '${key}' in '${label}'\n`) : text(200, value);
    }
    if (method === "PUT") {
      store.set(key, body);
      return text(200, "stored\n");
    }
    if (method === "DELETE") {
      store.delete(key);
      return text(200, "deleted\n");
    }
    return text(405, `${method} not allowed on a key\n`);
  } catch (err) {
    return text(500, errorText(err) + "\n");
  }
}

addEventListener("fetch", (event) => {
  event.respondWith(handle(event.request));
});
