// Courier's TypeScript SDK: WebSocket sessions and the HTTP API, for browsers and Node.
export { Connection, CourierError, PROTOCOL_VERSION, SUBPROTOCOL } from "./connection.js";
export type { ConnectOptions, WebSocketFactory, WebSocketLike } from "./connection.js";
export { Client, directConversation, imageBody, newClientMsgId, textBody } from "./client.js";
export { Http, HttpError } from "./http.js";
export type {
  ConversationSummary,
  Invitation,
  Login,
  MediaView,
  Member,
  MessagePreview,
  PresenceView,
  Relation,
  User,
} from "./http.js";
export * from "./gen/courier_pb.js";
export { Session } from "./session.js";
export type { SessionOptions, SessionState } from "./session.js";
export { IndexedDbCursors, MemoryCursors } from "./cursors.js";
export type { CursorStore } from "./cursors.js";
