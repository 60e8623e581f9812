// Switchboard client: one WebSocket session to a Switchboard hub (protocol `switchboard.v1`),
// kept alive across network failures and node restarts.
//
// What it does for the application, so that no message is lost in a hand-written reconnect loop:
// - reconnects with capped, jittered exponential backoff, trying each given URL in turn;
// - subscribes again to every room after a reconnect;
// - recovers history rooms from the last offset/epoch it delivered: missed messages are delivered
//   in order, each once; when the hub cannot recover them (or says `gap`, or a room without
//   history was away), `onGap` is called so the application can reload;
// - never reconnects after 4001 (kicked), 4002 (token expired) unless `getToken` gives a new
//   token, a 4500-4999 close, or a handshake the hub refused with a 4xx status;
// - refreshes its token before `exp` when `getToken` is given;
// - detects a dead connection (no frame for twice the hub's heartbeat) and replaces it.
//
// Publishes, history and presence requests made while disconnected are rejected at once with
// code `disconnected`: nothing is queued out of sight.
//
// Works in browsers and in Node.js 20+ (its global `WebSocket` where it has one, or a
// constructor passed as `options.WebSocket`, e.g. from the `ws` package). No dependencies.

/** @typedef {"worker" | "node" | "cluster"} Scope */

/**
 * @typedef {object} MessageFrame
 * @property {"message"} op
 * @property {string} room
 * @property {any} data
 * @property {string} from
 * @property {string} [user]
 * @property {number} [offset]
 * @property {string} [epoch]
 */

/**
 * @typedef {object} GapInfo
 * @property {string} room
 * @property {"not_recovered" | "gap" | "reconnected"} reason
 *   `not_recovered`: the hub no longer holds what was missed (or its history was lost: a new
 *   epoch); `gap`: the hub said messages may have been missed; `reconnected`: a room without
 *   history was away while the connection was down.
 * @property {string} [epoch] the room's current epoch, when known
 * @property {number} [offset] the room's latest offset, when known
 */

/**
 * @typedef {object} SubscribeHandlers
 * @property {(message: MessageFrame) => void} [onMessage]
 * @property {(gap: GapInfo) => void} [onGap]
 * @property {(event: {room: string, session: string, user?: string}) => void} [onJoin]
 * @property {(event: {room: string, session: string, user?: string}) => void} [onLeave]
 * @property {(ack: object) => void} [onSubscribed] each time the hub acknowledged the subscribe
 * @property {(error: SwitchboardError) => void} [onError] the hub refused the subscribe
 */

/**
 * @typedef {object} SwitchboardOptions
 * @property {string} [token] a token for the first connection
 * @property {() => (string | Promise<string>)} [getToken] asked for a token before every
 *   connection after the first (or every one, without `token`) and before the token expires
 * @property {string | string[]} [protocols] WebSocket subprotocols (default `switchboard.v1`)
 * @property {any} [WebSocket] a WebSocket constructor (default: the global one)
 * @property {number} [minDelay] first reconnect delay in ms (default 250)
 * @property {number} [maxDelay] largest reconnect delay in ms (default 10000)
 * @property {number} [requestTimeout] ms before a request without answer rejects (default 10000)
 * @property {boolean} [autoConnect] connect at once (default true); otherwise call `connect()`
 */

/** The protocol's name, offered as the WebSocket subprotocol. */
export const PROTOCOL = "switchboard.v1";

/** An error the hub answered (its `code` and `message`), or one of the client's own codes. */
export class SwitchboardError extends Error {
  /**
   * @param {string} code the hub's error code, or `disconnected`, `timeout`, `closed`
   * @param {string} message
   * @param {object} [frame] the hub's frame, when it came from one
   */
  constructor(code, message, frame) {
    super(message ? `${code}: ${message}` : code);
    this.name = "SwitchboardError";
    this.code = code;
    this.frame = frame;
  }
}

/** One application's interest in a room; `unsubscribe()` ends it. */
class Subscription {
  /**
   * @param {Switchboard} client
   * @param {string} room
   * @param {SubscribeHandlers} handlers
   */
  constructor(client, room, handlers) {
    this.client = client;
    this.room = room;
    this.handlers = handlers;
    this.active = true;
  }

  /** Stops the handlers; the room is left when its last subscription ends. */
  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this.client._drop(this);
  }
}

/** Close codes after which the client does not reconnect as it is. */
const KICKED = 4001;
const TOKEN_EXPIRED = 4002;

