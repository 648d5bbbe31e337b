// One authenticated WebSocket connection to a Courier gateway (`/v1/ws`): one
// binary message per protobuf frame, Hello first, heartbeats at the interval the
// Welcome names, requests matched to answers by `request_id`. Unsolicited frames
// (Deliver, read receipts, presence, Kick) go to `onFrame`. Sessions that survive
// reconnects are built on top of this.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ErrorCode,
  FrameSchema,
  HeartbeatSchema,
  HelloSchema,
  Platform,
  type Frame,
  type Welcome,
} from "./gen/courier_pb.js";

/** The protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;
/** The WebSocket subprotocol Courier answers to. */
export const SUBPROTOCOL = "courier.v1";

/** The part of the WebSocket API the SDK uses (a browser's, or `ws` in Node). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** Makes a WebSocket; defaults to the global one. */
export type WebSocketFactory = (url: string, protocols: string[]) => WebSocketLike;

/** An error the server answered, or the connection's end. */
export class CourierError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly retryAfterMs = 0,
  ) {
    super(`${ErrorCode[code] ?? code}: ${message}`);
    this.name = "CourierError";
  }
}

export interface ConnectOptions {
  /** Stable per installation. */
  deviceId: string;
  platform?: Platform;
  /** How long a request waits for its answer. */
  requestTimeoutMs?: number;
  webSocket?: WebSocketFactory;
}

type Kind = NonNullable<Frame["kind"]>;
type Waiter = { resolve: (f: Frame) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };

/** Frames as bytes: a WebSocket message's data as a Uint8Array, whatever gave it. */
async function bytesOf(data: unknown): Promise<Uint8Array> {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (typeof Blob !== "undefined" && data instanceof Blob) return new Uint8Array(await data.arrayBuffer());
  throw new CourierError(ErrorCode.MALFORMED_FRAME, "a text or unknown WebSocket message");
}

export class Connection {
  /** Unsolicited frames (Deliver, ReadReceipt, PresenceBatch, ...). */
  onFrame: (frame: Frame) => void = () => {};
  /** The connection ended (`kick` when the server said why). */
  onClose: (why: CourierError) => void = () => {};

  private nextId = 1n;
  private readonly waiting = new Map<bigint, Waiter>();
  private heartbeat?: ReturnType<typeof setInterval>;
  private closed?: CourierError;

  private constructor(
    private readonly ws: WebSocketLike,
    readonly welcome: Welcome,
    private readonly requestTimeoutMs: number,
  ) {}

  /** Opens `url` (`ws(s)://host:port/v1/ws`) and says Hello with `token`. */
  static open(url: string, token: string, options: ConnectOptions): Promise<Connection> {
    const factory =
      options.webSocket ??
      ((u: string, p: string[]) => new (globalThis as unknown as { WebSocket: new (u: string, p: string[]) => WebSocketLike }).WebSocket(u, p));
    const ws = factory(url, [SUBPROTOCOL]);
    ws.binaryType = "arraybuffer";
    const timeout = options.requestTimeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      let connection: Connection | undefined;
      const fail = (e: CourierError) => {
        if (connection) connection.end(e);
        else reject(e);
      };
      const timer = setTimeout(() => {
        fail(new CourierError(ErrorCode.HANDSHAKE_TIMEOUT, "no Welcome in time"));
        ws.close();
      }, timeout);
      ws.onopen = () => {
        const hello = create(FrameSchema, {
          requestId: 1n,
          kind: {
            case: "hello",
            value: create(HelloSchema, {
              protocolVersion: PROTOCOL_VERSION,
              deviceId: options.deviceId,
              platform: options.platform ?? Platform.WEB,
              token,
              clientVersion: "courier-sdk-ts/0.1.0",
            }),
          },
        });
        ws.send(toBinary(FrameSchema, hello));
      };
      ws.onmessage = (ev) => {
        void bytesOf(ev.data).then(
          (bytes) => {
            const frame = fromBinary(FrameSchema, bytes);
            if (connection) return connection.received(frame);
            clearTimeout(timer);
            switch (frame.kind.case) {
              case "welcome":
                connection = new Connection(ws, frame.kind.value, timeout);
                connection.startHeartbeat();
                return resolve(connection);
              case "error":
                return reject(new CourierError(frame.kind.value.code, frame.kind.value.message, frame.kind.value.retryAfterMs));
              case "kick":
                return reject(new CourierError(frame.kind.value.code, frame.kind.value.reason));
              default:
                return reject(new CourierError(ErrorCode.PROTOCOL_VIOLATION, `${frame.kind.case} before Welcome`));
            }
          },
          (e: CourierError) => fail(e),
        );
      };
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        clearTimeout(timer);
        fail(new CourierError(ErrorCode.UNSPECIFIED, `connection closed (${ev.code} ${ev.reason})`));
      };
    });
  }

  /** The signed-in user's id. */
  get userId(): bigint {
    return this.welcome.userId;
  }

  /** Sends a request and resolves with its answer (an Error answer rejects). */
  request(kind: Kind): Promise<Frame> {
    if (this.closed) return Promise.reject(this.closed);
    this.nextId += 1n;
    const requestId = this.nextId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(requestId);
        reject(new CourierError(ErrorCode.UNSPECIFIED, "no answer in time"));
      }, this.requestTimeoutMs);
      this.waiting.set(requestId, { resolve, reject, timer });
      this.ws.send(toBinary(FrameSchema, create(FrameSchema, { requestId, kind })));
    });
  }

  /** Sends a frame that has no answer (DeliveryAck, ReadReport). */
  tell(kind: Kind): void {
    if (!this.closed) this.ws.send(toBinary(FrameSchema, create(FrameSchema, { kind })));
  }

  /** Closes the connection. */
  close(): void {
    this.end(new CourierError(ErrorCode.UNSPECIFIED, "closed by the client"));
    this.ws.close(1000);
  }

  private startHeartbeat(): void {
    const every = Math.max(1_000, this.welcome.heartbeatIntervalMs || 30_000);
    this.heartbeat = setInterval(() => {
      this.tell({ case: "heartbeat", value: create(HeartbeatSchema, { clientTimeMs: BigInt(Date.now()) }) });
    }, every);
    this.ws.onclose = (ev) => this.end(new CourierError(ErrorCode.UNSPECIFIED, `connection closed (${ev.code} ${ev.reason})`));
  }

  private received(frame: Frame): void {
    const waiter = frame.requestId ? this.waiting.get(frame.requestId) : undefined;
    if (waiter) {
      this.waiting.delete(frame.requestId);
      clearTimeout(waiter.timer);
      if (frame.kind.case === "error") {
        const e = frame.kind.value;
        waiter.reject(new CourierError(e.code, e.message, e.retryAfterMs));
      } else {
        waiter.resolve(frame);
      }
      return;
    }
    if (frame.kind.case === "kick") {
      this.end(new CourierError(frame.kind.value.code, frame.kind.value.reason));
      return;
    }
    if (frame.kind.case !== "heartbeatAck") this.onFrame(frame);
  }

  private end(why: CourierError): void {
    if (this.closed) return;
    this.closed = why;
    clearInterval(this.heartbeat);
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(why);
    }
    this.waiting.clear();
    this.onClose(why);
  }
}
