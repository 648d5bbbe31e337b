// The HTTP API calls a chat app makes outside its session: accounts, the
// conversation list, groups, presence on demand, media upload and links.

/** What `login` answers. */
export interface Login {
  token: string;
  userId: bigint;
  name: string;
  expiresAtMs: number;
}

/** A user: id and name. */
export interface User {
  userId: bigint;
  name: string;
}

/** A group member. */
export interface Member extends User {
  role: string;
}

/** Whether a user has a device connected. */
export interface PresenceView {
  userId: bigint;
  online: boolean;
}

/** How the caller and another user relate. */
export interface Relation extends User {
  friend: boolean;
  requestSent: boolean;
  requestReceived: boolean;
  blocking: boolean;
}

/** A pending invitation into a group. */
export interface Invitation {
  groupId: bigint;
  name: string;
  inviter: bigint;
  inviterName: string;
}

/** An uploaded blob: its id (SHA-256), a signed download path, and what the server
 * found in it. */
export interface MediaView {
  sha256: string;
  /** Signed path; `Http.link` makes it a URL. */
  url: string;
  urlExpiresMs: number;
  size: number;
  mime: string;
  width: number;
  height: number;
  status: string;
}

/** The newest message of a conversation, as the list shows it. */
export interface MessagePreview {
  seq: bigint;
  from: bigint;
  /** `text`, `media`, `custom` or `system`. */
  type: string;
  text?: string;
  recalled: boolean;
  serverTimeMs: number;
}

/** One entry of the conversation list. */
export interface ConversationSummary {
  conversation: string;
  kind: string;
  peer?: bigint;
  group?: bigint;
  name?: string;
  lastSeq: bigint;
  readSeq: bigint;
  unread: number;
  /** Unread messages that mention the caller (by name or `@all`). */
  mentions: number;
  lastActivityMs: number;
  lastMessage?: MessagePreview;
  muted: boolean;
  pinned: boolean;
}

interface RawMessage {
  seq: number;
  from: number;
  server_time_ms: number;
  text?: string;
  body: { type: string };
  recalled?: unknown;
  edited?: unknown;
}

interface RawMedia {
  sha256: string;
  url: string;
  url_expires_ms: number;
  size: number;
  mime: string;
  width: number;
  height: number;
  status: string;
}

function media(m: RawMedia): MediaView {
  return {
    sha256: m.sha256,
    url: m.url,
    urlExpiresMs: m.url_expires_ms,
    size: m.size,
    mime: m.mime,
    width: m.width,
    height: m.height,
    status: m.status,
  };
}

interface RawConversation {
  conversation: string;
  kind: string;
  peer?: number;
  group?: number;
  name?: string;
  last_seq: number;
  read_seq: number;
  unread: number;
  mentions?: number;
  last_activity_ms: number;
  last_message?: RawMessage;
  muted: boolean;
  pinned: boolean;
}

/** A pending request to join a group. */
export interface JoinRequestView {
  userId: bigint;
  name: string;
  message: string;
  createdMs: number;
}

/** An HTTP API error: its stable code and name, as the server sent them. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    readonly codeName: string,
    message: string,
  ) {
    super(`${status} ${codeName}: ${message}`);
    this.name = "HttpError";
  }
}

/** Courier's HTTP API at `base` (`http(s)://host:port`), as a user with `token`. */
export class Http {
  constructor(
    readonly base: string,
    readonly token?: string,
  ) {}

  /** The same API as the user holding `token`. */
  withToken(token: string): Http {
    return new Http(this.base, token);
  }

  async register(name: string, password: string): Promise<bigint> {
    const user = await this.call<{ user_id: number | string }>("POST", "/v1/register", { name, password });
    return BigInt(user.user_id);
  }

  async login(name: string, password: string): Promise<Login> {
    const l = await this.call<{ token: string; user_id: number | string; name: string; expires_at_ms: number }>(
      "POST",
      "/v1/login",
      { name, password },
    );
    return { token: l.token, userId: BigInt(l.user_id), name: l.name, expiresAtMs: l.expires_at_ms };
  }

