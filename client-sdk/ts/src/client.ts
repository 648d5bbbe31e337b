// Messaging over one connection: send with an idempotent client_msg_id, pull
// history pages, acknowledge deliveries, and hand incoming messages to the app.

import { create } from "@bufbuild/protobuf";
import {
  DeliveryAckSchema,
  Direction,
  EditSchema,
  HideSchema,
  ReactSchema,
  MediaKind,
  MediaSchema,
  MessageBodySchema,
  PresenceSubscribeSchema,
  PullHistorySchema,
  PushProvider,
  SetPushTokenSchema,
  TypingSchema,
  ReadReportSchema,
  RecallSchema,
  SendSchema,
  TextSchema,
  type EditAck,
  type Hidden,
  type JoinRequested,
  type ReactAck,
  type HistoryPage,
  type Message,
  type MessageBody,
  type PresenceChange,
  type ReadReceipt,
  type RecallAck,
  type SendAck,
  type TypingNotice,
} from "./gen/courier_pb.js";
import { Connection, CourierError, type ConnectOptions } from "./connection.js";
import { ErrorCode } from "./gen/courier_pb.js";

/** A fresh id for a send: the server stores a send once per id, however often it is resent. */
export function newClientMsgId(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The canonical id of the 1:1 conversation between two users. */
export function directConversation(a: bigint, b: bigint): string {
  if (a === b) throw new Error("a conversation with oneself does not exist");
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

/** A text message body. */
export function textBody(text: string, mentions: bigint[] = [], mentionAll = false): MessageBody {
  const value = create(TextSchema, { text, mentions, mentionAll });
  return create(MessageBodySchema, { content: { case: "text", value } });
}

/** An image message body: an upload named by its SHA-256 (the server fills in its
 * link, type, size and dimensions from the stored blob). */
export function imageBody(sha256: string, caption = ""): MessageBody {
  return create(MessageBodySchema, {
    content: { case: "media", value: create(MediaSchema, { kind: MediaKind.IMAGE, sha256, caption }) },
  });
}

export class Client {
  /** Messages pushed by the server, in the order they arrive on this connection. */
  onMessage: (m: Message) => void = () => {};
  /** Someone (or this user on another device) read a conversation up to a seq. */
  onReadReceipt: (r: ReadReceipt) => void = () => {};
  /** Watched users came online or went offline (friends, and users subscribed to). */
  onPresence: (changes: PresenceChange[]) => void = () => {};
  /** Someone is typing in a conversation (or stopped); clear it after `expiresMs`
   * without a renewal. */
  onTyping: (t: TypingNotice) => void = () => {};
  /** This user's view of a conversation changed on another of its devices: messages
   * deleted for it (`seqs`), or its history cleared through `clearedSeq`. */
  onHidden: (h: Hidden) => void = () => {};
  /** Someone asks to join a group this user owns or administers (answer it over
   * HTTP: `Http.approveJoin` / `Http.declineJoin`). */
  onJoinRequested: (j: JoinRequested) => void = () => {};

  private constructor(readonly connection: Connection) {
    connection.onFrame = (frame) => {
      switch (frame.kind.case) {
        case "deliver":
          if (frame.kind.value.message) this.onMessage(frame.kind.value.message);
          break;
        case "readReceipt":
          this.onReadReceipt(frame.kind.value);
          break;
        case "presenceBatch":
          this.onPresence(frame.kind.value.changes);
          break;
        case "typingNotice":
          this.onTyping(frame.kind.value);
          break;
        case "hidden":
          this.onHidden(frame.kind.value);
          break;
        case "joinRequested":
          this.onJoinRequested(frame.kind.value);
          break;
      }
    };
  }

  static async connect(url: string, token: string, options: ConnectOptions): Promise<Client> {
    return new Client(await Connection.open(url, token, options));
  }

  get userId(): bigint {
    return this.connection.userId;
  }

  /** Stores `body` in `conversation`; resolves once it is durable (with its seq). */
  async send(conversation: string, body: MessageBody, clientMsgId = newClientMsgId()): Promise<SendAck> {
    const answer = await this.connection.request({
      case: "send",
      value: create(SendSchema, { clientMsgId, conversation, body }),
    });
    if (answer.kind.case !== "sendAck") throw unexpected(answer.kind.case);
    return answer.kind.value;
  }

  sendText(conversation: string, text: string): Promise<SendAck> {
    return this.send(conversation, textBody(text));
  }

  /** A page of history: `Backward` below `cursor` (0 = the newest), `Forward` above it. */
  async history(conversation: string, direction: Direction, cursor: bigint, limit: number): Promise<HistoryPage> {
    const answer = await this.connection.request({
      case: "pullHistory",
      value: create(PullHistorySchema, { conversation, direction, cursor, limit }),
    });
    if (answer.kind.case !== "historyPage") throw unexpected(answer.kind.case);
    return answer.kind.value;
  }

  /** Tells the server every message up to `seq` of `conversation` arrived. */
  ack(conversation: string, seq: bigint): void {
    this.connection.tell({ case: "deliveryAck", value: create(DeliveryAckSchema, { conversation, seq }) });
  }

  /** Recalls a message (the sender within the window, or a group's owner and admins):
   * its content is erased and a recall event with its own seq goes to everyone. */
  async recall(conversation: string, seq: bigint): Promise<RecallAck> {
    const answer = await this.connection.request({ case: "recall", value: create(RecallSchema, { conversation, seq }) });
    if (answer.kind.case !== "recallAck") throw unexpected(answer.kind.case);
    return answer.kind.value;
  }

  /** Replaces the text of one's own text message `seq` (within the server's edit
   * window). Everyone gets the edit event (a `messageEdited` system event with its own
   * seq); history then shows the new text with an `edited` mark. */
  async edit(conversation: string, seq: bigint, text: string, mentions: bigint[] = []): Promise<EditAck> {
    const value = create(EditSchema, { conversation, seq, text: create(TextSchema, { text, mentions }) });
    const answer = await this.connection.request({ case: "edit", value });
    if (answer.kind.case !== "editAck") throw unexpected(answer.kind.case);
    return answer.kind.value;
  }

  /** Reacts to message `seq` with `emoji` (or takes the reaction back, `remove`).
   * Participants get a `reactionsChanged` system event (one per window for many changes
   * in big groups); history shows the counts per emoji. */
  async react(conversation: string, seq: bigint, emoji: string, remove = false): Promise<ReactAck> {
    const value = create(ReactSchema, { conversation, seq, emoji, remove });
    const answer = await this.connection.request({ case: "react", value });
    if (answer.kind.case !== "reactAck") throw unexpected(answer.kind.case);
    return answer.kind.value;
  }

  /** Changes this user's own view of a conversation on all its devices, nobody else's:
   * deletes messages `seqs` for it, clears its history through `clearThrough`, or
   * deletes the conversation from its list (until the next message). */
  async hide(
    conversation: string,
    change: { seqs?: bigint[]; clearThrough?: bigint; deleteConversation?: boolean },
  ): Promise<Hidden> {
    const value = create(HideSchema, { conversation, ...change });
    const answer = await this.connection.request({ case: "hide", value });
    if (answer.kind.case !== "hidden") throw unexpected(answer.kind.case);
    return answer.kind.value;
  }

  /** Marks `conversation` read up to `seq` (the peer, and this user's other devices, are told). */
  reportRead(conversation: string, seq: bigint): void {
    this.connection.tell({ case: "readReport", value: create(ReadReportSchema, { conversation, seq }) });
  }

  /** Watches `users`' presence for `leaseMs` (renew before it runs out): changes
   * arrive through `onPresence`. Users who block this one are not watched. */
  subscribePresence(users: bigint[], leaseMs: number): void {
    this.connection.tell({
      case: "presenceSubscribe",
      value: create(PresenceSubscribeSchema, { userIds: users, leaseMs }),
    });
  }

  /** Tells the conversation's other participants this user is typing (or, with
   * `false`, stopped). Repeat it every few seconds while typing goes on. */
  typing(conversation: string, active: boolean): void {
    this.connection.tell({ case: "typing", value: create(TypingSchema, { conversation, active }) });
  }

  /** Registers where to push to this device while it is offline: `provider` APNs
   * or FCM, `appId` the bundle id or Firebase project id; `null` unregisters.
   * Resolves once the registration is durable; it lasts until this session's
   * token is logged out. */
  async setPushToken(
    registration: { provider: PushProvider; token: string; appId: string; sandbox?: boolean } | null,
  ): Promise<void> {
    const value = registration
      ? create(SetPushTokenSchema, {
          provider: registration.provider,
          token: registration.token,
          appId: registration.appId,
          sandbox: registration.sandbox ?? false,
        })
      : create(SetPushTokenSchema, {});
    const answer = await this.connection.request({ case: "setPushToken", value });
    if (answer.kind.case !== "pushTokenSet") throw unexpected(answer.kind.case);
  }

  close(): void {
    this.connection.close();
  }
}

function unexpected(kind: string | undefined): CourierError {
  return new CourierError(ErrorCode.PROTOCOL_VIOLATION, `unexpected answer: ${kind}`);
}
