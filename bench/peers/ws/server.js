// Plain `ws` broadcast peer for `scripts/bench` (target "ws"): the server people write by hand.
//
// A client connecting to /<room> receives every text or binary message that any OTHER client
// sends on the same path, forwarded verbatim (same opcode, same bytes). No protocol, no acks.
// PORT (default 3001) on 127.0.0.1, no permessage-deflate. Prints "listening <port>" when ready.
"use strict";

const { WebSocketServer } = require("ws");

const port = Number(process.env.PORT || 3001);
const host = process.env.HOST || "127.0.0.1";

const rooms = new Map(); // path -> Set<WebSocket>

const wss = new WebSocketServer({
  host,
  port,
  perMessageDeflate: false,
  maxPayload: 1 << 20,
  clientTracking: false,
});

wss.on("connection", (ws, req) => {
  const path = req.url || "/";
  let set = rooms.get(path);
  if (!set) {
    set = new Set();
    rooms.set(path, set);
  }
  set.add(ws);

  ws.on("message", (data, isBinary) => {
    for (const c of set) {
      if (c !== ws && c.readyState === 1) c.send(data, { binary: isBinary });
    }
  });
  ws.on("close", () => {
    set.delete(ws);
    if (set.size === 0 && rooms.get(path) === set) rooms.delete(path);
  });
  ws.on("error", () => {});
});

wss.on("listening", () => {
  console.log(`listening ${wss.address().port}`);
});
wss.on("error", (err) => {
  console.error(err.message);
  process.exit(1);
});

const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
