// Socket.IO 4 peer for `scripts/bench` (targets "socketio" and "socketio-redis-2-nodes").
//
// Websocket transport only, no permessage-deflate. Two events:
//   "join"    (room, ack)  -> joins the room, acks "ok"
//   "publish" (room, data) -> emits "message" with data to every member of the room
//                             (the publisher too, if it joined the room)
// PORT (default 3000) on 127.0.0.1. With REDIS_URL set, the Redis adapter makes every process
// started with the same REDIS_URL one cluster: a publish on one node reaches the room's members
// on all of them. Prints "listening <port>" on stdout when ready to accept connections.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || "127.0.0.1";

async function main() {
  const httpServer = http.createServer((req, res) => {
    res.writeHead(404).end();
  });
  const io = new Server(httpServer, {
    transports: ["websocket"],
    perMessageDeflate: false,
    serveClient: false,
    maxHttpBufferSize: 1e6,
    // Bench clients may be idle for a while under load; keep Engine.IO's defaults otherwise.
    pingInterval: 25000,
    pingTimeout: 20000,
  });

  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pubClient = createClient({ url: process.env.REDIS_URL });
    const subClient = pubClient.duplicate();
    for (const c of [pubClient, subClient]) {
      c.on("error", (err) => console.error("redis:", err.message));
    }
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
  }

  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack("ok");
    });
    socket.on("publish", (room, data) => {
      io.to(room).emit("message", data);
    });
  });

  httpServer.listen(port, host, () => {
    console.log(`listening ${httpServer.address().port}`);
  });
}

const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
