// The demo pages and the JavaScript client in Debian's Chromium (driven by playwright-core),
// against real hub processes and a real redis-server on loopback.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { Switchboard } from "../../clients/js/switchboard.js";
import { API_KEY, startHub, startRedis, until, waitReady } from "../../clients/js/test/harness.js";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const shots = join(repo, "target/screenshots");
mkdirSync(shots, { recursive: true });

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // As root Chromium needs --no-sandbox; the rest keep it off the network (nothing but
    // loopback is reachable here, and a start must not wait on Google's hosts).
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});
after(async () => {
  await browser?.close();
});

/** A page that fails the test on any uncaught error in it. */
async function open(url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  page.errors = errors;
  await page.goto(url);
  return page;
}

const texts = (page) =>
  page.$$eval("#messages li", (items) =>
    items.map((li) => (li.querySelector(".text") ? li.querySelector(".text").textContent : li.textContent)),
  );
const presenceOf = (page) => page.$$eval("#presence li", (items) => items.map((li) => li.textContent).sort());

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

describe("chat demo on a two-node cluster", () => {
  let redis;
  let a;
  let b;
  before(async () => {
    redis = await startRedis();
    const env = { SWITCHBOARD_REDIS_URL: redis.url };
    [a, b] = await Promise.all([
      startHub({ env, nodeId: "node-a" }),
      startHub({ env, nodeId: "node-b" }),
    ]);
    await Promise.all([waitReady(a), waitReady(b)]);
  });
  after(() => {
    a?.kill();
    b?.kill();
    redis?.kill();
  });

  test("two pages chat: messages, presence, history on join; a killed node's page fails over and misses nothing", async () => {
    const both = `${a.url},${b.url}`;
    const ann = await open(`${a.httpUrl}/demo/chat?name=ann&room=lobby&urls=${both}`);
    await ann.waitForSelector('#status[data-state="connected"]');
    assert.match(await ann.textContent("#status"), /node-a/);
    await say(ann, "hello from ann");
    await ann.waitForSelector("#messages li:has-text('hello from ann')");

    // Bob joins on the other node and gets the room's history first.
    const bob = await open(`${b.httpUrl}/demo/chat?name=bob&room=lobby&urls=${b.url},${a.url}`);
    await bob.waitForSelector('#status[data-state="connected"]');
    assert.match(await bob.textContent("#status"), /node-b/);
    await bob.waitForSelector("#messages li:has-text('hello from ann')");
    assert.deepEqual(await texts(bob), ["ann joined", "hello from ann", "bob joined"]);

    // Presence on both pages, names learned from the hello each page says.
    for (const page of [ann, bob]) {
      await until(async () => (await presenceOf(page)).join() === "ann,bob", 10000, "presence on both pages");
    }
    await say(bob, "hi ann");
    await ann.waitForSelector("#messages li:has-text('hi ann')");
    await say(ann, "hi bob");
    await bob.waitForSelector("#messages li:has-text('hi bob')");
    await ann.screenshot({ path: join(shots, "chat.png") });

    // Node A dies; messages keep coming on node B while ann's page is away.
    const carol = new Switchboard(b.url);
    await until(() => carol.connected, 5000, "carol");
    await a.kill();
    const sent = [];
    for (let i = 0; i < 40; i++) {
      const text = `while away ${i}`;
      await carol.publish("demo:chat:lobby", { name: "carol", text });
      sent.push(text);
    }
    await ann.waitForSelector('#status[data-state="connected"]:has-text("node-b")', { timeout: 15000 });
    for (let i = 40; i < 50; i++) {
      const text = `after ${i}`;
      await carol.publish("demo:chat:lobby", { name: "carol", text });
      sent.push(text);
    }
    await ann.waitForSelector("#messages li:has-text('after 49')");
    const shown = (await texts(ann)).filter((t) => t.startsWith("while away") || t.startsWith("after"));
    assert.deepEqual(shown, sent, "every message, in order, exactly once");
    assert.equal((await texts(ann)).filter((t) => t.startsWith("messages may be missing")).length, 0);
    carol.close();
    assert.deepEqual(ann.errors, []);
    assert.deepEqual(bob.errors, []);
  });
});

describe("dashboard demo", () => {
  test("the page draws the points a feeder streams over HTTP", async () => {
    const hub = await startHub({ env: { SWITCHBOARD_API_KEYS: API_KEY } });
    try {
      const page = await open(`${hub.httpUrl}/demo/dashboard?room=browser`);
      await page.waitForSelector('#status[data-state="connected"]');
      const feeder = spawn(join(repo, "deploy/dashboard-feeder"), [hub.httpUrl, "demo:dashboard:browser"], {
        env: { ...process.env, SWITCHBOARD_API_KEY: API_KEY, COUNT: "60", INTERVAL: "0.02" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      feeder.stdout.on("data", (d) => (output += d));
      feeder.stderr.on("data", (d) => (output += d));
      const code = await new Promise((r) => feeder.on("exit", r));
      assert.equal(code, 0, output);
      assert.equal(JSON.parse(output).published, 60, output);
      await page.waitForFunction(() => document.querySelector("#chart").dataset.count === "60", null, {
        timeout: 10000,
      });
      const drawn = await page.evaluate(() => window.dashboard.points);
      const polyline = await page.$eval("#line", (line) => line.getAttribute("points").trim().split(/\s+/).length);
      assert.equal(polyline, 60);
      // The points are the room's messages, in order.
      const reader = new Switchboard(hub.url);
      await until(() => reader.connected, 5000, "reader");
      const history = await reader.history("demo:dashboard:browser", 100);
      reader.close();
      assert.deepEqual(
        drawn,
        history.map((m) => m.data.value),
      );
      // A page opened later draws the same points from the room's history.
      const late = await open(`${hub.httpUrl}/demo/dashboard?room=browser`);
      await late.waitForFunction(() => document.querySelector("#chart").dataset.count === "60", null, {
        timeout: 10000,
      });
      assert.deepEqual(await late.evaluate(() => window.dashboard.points), drawn);
      await page.screenshot({ path: join(shots, "dashboard.png") });
      assert.deepEqual(page.errors, []);
    } finally {
      await hub.kill();
    }
  });

  test("the demos can be turned off; the client is served either way", async () => {
    const hub = await startHub({ env: { SWITCHBOARD_DEMOS: "false" } });
    try {
      for (const path of ["/demo/chat", "/demo/dashboard"]) {
        assert.equal((await fetch(`${hub.httpUrl}${path}`)).status, 404, path);
      }
      const client = await fetch(`${hub.httpUrl}/client/switchboard.js`);
      assert.equal(client.status, 200);
      assert.match(client.headers.get("content-type"), /javascript/);
      // A page of its own loads the client from the hub and talks to it.
      const page = await open(`${hub.httpUrl}/client/switchboard.js`);
      const echoed = await page.evaluate(async (url) => {
        const { Switchboard } = await import("/client/switchboard.js");
        const sb = new Switchboard(url);
        const got = new Promise((r) => sb.subscribe("page", { onMessage: (m) => r(m.data) }));
        await new Promise((r) => sb.on("connected", r));
        await new Promise((r) => setTimeout(r, 100));
        await sb.publish("page", { from: "the page" });
        const data = await got;
        sb.close();
        return data;
      }, hub.url);
      assert.deepEqual(echoed, { from: "the page" });
    } finally {
      await hub.kill();
    }
  });
});
