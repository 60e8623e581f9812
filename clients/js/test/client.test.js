// The client against real hub processes (and a real redis-server for the cluster cases), over
// real sockets, with Node's own WebSocket.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { Switchboard, SwitchboardError } from "../switchboard.js";
import { next, signToken, sleep, startHub, startRedis, until, waitReady } from "./harness.js";

/** Rooms `js:*` keep 1,000 messages: enough to recover every test's missed ones. */
const ROOMS = `
[[rooms]]
pattern = "js:*"
history_size = 1000
`;

const opened = [];
/** A client that the test's end closes. */
function client(url, options = {}) {
  const sb = new Switchboard(url, { minDelay: 100, maxDelay: 1000, ...options });
  opened.push(sb);
  return sb;
}
after(() => {
  for (const sb of opened) sb.close();
});

/** A subscription that records what it is handed. */
function recorder(sb, room) {
  const seen = { messages: [], gaps: [], joins: [], leaves: [], acks: 0 };
  seen.sub = sb.subscribe(room, {
    onMessage: (m) => seen.messages.push(m),
    onGap: (g) => seen.gaps.push(g),
    onJoin: (e) => seen.joins.push(e),
    onLeave: (e) => seen.leaves.push(e),
    onSubscribed: () => {
      seen.acks += 1;
    },
  });
  return seen;
}

