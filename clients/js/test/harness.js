// Real hub and redis-server processes for the client's tests (and the browser tests): started on
// free loopback ports, always stopped when the test process ends.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
export const ADMIN_TOKEN = "test-admin-token-0123456789";
export const API_KEY = "test-api-key-0123456789";

const children = new Set();
const dirs = new Set();
function cleanup() {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
process.on("exit", cleanup);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    cleanup();
    process.exit(130);
  });
}

/** The hub binary: `SWITCHBOARD_BIN`, or the workspace's debug build. */
export function hubBinary() {
  const bin = process.env.SWITCHBOARD_BIN || join(repo, "target/debug/switchboard");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build it with \`cargo build\` first`);
  return bin;
}

/** A free TCP port on 127.0.0.1 (for processes that cannot listen on port 0 and say so). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), "switchboard-js-"));
  dirs.add(dir);
  return dir;
}

/**
 * Starts a hub. `config`: TOML text for a config file; `env`: extra SWITCHBOARD_* variables;
 * `listen`: a fixed address (to restart a node on its port), default 127.0.0.1:0.
 */
export async function startHub({ config, env = {}, listen = "127.0.0.1:0", nodeId } = {}) {
  const args = ["serve", "--listen", listen, "--admin-listen", "127.0.0.1:0", "--log-format", "json"];
  if (config) {
    const file = join(tempDir(), "hub.toml");
    writeFileSync(file, config);
    args.push("--config", file);
  }
  if (nodeId) args.push("--node-id", nodeId);
  const childEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("SWITCHBOARD_")),
  );
  Object.assign(childEnv, {
    SWITCHBOARD_ADMIN_TOKEN: ADMIN_TOKEN,
    SWITCHBOARD_WORKERS: "2",
    SWITCHBOARD_LOG_LEVEL: "info",
    ...env,
  });
  const child = spawn(hubBinary(), args, { env: childEnv, stdio: ["ignore", "ignore", "pipe"] });
  children.add(child);
  const logs = [];
  const addrs = await new Promise((resolveAddrs, reject) => {
    const found = {};
    const timer = setTimeout(() => reject(new Error(`hub did not start:\n${logs.join("\n")}`)), 15000);
    let buffered = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        logs.push(line);
        try {
          const entry = JSON.parse(line);
          const message = entry.message ?? entry.fields?.message;
          const addr = entry.addr ?? entry.fields?.addr;
          if (message === "listening") found.ws = addr;
          if (message === "admin listening") found.admin = addr;
        } catch {
          // Not a log line of ours.
        }
        if (found.ws && found.admin) {
          clearTimeout(timer);
          resolveAddrs(found);
        }
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`hub exited with ${code}:\n${logs.join("\n")}`));
    });
  });
  child.removeAllListeners("exit");
  const exited = new Promise((r) => child.on("exit", r));
  return {
    addr: addrs.ws,
    adminAddr: addrs.admin,
    url: `ws://${addrs.ws}/ws`,
    httpUrl: `http://${addrs.ws}`,
    logs,
    child,
    exited,
    /** SIGKILL: the node dies without a word. */
    kill() {
      child.kill("SIGKILL");
      return exited;
    },
    /** SIGTERM: the node drains (1001 to every session) and exits. */
    stop() {
      child.kill("SIGTERM");
      return exited;
    },
    /** An admin API request; resolves with {status, body}. */
    async admin(method, path, body) {
      const response = await fetch(`http://${addrs.admin}${path}`, {
        method,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {
        // Not JSON.
      }
      return { status: response.status, body: json ?? text };
    },
  };
}

/** Starts a redis-server on a free port, without persistence. */
export async function startRedis() {
  const port = await freePort();
  const dir = tempDir();
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  children.add(child);
  await new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error("redis-server did not start")), 10000);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      if (chunk.includes("Ready to accept")) {
        clearTimeout(timer);
        resolveReady();
      }
    });
    child.on("exit", (code) => reject(new Error(`redis-server exited with ${code}`)));
  });
  child.removeAllListeners("exit");
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill() {
      child.kill("SIGKILL");
    },
  };
}

/** Waits until the hub's `/readyz` answers 200 (a cluster node has its Redis link). */
export async function waitReady(hub, within = 15000) {
  const deadline = Date.now() + within;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`http://${hub.adminAddr}/readyz`);
      if (response.status === 200) return;
    } catch {
      // Not yet.
    }
    await sleep(100);
  }
  throw new Error(`hub ${hub.addr} not ready within ${within} ms`);
}

/** An HS256 JWT, as the hub verifies them. */
export function signToken(secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const signature = createHmac("sha256", secret).update(head).digest("base64url");
  return `${head}.${signature}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `predicate()` is true, checking every 20 ms; rejects after `within` ms. */
export async function until(predicate, within = 10000, what = "condition") {
  const deadline = Date.now() + within;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Resolves with the next value of `event` on a Switchboard client. */
export function next(sb, event, within = 10000) {
  return new Promise((resolveEvent, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} within ${within} ms`));
    }, within);
    const off = sb.on(event, (value) => {
      clearTimeout(timer);
      off();
      resolveEvent(value);
    });
  });
}