  /** The conversation list: pinned first, then by last activity, with unread counts. */
  async conversations(): Promise<ConversationSummary[]> {
    const page = await this.call<{ conversations: RawConversation[] }>("GET", "/v1/conversations");
    return page.conversations.map((c) => ({
      conversation: c.conversation,
      kind: c.kind,
      peer: c.peer === undefined ? undefined : BigInt(c.peer),
      group: c.group === undefined ? undefined : BigInt(c.group),
      name: c.name,
      lastSeq: BigInt(c.last_seq),
      readSeq: BigInt(c.read_seq),
      unread: c.unread,
      mentions: c.mentions ?? 0,
      lastActivityMs: c.last_activity_ms,
      lastMessage: c.last_message && {
        seq: BigInt(c.last_message.seq),
        from: BigInt(c.last_message.from),
        type: c.last_message.body.type,
        text: c.last_message.text,
        recalled: c.last_message.recalled !== undefined,
        serverTimeMs: c.last_message.server_time_ms,
      },
      muted: c.muted,
      pinned: c.pinned,
    }));
  }

  /** Creates a group owned by the caller with `members` (added or invited by the
   * server's policy; `joinPolicy` as the server's default, invite-only, when left
   * out); returns its conversation id. */
  async createGroup(
    name: string,
    members: bigint[],
    joinPolicy?: "open" | "invite" | "approval",
  ): Promise<{ groupId: bigint; conversation: string }> {
    const g = await this.call<{ group_id: number | string; conversation: string }>("POST", "/v1/groups", {
      name,
      members: members.map(Number),
      join_policy: joinPolicy,
    });
    return { groupId: BigInt(g.group_id), conversation: g.conversation };
  }

  /** Ends this token's session (its device is logged out at once). */
  async logout(): Promise<void> {
    await this.call("POST", "/v1/logout");
  }

  /** Registers the push token of one of the user's devices (`apns` or `fcm`;
   * `appId` the bundle id or Firebase project id). */
  async setPushToken(
    deviceId: string,
    provider: "apns" | "fcm",
    token: string,
    appId: string,
    sandbox = false,
  ): Promise<void> {
    const path = `/v1/devices/${encodeURIComponent(deviceId)}/push`;
    await this.call("PUT", path, { provider, token, app_id: appId, sandbox });
  }

  /** Removes the push token of one of the user's devices. */
  async removePushToken(deviceId: string): Promise<void> {
    await this.call("DELETE", `/v1/devices/${encodeURIComponent(deviceId)}/push`);
  }

  /** The signed-in user. */
  async me(): Promise<User> {
    return user(await this.call<RawUser>("GET", "/v1/me"));
  }

  /** A user by exact name. */
  async userByName(name: string): Promise<User> {
    return user(await this.call<RawUser>("GET", `/v1/users/${encodeURIComponent(name)}`));
  }

  /** A group's members (the first `limit`, by user id). */
  async groupMembers(groupId: bigint, limit = 500): Promise<Member[]> {
    const page = await this.call<{ members: (RawUser & { role: string })[] }>(
      "GET",
      `/v1/groups/${groupId}/members?limit=${limit}`,
    );
    return page.members.map((m) => ({ ...user(m), role: m.role }));
  }

  /** Presence of `users` now (those who block the caller are left out). */
  async presence(users: bigint[]): Promise<PresenceView[]> {
    if (users.length === 0) return [];
    const list = await this.call<{ users: { user_id: number | string; online: boolean }[] }>(
      "GET",
      `/v1/presence?users=${users.join(",")}`,
    );
    return list.users.map((p) => ({ userId: BigInt(p.user_id), online: p.online }));
  }

  /** Who has read message `seq` (the sender excluded): a count, and ids where shown. */
  async reads(conversation: string, seq: bigint): Promise<{ count: number; readers: bigint[] }> {
    const r = await this.call<{ count: number; readers?: (number | string)[] }>(
      "GET",
      `/v1/conversations/${encodeURIComponent(conversation)}/messages/${seq}/reads`,
    );
    return { count: r.count, readers: (r.readers ?? []).map(BigInt) };
  }

  /** How the caller relates to `userId`. */
  async relation(userId: bigint): Promise<Relation> {
    return relation(await this.call<RawRelation>("GET", `/v1/relations/${userId}`));
  }

  /** Pending friend requests: to the caller, and by it. */
  async friendRequests(): Promise<{ incoming: Relation[]; outgoing: Relation[] }> {
    const r = await this.call<{ incoming: RawRelation[]; outgoing: RawRelation[] }>("GET", "/v1/friends/requests");
    return { incoming: r.incoming.map(relation), outgoing: r.outgoing.map(relation) };
  }