describe("one node", () => {
  test("publishes reach members; publish resolves on the ack and rejects with the hub's code", async () => {
    const hub = await startHub();
    const a = client(hub.url);
    const b = client(hub.url);
    const states = [];
    a.on("connecting", () => states.push("connecting"));
    a.on("connected", (w) => states.push(`connected:${w.protocol}`));
    const seen = recorder(b, "plain");
    await until(() => seen.acks === 1 && a.connected, 5000, "both sessions");
    assert.deepEqual(states, ["connecting", "connected:switchboard.v1"]);
    assert.deepEqual(await a.publish("plain", { n: 1 }), {});
    await a.publish("plain", "two", { scope: "node" });
    await until(() => seen.messages.length === 2, 5000, "two messages");
    assert.deepEqual(
      seen.messages.map((m) => m.data),
      [{ n: 1 }, "two"],
    );
    assert.equal(seen.messages[0].from, a.welcome.session);

    await assert.rejects(a.publish("", 1), (e) => e instanceof SwitchboardError && e.code === "invalid_room");
    await assert.rejects(a.publish("plain", 1, { scope: "galaxy" }), (e) => e.code === "bad_request");
    // The session survived its errors.
    assert.equal(typeof (await a.ping()), "number");
    await hub.kill();
  });

  test("requests made while disconnected reject at once, nothing is queued", async () => {
    const hub = await startHub();
    const url = hub.url;
    await hub.kill();
    const sb = client(url);
    const started = Date.now();
    await assert.rejects(sb.publish("room", 1), (e) => e.code === "disconnected");
    await assert.rejects(sb.history("room"), (e) => e.code === "disconnected");
    assert.ok(Date.now() - started < 100, "rejected at once");
    // It keeps trying in the background.
    await until(() => sb.attempt >= 3, 5000, "reconnect attempts");
  });

  test("history, presence, and join/leave in a demo room", async () => {
    const hub = await startHub();
    const a = client(hub.url);
    const room = "demo:chat:js-history";
    const first = recorder(a, room);
    await until(() => first.acks === 1, 5000, "subscribe");
    for (let i = 1; i <= 5; i++) {
      const ack = await a.publish(room, { i });
      assert.equal(ack.offset, i);
      assert.equal(typeof ack.epoch, "string");
    }
    const history = await a.history(room, 3);
    assert.deepEqual(
      history.map((m) => [m.offset, m.data.i]),
      [
        [3, 3],
        [4, 4],
        [5, 5],
      ],
    );
    const b = client(hub.url);
    const second = recorder(b, room);
    await until(() => second.acks === 1 && first.joins.length === 2, 5000, "b's join");
    const members = await a.presence(room);
    assert.deepEqual(
      members.map((m) => m.session).sort(),
      [a.welcome.session, b.welcome.session].sort(),
    );
    // b came in after the five: it receives none of them, only what follows.
    await b.publish(room, { i: 6 });
    await until(() => second.messages.length === 1 && first.messages.length === 6, 5000, "message 6");
    assert.equal(second.messages[0].offset, 6);
    second.sub.unsubscribe();
    // Announced once the room's leave debounce (3 s) passed.
    await until(() => first.leaves.length === 1, 8000, "b's leave");
    assert.equal(first.leaves[0].session, b.welcome.session);
    await assert.rejects(a.presence("plain-room"), (e) => e.code === "unsupported");
    await hub.kill();
  });

  test("a dropped connection is replaced and the history room recovered: no gap, no duplicate", async () => {
    const hub = await startHub({ config: ROOMS });
    const room = "js:recover";
    const reader = client(hub.url, { minDelay: 600, maxDelay: 600 });
    const writer = client(hub.url);
    const seen = recorder(reader, room);
    const plain = recorder(reader, "plain-recover");
    await until(() => seen.acks === 1 && plain.acks === 1 && writer.connected, 5000, "sessions");
    await writer.publish(room, 0);
    await until(() => seen.messages.length === 1, 5000, "message 0");
    const firstSession = reader.welcome.session;
    // The network drops the connection (the hub stays up).
    reader.ws.close();
    for (let i = 1; i <= 500; i++) await writer.publish(room, i);
    await until(() => seen.messages.length === 501, 10000, "all 500 missed messages");
    assert.notEqual(reader.welcome.session, firstSession, "a new session");
    assert.deepEqual(
      seen.messages.map((m) => m.data),
      Array.from({ length: 501 }, (_, i) => i),
    );
    assert.deepEqual(
      seen.messages.map((m) => m.offset),
      Array.from({ length: 501 }, (_, i) => i + 1),
    );
    assert.deepEqual(seen.gaps, [], "recovered without a gap");
    // A room without history cannot be recovered: the application is told.
    assert.deepEqual(plain.gaps, [{ room: "plain-recover", reason: "reconnected" }]);
    // Live messages follow.
    await writer.publish(room, 501);
    await until(() => seen.messages.length === 502, 5000, "a live message");
    await hub.kill();
  });

  test("a restarted standalone node has a new epoch: onGap not_recovered", async () => {
    const hub = await startHub();
    const room = "demo:chat:js-epoch";
    const sb = client(hub.url, { minDelay: 100, maxDelay: 300 });
    const seen = recorder(sb, room);
    await until(() => seen.acks === 1, 5000, "subscribe");
    await sb.publish(room, "before");
    await until(() => seen.messages.length === 1, 5000, "message");
    const oldEpoch = seen.messages[0].epoch;
    const listen = hub.addr;
    await hub.stop();
    const again = await startHub({ listen });
    await until(() => seen.gaps.length === 1, 10000, "the gap");
    assert.equal(seen.gaps[0].reason, "not_recovered");
    assert.notEqual(seen.gaps[0].epoch, oldEpoch);
    await sb.publish(room, "after");
    await until(() => seen.messages.length === 2, 5000, "message after");
    assert.equal(seen.messages[1].offset, 1);
    await again.kill();
  });

  test("kicked (4001): no reconnect", async () => {
    const hub = await startHub();
    const sb = client(hub.url);
    await next(sb, "connected");
    let connecting = 0;
    sb.on("connecting", () => connecting++);
    const disconnected = next(sb, "disconnected");
    const answer = await hub.admin("DELETE", `/admin/sessions/${encodeURIComponent(sb.welcome.session)}`);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const event = await disconnected;
    assert.equal(event.code, 4001);
    assert.equal(event.willReconnect, false);
    await sleep(600);
    assert.equal(connecting, 0);
    assert.equal(sb.state, "closed");
    await hub.kill();
  });

  test("a refused handshake (401) is reported and not retried; a token's refresh keeps the session", async () => {
    const secret = "js-client-test-secret-0123456789";
    const hub = await startHub({ env: { SWITCHBOARD_TOKEN_SECRET: secret } });
    const refused = client(hub.url);
    let attempts = 0;
    refused.on("connecting", () => attempts++);
    const error = await next(refused, "error");
    assert.equal(error.code, "unauthorized");
    assert.equal(error.status, 401);
    await sleep(800);
    assert.equal(attempts, 1, "no second attempt");
    assert.equal(refused.state, "closed");

    const now = () => Math.floor(Date.now() / 1000);
    const grant = (exp) => signToken(secret, { sub: "ann", exp, subscribe: ["*"], publish: ["*"] });
    // Without getToken, an expiring token ends the session with 4002 for good.
    const short = client(hub.url, { token: grant(now() + 2) });
    const closed = await next(short, "disconnected", 8000);
    assert.equal(closed.code, 4002);
    assert.equal(closed.willReconnect, false);

    // With getToken, the token is refreshed before it expires: the session lives on.
    let asked = 0;
    const lasting = client(hub.url, {
      token: grant(now() + 3),
      getToken: () => {
        asked++;
        return grant(now() + 3);
      },
    });
    const welcome = await next(lasting, "connected");
    assert.equal(welcome.user, "ann");
    let dropped = 0;
    lasting.on("disconnected", () => dropped++);
    await sleep(5000);
    assert.ok(asked >= 2, `getToken asked ${asked} times`);
    assert.equal(dropped, 0, "no disconnect across two expiries");
    assert.equal(lasting.welcome.session, welcome.session, "the same session");

    // A refresh that fails lets the token expire (4002); getToken then gives the reconnect a
    // new token, and the rooms come back.
    let calls = 0;
    const flaky = client(hub.url, {
      token: grant(now() + 2),
      getToken: () => {
        calls++;
        if (calls === 1) throw new Error("the token service is down");
        return grant(now() + 60);
      },
    });
    const seen = recorder(flaky, "after-expiry");
    const firstWelcome = await next(flaky, "connected");
    const expired = await next(flaky, "disconnected", 8000);
    assert.equal(expired.code, 4002);
    assert.equal(expired.willReconnect, true);
    const secondWelcome = await next(flaky, "connected", 8000);
    assert.notEqual(secondWelcome.session, firstWelcome.session);
    await until(() => seen.acks === 2, 5000, "resubscribed");
    await flaky.publish("after-expiry", "still here");
    await until(() => seen.messages.length === 1, 5000, "a message after the new token");
    await hub.kill();
  });
});

