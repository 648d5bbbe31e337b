// A session that outlives its connections: it reconnects with backoff and jitter,
// resends what was not acknowledged (same client_msg_id, so each is stored once),
// resyncs from its per-conversation cursors, and hands the app each message exactly
// once and in seq order, filling gaps by pulling history. Cursors live in a
// pluggable store (memory here; IndexedDB in browsers, see `cursors.ts`).

import { create } from "@bufbuild/protobuf";
import {
  CursorSchema,
  Direction,
  ErrorCode,
  SyncRequestSchema,
  HiddenSchema,
  type Message,
  type HistoryPage,
  type MessageBody,
  type PresenceChange,
  type TypingNotice,
  type ReadReceipt,
  type EditAck,
  type Hidden,
  type JoinRequested,
  type ReactAck,
  type RecallAck,
  type SendAck,
} from "./gen/courier_pb.js";
import { Client, newClientMsgId, textBody } from "./client.js";
import { CourierError, type ConnectOptions } from "./connection.js";
import { MemoryCursors, type CursorStore } from "./cursors.js";

export interface SessionOptions extends ConnectOptions {
  /** Where cursors persist (default: memory). */
  cursors?: CursorStore;
  /** A conversation first seen with at most this many messages is handed over whole;
   * a longer one from its newest message on (older ones are history to page). */
  backfillLimit?: number;
  /** History page size when filling gaps. */
  pageSize?: number;
  /** Reconnect backoff: first wait and cap, in ms (each wait is jittered). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
}

/** Codes after which reconnecting cannot help. */
const FATAL = new Set([
  ErrorCode.BAD_TOKEN,
  ErrorCode.UNAUTHENTICATED,
  ErrorCode.UNSUPPORTED_VERSION,
  ErrorCode.DEVICE_LIMIT,
  ErrorCode.LOGGED_OUT,
  ErrorCode.BANNED,
  ErrorCode.REPLACED,
]);

/** Codes a send may be retried after (on this connection or the next). */
const RETRYABLE = new Set([
  ErrorCode.UNSPECIFIED,
  ErrorCode.RATE_LIMITED,
  ErrorCode.OVERLOADED,
  ErrorCode.TOO_MANY_IN_FLIGHT,
  ErrorCode.REQUEST_TIMEOUT,
  ErrorCode.STORAGE_UNAVAILABLE,
  ErrorCode.GOING_AWAY,
]);

interface Pending {
  conversation: string;
  body: MessageBody;
  clientMsgId: string;
  resolve: (ack: SendAck) => void;
  reject: (e: Error) => void;
  sending: boolean;
}

export type SessionState = "online" | "offline" | "ended";

export class Session {
  /** Each message once, in seq order per conversation. */
  onMessage: (m: Message) => void = () => {};
  /** Read receipts (the peer's, and this user's other devices'). */
  onReadReceipt: (r: ReadReceipt) => void = () => {};
  /** Watched users came online or went offline. */
  onPresence: (changes: PresenceChange[]) => void = () => {};
  /** Someone is typing in a conversation (or stopped). */
  onTyping: (t: TypingNotice) => void = () => {};
  /** This user's view of a conversation changed on another device (see `Client.hide`);
   * after a reconnect, sync's changed views arrive here too. */
  onHidden: (h: Hidden) => void = () => {};
  /** Someone asks to join a group this user owns or administers. */
  onJoinRequested: (j: JoinRequested) => void = () => {};
  /** Online, offline (reconnecting), or ended for good (with why). */
  onState: (state: SessionState, why?: CourierError) => void = () => {};

  private client?: Client;
  /** The newest view version a sync told of (see `SyncRequest.view_version`). */
  private viewVersion = 0n;
  private readonly cursors = new Map<string, bigint>();
  /** Messages past a gap, by conversation and seq, until the gap is filled. */
  private readonly held = new Map<string, Map<bigint, Message | null>>();
  private readonly pending = new Map<string, Pending>();
  /** Work on incoming messages and fills, one at a time. */
  private work: Promise<void> = Promise.resolve();
  private ended?: CourierError;
  /** A connect (the first, or the reconnect loop) is under way. */
  private connecting = false;
  private userId = 0n;
  /** Presence subscriptions to renew on each connection: users, lease, when set. */
  private watching?: { users: bigint[]; leaseMs: number; sinceMs: number };

  private constructor(
    private readonly url: string,
    private readonly token: string,
    private readonly options: SessionOptions,
    private readonly store: CursorStore,
  ) {}

  /** Connects (the first connection must succeed) and resyncs from the stored cursors. */
  static async start(url: string, token: string, options: SessionOptions): Promise<Session> {
    const store = options.cursors ?? new MemoryCursors();
    const session = new Session(url, token, options, store);
    for (const [c, seq] of await store.load()) session.cursors.set(c, seq);
    session.connecting = true;
    try {
      await session.connect();
    } catch (e) {
      session.end(e instanceof CourierError ? e : new CourierError(ErrorCode.UNSPECIFIED, String(e)));
      throw e;
    } finally {
      session.connecting = false;
    }
    return session;
  }