export class Switchboard {
  /**
   * @param {string | string[]} url a `ws://` or `wss://` URL of a hub endpoint, or several tried
   *   in turn on every reconnect (nodes of one cluster)
   * @param {SwitchboardOptions} [options]
   */
  constructor(url, options = {}) {
    this.urls = (Array.isArray(url) ? url : [url]).filter(Boolean);
    if (this.urls.length === 0) throw new TypeError("Switchboard: no URL given");
    this.options = options;
    this.token = options.token;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError("Switchboard: no WebSocket constructor (pass options.WebSocket)");
    }
    this.minDelay = options.minDelay ?? 250;
    this.maxDelay = options.maxDelay ?? 10000;
    this.requestTimeout = options.requestTimeout ?? 10000;
    /** @type {"idle" | "connecting" | "connected" | "closed"} */
    this.state = "idle";
    /** The hub's welcome frame of the current session (`session`, `node`, `user`, ...). */
    this.welcome = null;
    /** Which of `urls` the next connection tries. */
    this.urlIndex = 0;
    this.attempt = 0;
    this.nextId = 1;
    /** @type {Map<number, {resolve: Function, reject: Function, timer: any, onAck?: Function}>} */
    this.pending = new Map();
    /**
     * Rooms the application is in: their subscriptions, and for history rooms the position of
     * the last message delivered (what a reconnect recovers from).
     * @type {Map<string, {subs: Set<Subscription>, epoch?: string, offset?: number, history: boolean, acked: boolean}>}
     */
    this.rooms = new Map();
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
    this.ws = null;
    this.timers = { reconnect: null, heartbeat: null, refresh: null };
    this.lastHeard = 0;
    // On the next tick, so that listeners added right after construction see `connecting`.
    if (options.autoConnect !== false) queueMicrotask(() => this.connect());
  }

  // ---- events -------------------------------------------------------------------------------

  /**
   * Adds a listener: `connecting` ({url, attempt}), `connected` (the welcome frame),
   * `disconnected` ({code, reason, willReconnect}), `error` (an Error or SwitchboardError).
   * @returns {() => void} a function that removes it
   */
  on(event, listener) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }

  _emit(event, value) {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      try {
        listener(value);
      } catch (e) {
        // An application's listener must not break the client's own bookkeeping.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  // ---- connection ---------------------------------------------------------------------------

  /** Opens the connection (called by the constructor unless `autoConnect` is false). */
  connect() {
    if (this.state === "closed" || this.ws) return;
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    this._open();
  }

  async _open() {
    this.state = "connecting";
    const url = this.urls[this.urlIndex % this.urls.length];
    this.urlIndex += 1;
    this.attempt += 1;
    this._emit("connecting", { url, attempt: this.attempt });
    let token = this.token;
    if (this.options.getToken && (token === undefined || this.tokenUsed)) {
      try {
        token = await this.options.getToken();
      } catch (e) {
        this._emit("error", e);
        return this._schedule({ code: 0, reason: "getToken failed" });
      }
      if (this.state === "closed") return;
      this.token = token;
    }
    this.tokenUsed = true;
    const target = withToken(url, token);
    let ws;
    try {
      ws = new this.WebSocket(target, this.options.protocols ?? PROTOCOL);
    } catch (e) {
      // A malformed URL is the application's mistake: trying again cannot help.
      this._emit("error", e);
      return this._stop({ code: 0, reason: String(e?.message ?? e) });
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.lastHeard = Date.now();
    };
    ws.onmessage = (event) => this._receive(event.data);
    const ended = (code, reason) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this._closed(code, reason, opened, target);
    };
    ws.onerror = () => {
      // Browsers follow an error with a close event, which has the details a page may see;
      // some WebSocket implementations (Node 20's) send none when the connection failed.
      setTimeout(() => ended(1006, "connection failed"), opened ? 1000 : 0);
    };
    ws.onclose = (event) => ended(event.code, event.reason);
  }

  async _closed(code, reason, opened, target) {
    this._teardown(new SwitchboardError("disconnected", "the connection closed"));
    if (this.state === "closed") {
      this._emit("disconnected", { code, reason, willReconnect: false });
      return;
    }
    if (!opened) {
      // A handshake the hub refused looks like any network failure to a WebSocket (1006).
      // Asking the same URL over plain HTTP tells them apart: the hub answers it with the
      // refusal the handshake got (401, 403, 404, ...), or 426 when the upgrade would pass.
      const refusal = await probe(target);
      if (this.state === "closed") return;
      if (refusal) {
        const error = new SwitchboardError(refusal.code, refusal.message);
        error.status = refusal.status;
        this._emit("error", error);
        if (refusal.status === 401 && this.options.getToken) {
          return this._schedule({ code: refusal.status, reason: refusal.message });
        }
        return this._stop({ code: refusal.status, reason: refusal.message });
      }
    }
    if (code === KICKED || (code >= 4500 && code <= 4999)) {
      return this._stop({ code, reason });
    }
    if (code === TOKEN_EXPIRED && !this.options.getToken) {
      return this._stop({ code, reason });
    }
    this._schedule({ code, reason });
  }

  /** Waits (backoff with jitter) and connects again. */
  _schedule({ code, reason }) {
    this.state = "connecting";
    const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** Math.min(this.attempt, 16));
    // "Full jitter": a fleet disconnected at once does not come back at once.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this._emit("disconnected", { code, reason, willReconnect: true, delay });
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => {
      this.timers.reconnect = null;
      if (this.state !== "closed" && !this.ws) this._open();
    }, delay);
  }

  _stop({ code, reason }) {
    this.state = "closed";
    this._teardown(new SwitchboardError("closed", "the client is closed"));
    this._emit("disconnected", { code, reason, willReconnect: false });
  }

  /** Ends what belonged to the connection: pending requests, timers. */
  _teardown(error) {
    this.welcome = null;
    clearInterval(this.timers.heartbeat);
    clearTimeout(this.timers.refresh);
    this.timers.heartbeat = this.timers.refresh = null;
    for (const [, request] of this.pending) {
      clearTimeout(request.timer);
      request.reject(error);
    }
    this.pending.clear();
    for (const room of this.rooms.values()) room.acked = false;
  }

  /** Closes the connection for good: no reconnect; pending requests reject with `closed`. */
  close() {
    if (this.state === "closed") return;
    this.state = "closed";
    clearTimeout(this.timers.reconnect);
    const ws = this.ws;
    this.ws = null;
    this._teardown(new SwitchboardError("closed", "the client is closed"));
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        // Already closing.
      }
    }
    this._emit("disconnected", { code: 1000, reason: "closed by the client", willReconnect: false });
  }

  /** Whether a session is open (requests can be made). */
  get connected() {
    return this.state === "connected";
  }

  // ---- frames from the hub ------------------------------------------------------------------

  _receive(text) {
    this.lastHeard = Date.now();
    if (typeof text !== "string") return;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    switch (frame.op) {
      case "welcome":
        return this._welcomed(frame);
      case "message":
        return this._message(frame);
      case "ack":
      case "pong":
      case "history":
      case "presence":
        return this._answer(frame);
      case "error":
        if (frame.id == null) {
          this._emit("error", new SwitchboardError(frame.code, frame.message, frame));
          return;
        }
        return this._answer(frame);
      case "gap": {
        const room = this.rooms.get(frame.room);
        if (room) this._gap(room, frame.room, { reason: "gap" });
        return;
      }
      case "join":
      case "leave": {
        const room = this.rooms.get(frame.room);
        if (!room) return;
        const key = frame.op === "join" ? "onJoin" : "onLeave";
        for (const sub of room.subs) call(sub.handlers[key], frame);
        return;
      }
      default:
      // Unknown frames are ignored (forward compatibility).
    }
  }

  _welcomed(frame) {
    this.welcome = frame;
    this.state = "connected";
    this.attempt = 0;
    this._emit("connected", frame);
    // The hub pings every `heartbeat` seconds, which a browser's WebSocket answers out of sight;
    // a ping of our own when it has been quiet shows the path still works.
    const period = Math.max(0.5, Number(frame.heartbeat) || 25) * 1000;
    this.timers.heartbeat = setInterval(() => this._checkAlive(period), Math.min(period, 5000));
    for (const [name, room] of this.rooms) this._subscribeWire(name, room, true);
    this._scheduleRefresh();
  }

  _checkAlive(period) {
    const quiet = Date.now() - this.lastHeard;
    if (quiet > 2 * period + 1000) {
      // Nothing heard, not even the answer to our ping: the connection is dead.
      this.ws?.close(4003, "heartbeat timeout");
      const ws = this.ws;
      this.ws = null;
      if (ws) this._closed(1006, "heartbeat timeout", true, "");
    } else if (quiet > period) {
      this._send({ op: "ping" });
    }
  }

  _message(frame) {
    const room = this.rooms.get(frame.room);
    if (!room) return;
    if (typeof frame.offset === "number") {
      room.history = true;
      if (frame.epoch === room.epoch && room.offset !== undefined && frame.offset <= room.offset) {
        return; // Already delivered (a replay overlapping what arrived live).
      }
      room.epoch = frame.epoch;
      room.offset = frame.offset;
    }
    for (const sub of room.subs) call(sub.handlers.onMessage, frame);
  }

  _gap(room, name, info) {
    const gap = { room: name, ...info };
    for (const sub of room.subs) call(sub.handlers.onGap, gap);
  }

  _answer(frame) {
    const request = this.pending.get(frame.id);
    if (!request) return;
    this.pending.delete(frame.id);
    clearTimeout(request.timer);
    if (frame.op === "error") {
      request.reject(new SwitchboardError(frame.code, frame.message, frame));
    } else {
      request.resolve(frame);
    }
  }

  // ---- requests -----------------------------------------------------------------------------

  _send(frame) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /** Sends a request with an id; resolves with the hub's answer frame, rejects on `error`. */
  _request(frame) {
    if (this.state !== "connected") {
      return Promise.reject(new SwitchboardError("disconnected", "not connected to the hub"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SwitchboardError("timeout", `no answer within ${this.requestTimeout} ms`));
      }, this.requestTimeout);
      this.pending.set(id, { resolve, reject, timer });
      if (!this._send({ ...frame, id })) {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(new SwitchboardError("disconnected", "not connected to the hub"));
      }
    });
  }

  /**
   * Joins `room` (at once if connected, otherwise on the next connection) and keeps it joined
   * across reconnects.
   * @param {string} room
   * @param {SubscribeHandlers} [handlers]
   * @returns {Subscription}
   */
  subscribe(room, handlers = {}) {
    const sub = new Subscription(this, room, handlers);
    let entry = this.rooms.get(room);
    if (!entry) {
      entry = { subs: new Set(), history: false, acked: false };
      this.rooms.set(room, entry);
      entry.subs.add(sub);
      if (this.state === "connected") this._subscribeWire(room, entry, false);
    } else {
      entry.subs.add(sub);
      if (entry.acked) queueMicrotask(() => call(handlers.onSubscribed, { room }));
    }
    return sub;
  }

  /** Subscribes on the wire, recovering from the room's last position when it has one. */
  _subscribeWire(name, room, reconnecting) {
    const frame = { op: "subscribe", room: name };
    const recovering = room.epoch !== undefined && room.offset !== undefined;
    if (recovering) frame.recover = { epoch: room.epoch, offset: room.offset };
    const wasAway = reconnecting && room.seen;
    this._request(frame).then(
      (ack) => {
        if (this.rooms.get(name) !== room) return;
        room.acked = true;
        room.seen = true;
        if (typeof ack.offset === "number") room.history = true;
        if (ack.recovered === true) {
          // The missed messages follow; they move the position as they are delivered.
        } else {
          if (recovering || (wasAway && !room.history)) {
            const gap = { reason: recovering ? "not_recovered" : "reconnected" };
            if (typeof ack.offset === "number") {
              gap.epoch = ack.epoch;
              gap.offset = ack.offset;
            }
            this._gap(room, name, gap);
          }
          if (typeof ack.offset === "number") {
            // The first message the member receives is the one after this position.
            room.epoch = ack.epoch;
            room.offset = ack.offset;
          }
        }
        for (const sub of room.subs) call(sub.handlers.onSubscribed, ack);
      },
      (error) => {
        if (error.code === "disconnected" || error.code === "closed") return;
        if (error.code === "timeout") {
          // The subscribe may or may not have been handled: start the session again.
          this.ws?.close(4000, "subscribe timed out");
          return;
        }
        if (this.rooms.get(name) !== room) return;
        // The hub refused the room (forbidden, invalid_room, limit_exceeded ...): it stays
        // refused after a reconnect too, so the room is dropped.
        this.rooms.delete(name);
        for (const sub of room.subs) {
          sub.active = false;
          call(sub.handlers.onError, error);
        }
        this._emit("error", error);
      },
    );
  }

  /** Called by `Subscription.unsubscribe()`. */
  _drop(sub) {
    const room = this.rooms.get(sub.room);
    if (!room || !room.subs.delete(sub) || room.subs.size > 0) return;
    this.rooms.delete(sub.room);
    if (this.state === "connected") {
      this._request({ op: "unsubscribe", room: sub.room }).catch(() => {
        // Not subscribed (yet) or disconnected: either way the session is not in the room.
      });
    }
  }

  /**
   * Publishes `data` to `room`. Resolves on the hub's ack (with `offset` and `epoch` in a
   * history room); rejects with a SwitchboardError whose `code` is the hub's error code, or
   * `disconnected` at once when there is no session.
   * @param {string} room
   * @param {any} data any JSON value
   * @param {{scope?: Scope}} [options]
   * @returns {Promise<{offset?: number, epoch?: string}>}
   */
  async publish(room, data, options = {}) {
    const frame = { op: "publish", room, data };
    if (options.scope) frame.scope = options.scope;
    const ack = await this._request(frame);
    const result = {};
    if (typeof ack.offset === "number") {
      result.offset = ack.offset;
      result.epoch = ack.epoch;
    }
    return result;
  }

  /**
   * The last `limit` messages of a history room, oldest first.
   * @param {string} room
   * @param {number} [limit]
   * @returns {Promise<MessageFrame[]>}
   */
  async history(room, limit) {
    const frame = { op: "history", room };
    if (limit !== undefined) frame.limit = limit;
    const answer = await this._request(frame);
    return answer.messages ?? [];
  }

  /**
   * Who is in a room with presence: one entry per session.
   * @param {string} room
   * @returns {Promise<{session: string, user?: string, node?: string}[]>}
   */
  async presence(room) {
    const answer = await this._request({ op: "presence", room });
    return answer.members ?? [];
  }

  /** An application-level round trip; resolves with the time it took in ms. */
  async ping() {
    const start = Date.now();
    await this._request({ op: "ping" });
    return Date.now() - start;
  }

  // ---- tokens -------------------------------------------------------------------------------

  /** With `getToken`, asks for a new token shortly before the current one expires. */
  _scheduleRefresh() {
    clearTimeout(this.timers.refresh);
    this.timers.refresh = null;
    if (!this.options.getToken) return;
    const exp = tokenExpiry(this.token);
    if (exp === undefined) return;
    const left = exp * 1000 - Date.now();
    // A minute early, or a fifth of a short token's life; never in the past.
    const margin = Math.min(60_000, Math.max(left / 5, 1000));
    this.timers.refresh = setTimeout(() => this._refresh(), Math.max(0, left - margin));
  }

  async _refresh() {
    try {
      const token = await this.options.getToken();
      if (this.state !== "connected") return;
      await this._request({ op: "refresh", token });
      this.token = token;
      this._scheduleRefresh();
    } catch (e) {
      // The session closes with 4002 at `exp`; the reconnect asks `getToken` again.
      this._emit("error", e);
    }
  }
}

