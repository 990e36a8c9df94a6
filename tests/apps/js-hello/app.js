// WASI-only hello world: a `wasi:http/proxy` component with no Spin imports, so that both kubespin
// and `wasmtime serve` can run it. Built by scripts/build-test-apps with @spinframework/build-tools
// (j2w → componentize-js); StarlingMonkey turns the exported wasi:http/incoming-handler call into a
// service-worker style fetch event.
addEventListener("fetch", (event) => {
  event.respondWith(
    new Response("hello from javascript\n", {
      status: 200,
      headers: { "content-type": "text/plain" },
    }),
  );
});
