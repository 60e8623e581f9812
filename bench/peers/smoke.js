// Smoke check of one running bench target: a subscriber joins room "smoke", a publisher sends one
// message to it, and the subscriber must receive it within 5 s. Exit 0 and "ok" on success.
// Speaks each target's protocol by hand with the `ws` package of bench/peers/ws, so it needs no
// other install. Usage:
//   node smoke.js <target> <sub-url> [pub-url]
// target: switchboard (url ws://h:p/ws), nats (ws://h:wsport), socketio (ws://h:p), ws (ws://h:p)
"use strict";

const path = require("node:path");
const WebSocket = require(path.join(__dirname, "ws", "node_modules", "ws"));

const [target, subUrl, pubUrl = subUrl] = process.argv.slice(2);
const ROOM = "smoke";
const PAYLOAD = { seq: 1, text: "hello from smoke.js" };

function fail(msg) {
  console.error(`smoke ${target}: FAIL: ${msg}`);
  process.exit(1);
}
setTimeout(() => fail("timed out"), 5000).unref();

function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const queue = [];
    const waiters = [];
    ws.on("message", (data, isBinary) => {
      const m = isBinary ? data : data.toString();
      const w = waiters.shift();
      if (w) w(m);
      else queue.push(m);
    });
    ws.next = () => new Promise((res) => (queue.length ? res(queue.shift()) : waiters.push(res)));
    ws.until = async (pred) => {
      for (;;) {
        const m = await ws.next();
        if (pred(m.toString())) return m.toString();
      }
    };
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

const protocols = {
  async switchboard() {
    const sub = await open(subUrl);
    const pub = await open(pubUrl);
    await sub.until((m) => JSON.parse(m).op === "welcome");
    await pub.until((m) => JSON.parse(m).op === "welcome");
    sub.send(JSON.stringify({ op: "subscribe", room: ROOM, id: 1 }));
    await sub.until((m) => JSON.parse(m).op === "ack");
    pub.send(JSON.stringify({ op: "publish", room: ROOM, data: PAYLOAD, id: 2 }));
    const m = JSON.parse(await sub.until((m) => JSON.parse(m).op === "message"));
    return m.data;
  },
  async nats() {
    const sub = await open(subUrl);
    const pub = await open(pubUrl);
    for (const ws of [sub, pub]) {
      await ws.until((m) => m.startsWith("INFO"));
      ws.send('CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n');
      await ws.until((m) => m.includes("PONG"));
    }
    sub.send(`SUB ${ROOM} 1\r\nPING\r\n`);
    await sub.until((m) => m.includes("PONG"));
    const body = JSON.stringify(PAYLOAD);
    pub.send(`PUB ${ROOM} ${Buffer.byteLength(body)}\r\n${body}\r\n`);
    const m = await sub.until((m) => m.startsWith("MSG"));
    return JSON.parse(m.split("\r\n")[1]);
  },
  async socketio() {
    const eio = (u) => u.replace(/\/$/, "") + "/socket.io/?EIO=4&transport=websocket";
    const sub = await open(eio(subUrl));
    const pub = await open(eio(pubUrl));
    for (const ws of [sub, pub]) {
      await ws.until((m) => m.startsWith("0"));
      ws.send("40");
      await ws.until((m) => m.startsWith("40"));
    }
    sub.send(`420${JSON.stringify(["join", ROOM])}`);
    const ack = await sub.until((m) => m.startsWith("43"));
    if (ack !== '430["ok"]') fail(`join ack was ${ack}`);
    // With the Redis adapter the room lives in this node; remote publishes reach it through Redis.
    pub.send(`42${JSON.stringify(["publish", ROOM, PAYLOAD])}`);
    const m = JSON.parse((await sub.until((m) => m.startsWith("42"))).slice(2));
    if (m[0] !== "message") fail(`event was ${m[0]}`);
    return m[1];
  },
  async ws() {
    const u = (x) => x.replace(/\/$/, "") + "/" + ROOM;
    const sub = await open(u(subUrl));
    const pub = await open(u(pubUrl));
    pub.send(JSON.stringify(PAYLOAD));
    return JSON.parse(await sub.next());
  },
};

(async () => {
  const run = protocols[target];
  if (!run) fail(`unknown target (one of ${Object.keys(protocols).join(", ")})`);
  const got = await run();
  if (JSON.stringify(got) !== JSON.stringify(PAYLOAD)) fail(`received ${JSON.stringify(got)}`);
  console.log(`smoke ${target}: ok`);
  process.exit(0);
})().catch((err) => fail(err.message));