/** Calls an application handler, keeping its exceptions away from the client. */
function call(handler, value) {
  if (typeof handler !== "function") return;
  try {
    handler(value);
  } catch (e) {
    queueMicrotask(() => {
      throw e;
    });
  }
}

/** `url` with `token` as its `token` query parameter (browsers cannot set headers). */
function withToken(url, token) {
  if (!token) return url;
  const u = new URL(url);
  u.searchParams.set("token", token);
  return u.toString();
}

/** The `exp` claim of a JWT, without checking it (the hub does). */
function tokenExpiry(token) {
  if (typeof token !== "string") return undefined;
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Asks the endpoint over HTTP why a handshake failed. Returns `{status, code, message}` when the
 * hub refuses the request for good (4xx but 408, 426 and 429), otherwise null (the failure was
 * the network, a busy node, or cannot be known: a page of another origin may be denied the
 * answer).
 */
async function probe(target) {
  if (typeof fetch !== "function" || !target) return null;
  let url;
  try {
    url = new URL(target);
    url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  } catch {
    return null;
  }
  const controller = typeof AbortController === "function" ? new AbortController() : null;
  const timer = controller ? setTimeout(() => controller.abort(), 3000) : null;
  try {
    const response = await fetch(url, { signal: controller?.signal, cache: "no-store" });
    const status = response.status;
    if (status < 400 || status >= 500 || status === 408 || status === 426 || status === 429) {
      return null;
    }
    let code = `http_${status}`;
    let message = response.statusText || "";
    try {
      const body = await response.json();
      if (body?.error?.code) code = body.error.code;
      if (body?.error?.message) message = body.error.message;
    } catch {
      // Not the hub's JSON: keep the status.
    }
    return { status, code, message };
  } catch {
    return null;
  } finally {
    if (timer) clearTimeout(timer);
  }
}

export default Switchboard;
