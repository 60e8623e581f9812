// Types of switchboard.js, the Switchboard hub's client (protocol switchboard.v1).

export declare const PROTOCOL: "switchboard.v1";

export type Scope = "worker" | "node" | "cluster";

export interface MessageFrame {
  op: "message";
  room: string;
  data: unknown;
  /** The publisher's session id, `admin` or `http`. */
  from: string;
  user?: string;
  /** History rooms only: the message's place in the room. */
  offset?: number;
  epoch?: string;
}

export interface GapInfo {
  room: string;
  /**
   * `not_recovered`: the hub no longer holds what was missed (or the history was lost: a new
   * epoch); `gap`: the hub said messages may have been missed; `reconnected`: a room without
   * history was away while the connection was down.
   */
  reason: "not_recovered" | "gap" | "reconnected";
  epoch?: string;
  offset?: number;
}

export interface MemberEvent {
  op: "join" | "leave";
  room: string;
  session: string;
  user?: string;
}

export interface SubscribeHandlers {
  onMessage?: (message: MessageFrame) => void;
  onGap?: (gap: GapInfo) => void;
  onJoin?: (event: MemberEvent) => void;
  onLeave?: (event: MemberEvent) => void;
  /** Each time the hub acknowledged the subscribe (after every reconnect too). */
  onSubscribed?: (ack: Record<string, unknown>) => void;
  /** The hub refused the subscribe (`forbidden`, `invalid_room`, ...); the room is dropped. */
  onError?: (error: SwitchboardError) => void;
}

export interface SwitchboardOptions {
  /** A token for the first connection (sent as the `token` query parameter). */
  token?: string;
  /** Asked for a token before later connections and before the current one expires. */
  getToken?: () => string | Promise<string>;
  /** WebSocket subprotocols; default `switchboard.v1`. */
  protocols?: string | string[];
  /** A WebSocket constructor; default the global `WebSocket`. */
  WebSocket?: unknown;
  /** First reconnect delay in ms (default 250). */
  minDelay?: number;
  /** Largest reconnect delay in ms (default 10000). */
  maxDelay?: number;
  /** Ms before an unanswered request rejects with `timeout` (default 10000). */
  requestTimeout?: number;
  /** Connect at once (default true); otherwise call `connect()`. */
  autoConnect?: boolean;
}

export interface Welcome {
  op: "welcome";
  session: string;
  node: string;
  worker: number;
  protocol: "switchboard.v1";
  heartbeat: number;
  user?: string;
}

export interface Events {
  connecting: { url: string; attempt: number };
  connected: Welcome;
  disconnected: { code: number; reason: string; willReconnect: boolean; delay?: number };
  error: Error;
}

export declare class SwitchboardError extends Error {
  /** The hub's error code, or the client's own: `disconnected`, `timeout`, `closed`. */
  code: string;
  /** The HTTP status of a refused handshake. */
  status?: number;
  frame?: Record<string, unknown>;
  constructor(code: string, message: string, frame?: Record<string, unknown>);
}

export declare class Subscription {
  readonly room: string;
  readonly active: boolean;
  unsubscribe(): void;
}

export declare class Switchboard {
  constructor(url: string | string[], options?: SwitchboardOptions);
  readonly state: "idle" | "connecting" | "connected" | "closed";
  readonly connected: boolean;
  readonly welcome: Welcome | null;
  on<K extends keyof Events>(event: K, listener: (value: Events[K]) => void): () => void;
  off<K extends keyof Events>(event: K, listener: (value: Events[K]) => void): void;
  connect(): void;
  close(): void;
  subscribe(room: string, handlers?: SubscribeHandlers): Subscription;
  publish(room: string, data: unknown, options?: { scope?: Scope }): Promise<{ offset?: number; epoch?: string }>;
  history(room: string, limit?: number): Promise<MessageFrame[]>;
  presence(room: string): Promise<{ session: string; user?: string; node?: string }[]>;
  ping(): Promise<number>;
}

export default Switchboard;
