// Portkey 1.15.2 on Node answers streams with HTTP 500 when it re-reads the upstream fetch Response; re-wrapping each
// response in a fresh Response (same body stream, status and headers) before the gateway sees it avoids it.
const upstreamFetch = globalThis.fetch;
globalThis.fetch = async (...args) => {
  const r = await upstreamFetch(...args);
  return new Response(r.body, { status: r.status, statusText: r.statusText, headers: r.headers });
};