describe("two nodes and Redis", () => {
  test("killing the node fails over to the other URL and recovers every message, in order, once", async () => {
    const redis = await startRedis();
    const env = { SWITCHBOARD_REDIS_URL: redis.url };
    const [a, b] = await Promise.all([
      startHub({ env, config: ROOMS, nodeId: "js-a" }),
      startHub({ env, config: ROOMS, nodeId: "js-b" }),
    ]);
    await Promise.all([waitReady(a), waitReady(b)]);
    const room = "js:failover";
    const reader = client([a.url, b.url], { minDelay: 200, maxDelay: 400 });
    const writer = client(b.url);
    const seen = recorder(reader, room);
    await until(() => seen.acks === 1 && writer.connected, 8000, "sessions");
    assert.equal(reader.welcome.node, "js-a");
    for (let i = 0; i < 10; i++) await writer.publish(room, i);
    await until(() => seen.messages.length === 10, 5000, "first messages");
    await a.kill();
    for (let i = 10; i < 510; i++) await writer.publish(room, i);
    await until(() => seen.messages.length === 510, 15000, "every message");
    assert.equal(reader.welcome.node, "js-b");
    assert.deepEqual(
      seen.messages.map((m) => m.data),
      Array.from({ length: 510 }, (_, i) => i),
    );
    assert.deepEqual(seen.gaps, []);
    await sleep(300);
    assert.equal(seen.messages.length, 510, "no duplicate later");
    await b.kill();
    redis.kill();
  });
});