  /** The signed-in user's id. */
  get user(): bigint {
    return this.userId;
  }

  /** The highest seq handed over, per conversation. */
  cursor(conversation: string): bigint {
    return this.cursors.get(conversation) ?? 0n;
  }

  /** Stores a message, however many reconnects that takes; resolves with its ack. */
  send(conversation: string, body: MessageBody, clientMsgId = newClientMsgId()): Promise<SendAck> {
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      const p: Pending = { conversation, body, clientMsgId, resolve, reject, sending: false };
      this.pending.set(clientMsgId, p);
      this.trySend(p);
    });
  }

  sendText(conversation: string, text: string): Promise<SendAck> {
    return this.send(conversation, textBody(text));
  }

  /** Edits one's own text message (see `Client.edit`); needs a connection now. */
  edit(conversation: string, seq: bigint, text: string, mentions: bigint[] = []): Promise<EditAck> {
    return this.online().edit(conversation, seq, text, mentions);
  }

  /** Reacts to a message (see `Client.react`); needs a connection now. */
  react(conversation: string, seq: bigint, emoji: string, remove = false): Promise<ReactAck> {
    return this.online().react(conversation, seq, emoji, remove);
  }

  /** Changes this user's own view of a conversation (see `Client.hide`); needs a
   * connection now. */
  hide(
    conversation: string,
    change: { seqs?: bigint[]; clearThrough?: bigint; deleteConversation?: boolean },
  ): Promise<Hidden> {
    return this.online().hide(conversation, change);
  }

  /** Recalls a message (see `Client.recall`); needs a connection now. */
  recall(conversation: string, seq: bigint): Promise<RecallAck> {
    return this.online().recall(conversation, seq);
  }

  /** A page of history older than `beforeSeq` (0 = the newest), oldest first; needs
   * a connection now. Messages it returns are not handed to `onMessage`. */
  history(conversation: string, beforeSeq: bigint, limit: number): Promise<HistoryPage> {
    return this.online().history(conversation, Direction.BACKWARD, beforeSeq, limit);
  }

  /** Watches `users`' presence for `leaseMs` (renew before it runs out), on this
   * connection and, while the lease lasts, on every reconnect. */
  subscribePresence(users: bigint[], leaseMs: number): void {
    this.watching = { users, leaseMs, sinceMs: Date.now() };
    this.client?.subscribePresence(users, leaseMs);
  }

  /** Tells the conversation this user is typing (or stopped), when online. */
  typing(conversation: string, active: boolean): void {
    this.client?.typing(conversation, active);
  }

  /** Marks `conversation` read up to `seq`, when online (read cursors only move forward). */
  reportRead(conversation: string, seq: bigint): void {
    this.client?.reportRead(conversation, seq);
  }

  private online(): Client {
    if (!this.client) throw this.ended ?? new CourierError(ErrorCode.UNSPECIFIED, "offline; try again once online");
    return this.client;
  }

  /** Ends the session (no reconnect). */
  close(): void {
    this.end(new CourierError(ErrorCode.UNSPECIFIED, "closed by the app"));
  }

  private async connect(): Promise<void> {
    const client = await Client.connect(this.url, this.token, this.options);
    if (this.ended) return client.close();
    this.client = client;
    this.userId = client.userId;
    client.onMessage = (m) => void this.enqueue(() => this.offerOrFill(m)).catch(() => {});
    client.onReadReceipt = (r) => this.onReadReceipt(r);
    client.onPresence = (changes) => this.onPresence(changes);
    client.onTyping = (t) => this.onTyping(t);
    client.onHidden = (h) => this.onHidden(h);
    client.onJoinRequested = (j) => this.onJoinRequested(j);
    client.connection.onClose = (why) => this.lost(client, why);
    try {
      await this.enqueue(() => this.resync(client));
    } catch (e) {
      if (this.client === client) this.client = undefined;
      client.close();
      throw e;
    }
    for (const p of this.pending.values()) this.trySend(p);
    const w = this.watching;
    const leaseLeft = w ? w.sinceMs + w.leaseMs - Date.now() : 0;
    if (w && leaseLeft > 0) client.subscribePresence(w.users, leaseLeft);
    this.onState("online");
  }

  private trySend(p: Pending): void {
    const client = this.client;
    if (!client || p.sending) return;
    p.sending = true;
    client.send(p.conversation, p.body, p.clientMsgId).then(
      (ack) => {
        this.pending.delete(p.clientMsgId);
        p.resolve(ack);
      },
      (e: unknown) => {
        p.sending = false;
        const code = e instanceof CourierError ? e.code : ErrorCode.UNSPECIFIED;
        if (!RETRYABLE.has(code)) {
          this.pending.delete(p.clientMsgId);
          p.reject(e as Error);
        } else if (this.client === client && !this.ended) {
          // Refused for now (rate, overload): again after the server's hint.
          const wait = e instanceof CourierError && e.retryAfterMs ? e.retryAfterMs : 1_000;
          setTimeout(() => this.trySend(p), wait);
        }
      },
    );
  }

  private lost(client: Client, why: CourierError): void {
    if (this.client !== client || this.ended) return;
    this.client = undefined;
    if (FATAL.has(why.code)) {
      this.end(why);
      return;
    }
    this.onState("offline", why);
    if (!this.connecting) void this.reconnect();
  }

  private async reconnect(): Promise<void> {
    this.connecting = true;
    try {
      await this.reconnectLoop();
    } finally {
      this.connecting = false;
    }
  }

  private async reconnectLoop(): Promise<void> {
    const initial = this.options.backoffInitialMs ?? 200;
    const max = this.options.backoffMaxMs ?? 10_000;
    for (let attempt = 0; !this.ended; attempt++) {
      const wait = Math.min(max, initial * 2 ** attempt) * (0.5 + Math.random() / 2);
      await new Promise((r) => setTimeout(r, wait));
      if (this.ended) return;
      try {
        await this.connect();
        return;
      } catch (e) {
        if (e instanceof CourierError && FATAL.has(e.code)) {
          this.end(e);
          return;
        }
      }
    }
  }

  private end(why: CourierError): void {
    if (this.ended) return;
    this.ended = why;
    for (const p of this.pending.values()) p.reject(why);
    this.pending.clear();
    const client = this.client;
    this.client = undefined;
    client?.close();
    this.onState("ended", why);
  }

  private enqueue(job: () => Promise<void>): Promise<void> {
    const next = this.work.then(job, job);
    this.work = next.catch(() => {});
    return next;
  }

  /** After a (re)connect: what changed since the cursors, pulled in order. */
  private async resync(client: Client): Promise<void> {
    const cursors = [...this.cursors].map(([conversation, seq]) => create(CursorSchema, { conversation, seq }));
    let pageToken = "";
    const states = [];
    do {
      const answer = await client.connection.request({
        case: "syncRequest",
        value: create(SyncRequestSchema, { cursors, pageToken, viewVersion: this.viewVersion }),
      });
      if (answer.kind.case !== "syncResponse") throw new CourierError(ErrorCode.PROTOCOL_VIOLATION, "no SyncResponse");
      states.push(...answer.kind.value.conversations);
      pageToken = answer.kind.value.nextPageToken;
      if (answer.kind.value.viewVersion > this.viewVersion) this.viewVersion = answer.kind.value.viewVersion;
    } while (pageToken);
    for (const s of states) {
      if (s.clearedSeq > 0n || s.hidden.length > 0) {
        this.onHidden(create(HiddenSchema, { conversation: s.conversation, seqs: s.hidden, clearedSeq: s.clearedSeq }));
      }
    }
    for (const s of states) {
      if (!this.cursors.has(s.conversation)) this.cursors.set(s.conversation, this.firstCursor(s.lastSeq + 1n));
      if (s.lastSeq > this.cursor(s.conversation)) await this.fill(client, s.conversation);
    }
  }

  /** The cursor of a conversation first seen at `seq`. */
  private firstCursor(seq: bigint): bigint {
    const backfill = BigInt(this.options.backfillLimit ?? 50);
    return seq <= backfill ? 0n : seq - 1n;
  }

  private async offerOrFill(m: Message): Promise<void> {
    if (this.offer(m.conversation, m.seq, m) && this.client) await this.fill(this.client, m.conversation);
  }

  /** Holds `m` at `seq` and hands over what is contiguous from the cursor; true when a
   * gap remains. `null` stands for a message that advances the cursor unseen (one
   * this device sent itself). */
  private offer(conversation: string, seq: bigint, m: Message | null): boolean {
    if (this.ended) return false; // closed: nothing more is handed over or counted as seen
    if (!this.cursors.has(conversation)) this.cursors.set(conversation, this.firstCursor(seq));
    let cursor = this.cursor(conversation);
    if (seq <= cursor) return false;
    let held = this.held.get(conversation);
    if (!held) this.held.set(conversation, (held = new Map()));
    held.set(seq, m);
    const start = cursor;
    for (let next = held.get(cursor + 1n); next !== undefined; next = held.get(cursor + 1n)) {
      held.delete(cursor + 1n);
      cursor += 1n;
      if (next) this.onMessage(next);
    }
    if (held.size === 0) this.held.delete(conversation);
    if (cursor > start) {
      this.cursors.set(conversation, cursor);
      this.store.save(conversation, cursor);
    }
    return held.size > 0;
  }

  /** Pulls forward from the cursor until nothing is missing. */
  private async fill(client: Client, conversation: string): Promise<void> {
    const pageSize = this.options.pageSize ?? 100;
    for (;;) {
      const cursor = this.cursor(conversation);
      const page = await client.history(conversation, Direction.FORWARD, cursor, pageSize);
      const first = page.messages[0];
      if (!first) {
        this.held.delete(conversation);
        return;
      }
      if (first.seq > cursor + 1n) this.cursors.set(conversation, first.seq - 1n); // beyond retention
      let gap = false;
      for (const m of page.messages) {
        const own = m.sender === this.userId && m.senderDevice === this.options.deviceId;
        gap = this.offer(conversation, m.seq, own ? null : m);
      }
      if (!gap && !page.hasMore) return;
    }
  }
}