  /** Asks `userId` to be friends (friends see each other's presence). */
  async requestFriend(userId: bigint): Promise<Relation> {
    return relation(await this.call<RawRelation>("POST", "/v1/friends/requests", { user_id: Number(userId) }));
  }

  /** Accepts (`true`) or declines a friend request from `userId`. */
  async answerFriend(userId: bigint, accept: boolean): Promise<Relation> {
    const verb = accept ? "accept" : "decline";
    return relation(await this.call<RawRelation>("POST", `/v1/friends/requests/${userId}/${verb}`));
  }

  /** The caller's pending group invitations. */
  async invitations(): Promise<Invitation[]> {
    const list = await this.call<{
      invitations: { group_id: number | string; name: string; inviter: number | string; inviter_name: string }[];
    }>("GET", "/v1/invitations");
    return list.invitations.map((i) => ({
      groupId: BigInt(i.group_id),
      name: i.name,
      inviter: BigInt(i.inviter),
      inviterName: i.inviter_name,
    }));
  }

  /** Joins the group of an invitation (`true`) or declines it. */
  async answerInvitation(groupId: bigint, accept: boolean): Promise<void> {
    if (accept) await this.call("POST", `/v1/invitations/${groupId}/accept`);
    else await this.call("DELETE", `/v1/invitations/${groupId}`);
  }

  /** Edits the caller's text message `seq` (within the server's edit window). */
  async edit(conversation: string, seq: bigint, text: string): Promise<{ eventSeq: bigint; editedAtMs: number }> {
    const r = await this.call<{ event_seq: number | string; edited_at_ms: number }>(
      "PATCH",
      `/v1/conversations/${encodeURIComponent(conversation)}/messages/${seq}`,
      { text },
    );
    return { eventSeq: BigInt(r.event_seq), editedAtMs: r.edited_at_ms };
  }

  /** Adds (`add` true) or takes back the caller's `emoji` reaction to message `seq`. */
  async react(conversation: string, seq: bigint, emoji: string, add = true): Promise<void> {
    const path = `/v1/conversations/${encodeURIComponent(conversation)}/messages/${seq}/reactions/${encodeURIComponent(emoji)}`;
    await this.call(add ? "PUT" : "DELETE", path);
  }

  /** Who reacted to message `seq` with `emoji` (a page, by user id). */
  async reactors(conversation: string, seq: bigint, emoji: string, after = 0n, limit = 100): Promise<bigint[]> {
    const q = `emoji=${encodeURIComponent(emoji)}&after=${after}&limit=${limit}`;
    const r = await this.call<{ users: { user_id: number | string }[] }>(
      "GET",
      `/v1/conversations/${encodeURIComponent(conversation)}/messages/${seq}/reactions?${q}`,
    );
    return r.users.map((u) => BigInt(u.user_id));
  }

  /** Deletes messages for the caller only (`seqs`), or clears its history through
   * `clearThrough`; the caller's other devices are told. */
  async hide(conversation: string, seqs: bigint[], clearThrough?: bigint): Promise<void> {
    await this.call("POST", `/v1/conversations/${encodeURIComponent(conversation)}/hide`, {
      seqs: seqs.map(Number),
      clear_through: clearThrough === undefined ? undefined : Number(clearThrough),
    });
  }

  /** Deletes a conversation for the caller (its history cleared, out of the list
   * until the next message). */
  async deleteConversation(conversation: string): Promise<void> {
    await this.call("DELETE", `/v1/conversations/${encodeURIComponent(conversation)}`);
  }

  /** Mutes (or unmutes) a group: only its owner and admins may send. */
  async muteGroup(groupId: bigint, muted: boolean): Promise<void> {
    await this.call("PUT", `/v1/groups/${groupId}/mute`, { muted });
  }

  /** Mutes a member for `durationMs` (0 unmutes). */
  async muteMember(groupId: bigint, userId: bigint, durationMs: number): Promise<void> {
    await this.call("PUT", `/v1/groups/${groupId}/members/${userId}/mute`, { duration_ms: durationMs });
  }

  /** Pins `text` as the group's announcement (empty takes it down). */
  async setAnnouncement(groupId: bigint, text: string): Promise<void> {
    await this.call("PUT", `/v1/groups/${groupId}/announcement`, { text });
  }

  /** Bans `userId` from a group (removing it if a member), or lifts the ban. */
  async ban(groupId: bigint, userId: bigint, banned = true): Promise<void> {
    await this.call(banned ? "PUT" : "DELETE", `/v1/groups/${groupId}/bans/${userId}`);
  }

