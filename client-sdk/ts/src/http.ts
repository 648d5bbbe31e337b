// The HTTP API calls a chat app makes outside its session: register and log in.

/** What `login` answers. */
export interface Login {
  token: string;
  userId: bigint;
  name: string;
  expiresAtMs: number;
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
  lastActivityMs: number;
  muted: boolean;
  pinned: boolean;
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
  last_activity_ms: number;
  muted: boolean;
  pinned: boolean;
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
      lastActivityMs: c.last_activity_ms,
      muted: c.muted,
      pinned: c.pinned,
    }));
  }

  /** Creates a group owned by the caller with `members` (added or invited by the
   * server's policy); returns its conversation id. */
  async createGroup(name: string, members: bigint[]): Promise<{ groupId: bigint; conversation: string }> {
    const g = await this.call<{ group_id: number | string; conversation: string }>("POST", "/v1/groups", {
      name,
      members: members.map(Number),
    });
    return { groupId: BigInt(g.group_id), conversation: g.conversation };
  }

  /** The WebSocket URL of this server's sessions. */
  get webSocketUrl(): string {
    return this.base.replace(/^http/, "ws") + "/v1/ws";
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const response = await fetch(this.base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const json = text ? JSON.parse(text) : undefined;
    if (!response.ok) {
      throw new HttpError(response.status, json?.code ?? 0, json?.name ?? "", json?.message ?? text);
    }
    return json as T;
  }
}