  /** Joins an open group (`joined`), or asks to join one that approves its members
   * (`requested`; its owner and admins are told). */
  async joinGroup(groupId: bigint, message = ""): Promise<"joined" | "requested"> {
    const r = await this.call<{ conversation?: string }>("POST", `/v1/groups/${groupId}/join`, { message });
    return r.conversation === undefined ? "requested" : "joined";
  }

  /** A group's pending join requests (owner and admins). */
  async joinRequests(groupId: bigint): Promise<JoinRequestView[]> {
    const r = await this.call<{
      requests: { user_id: number | string; name: string; message: string; created_ms: number }[];
    }>("GET", `/v1/groups/${groupId}/join-requests`);
    return r.requests.map((q) => ({
      userId: BigInt(q.user_id),
      name: q.name,
      message: q.message,
      createdMs: q.created_ms,
    }));
  }

  /** Approves (`true`: the user joins) or declines a join request. */
  async answerJoinRequest(groupId: bigint, userId: bigint, approve: boolean): Promise<void> {
    if (approve) await this.call("POST", `/v1/groups/${groupId}/join-requests/${userId}/approve`);
    else await this.call("DELETE", `/v1/groups/${groupId}/join-requests/${userId}`);
  }

  /** Changes the caller's profile (fields left out stay; `displayName: null` clears it). */
  async updateProfile(change: {
    displayName?: string | null;
    status?: string;
    avatar?: string;
    custom?: Record<string, string>;
    discoverable?: boolean;
  }): Promise<User> {
    return user(
      await this.call<RawUser>("PATCH", "/v1/me", {
        display_name: change.displayName,
        status: change.status,
        avatar: change.avatar,
        custom: change.custom,
        discoverable: change.discoverable,
      }),
    );
  }

  /** Users by exact name or display-name prefix (blocks and discoverability respected). */
  async searchUsers(q: string, limit = 20): Promise<User[]> {
    const r = await this.call<{ users: RawUser[] }>(
      "GET",
      `/v1/search/users?q=${encodeURIComponent(q)}&limit=${limit}`,
    );
    return r.users.map(user);
  }

  /** Uploads a file (its bytes); the server sniffs its type and may refuse it. */
  async upload(data: Blob | Uint8Array): Promise<MediaView> {
    return media(await this.call<RawMedia>("POST", "/v1/media", data));
  }

  /** A fresh signed path to blob `sha256`: one this user uploaded, or one carried by
   * message `seq` of `conversation` (message links expire; renew them here). */
  async mediaLink(sha256: string, conversation?: string, seq?: bigint): Promise<MediaView> {
    const q = conversation === undefined ? "" : `?conversation=${encodeURIComponent(conversation)}&seq=${seq}`;
    return media(await this.call<RawMedia>("POST", `/v1/media/${sha256}/url${q}`));
  }

  /** The URL of a server path (a signed media path, say). */
  link(path: string): string {
    return this.base + path;
  }

  /** The WebSocket URL of this server's sessions. */
  get webSocketUrl(): string {
    return this.base.replace(/^http/, "ws") + "/v1/ws";
  }

  /** Calls the API: a JSON body, or raw bytes (sent as `application/octet-stream`). */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    const raw = body instanceof Uint8Array || (typeof Blob !== "undefined" && body instanceof Blob);
    if (body !== undefined) headers["content-type"] = raw ? "application/octet-stream" : "application/json";
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const response = await fetch(this.base + path, {
      method,
      headers,
      body: body === undefined ? undefined : raw ? (body as BodyInit) : JSON.stringify(body),
    });
    const text = await response.text();
    const json = text ? JSON.parse(text) : undefined;
    if (!response.ok) {
      throw new HttpError(response.status, json?.code ?? 0, json?.name ?? "", json?.message ?? text);
    }
    return json as T;
  }
}

interface RawUser {
  user_id: number | string;
  name: string;
}

function user(u: RawUser): User {
  return { userId: BigInt(u.user_id), name: u.name };
}

interface RawRelation extends RawUser {
  friend: boolean;
  request_sent: boolean;
  request_received: boolean;
  blocking: boolean;
}

function relation(r: RawRelation): Relation {
  return {
    ...user(r),
    friend: r.friend,
    requestSent: r.request_sent,
    requestReceived: r.request_received,
    blocking: r.blocking,
  };
}
