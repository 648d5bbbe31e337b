// The chat screen: the conversation list (unread counts, mention marks, last
// message, presence dots), one open conversation (history pages, live messages,
// read receipts, images, recall, edits, reactions, delete for me, typing), and the
// composer. All state arrives through one `Session` (each message
// once, in seq order) and the HTTP API.

import {
  CourierError,
  IndexedDbCursors,
  Session,
  directConversation,
  imageBody,
  type ConversationSummary,
  type Http,
  type Login,
  type Hidden,
  type Message,
  type ReadReceipt,
  type SystemEvent,
  type TypingNotice,
} from "../index.js";
import { byId, clock, h } from "./dom.js";
import { appliedInPlace, describeSystem, preview } from "./messages.js";

/** A conversation as the app keeps it. */
interface Conversation {
  id: string;
  kind: string;
  name: string;
  peer?: bigint;
  group?: bigint;
  lastSeq: bigint;
  readSeq: bigint;
  unread: number;
  /** Unread messages that mention this user. */
  mentions: number;
  lastText: string;
  /** The seq of the message `lastText` shows (an edit of it changes it). */
  lastTextSeq: bigint;
  lastActivityMs: number;
  pinned: boolean;
  /** The peer's read cursor (direct), or group receipts: seq -> readers. */
  peerReadSeq: bigint;
  groupReads: Map<bigint, number>;
}

const PAGE = 30;
/** The one reaction the app offers (others show as they come). */
const QUICK_REACTION = "👍";
/** While the user types, the conversation is told at most this often. */
const TYPING_EVERY_MS = 2_500;
const PRESENCE_LEASE_MS = 120_000;
/** Friend requests and group invitations have no push: they are polled this often
 * while the page is visible (and on focus and reconnect). */
const REQUESTS_POLL_MS = 5_000;

export class Chat {
  private session?: Session;
  private readonly conversations = new Map<string, Conversation>();
  private readonly names = new Map<bigint, string>();
  private readonly online = new Map<bigint, boolean>();
  private open?: Conversation;
  /** The open conversation's messages on screen, by seq. */
  private readonly shown = new Map<bigint, HTMLLIElement>();
  /** System events on screen (their sentences name members: redone as names arrive). */
  private readonly events = new Map<bigint, SystemEvent>();
  private oldestShown = 0n;
  private hasEarlier = false;
  private renewPresence?: ReturnType<typeof setInterval>;
  private pollRequests?: ReturnType<typeof setInterval>;
  private listRefresh?: ReturnType<typeof setTimeout>;
  private listDirty = false;
  /** The open conversation's reactions on screen: seq -> emoji -> count, mine. */
  private readonly reactions = new Map<bigint, Map<string, { count: number; mine: boolean }>>();
  /** Who is typing in which conversation, until when (ms). */
  private readonly typingNow = new Map<string, Map<bigint, number>>();
  private typingTick?: ReturnType<typeof setTimeout>;
  private typingSentAt = 0;
  /** The own message the composer edits, if any. */
  private editing?: bigint;

  constructor(
    private readonly http: Http,
    private readonly login: Login,
    private readonly deviceId: string,
    private readonly signedOut: (why: string) => void,
  ) {
    this.names.set(login.userId, login.name);
  }

  /** Loads the list, connects the session (the first connection must succeed), and
   * shows the chat in `root`. */
  async start(root: HTMLElement): Promise<void> {
    const list = await this.http.conversations();
    const session = await Session.start(this.http.webSocketUrl, this.http.token ?? "", {
      deviceId: this.deviceId,
      cursors: new IndexedDbCursors(`courier-cursors-${this.login.userId}-${this.deviceId}`),
    });
    this.session = session;
    root.replaceChildren(this.layout());
    this.merge(list);
    session.onMessage = (m) => this.received(m);
    session.onReadReceipt = (r) => this.receipt(r);
    session.onTyping = (t) => this.typing(t);
    session.onHidden = (h) => this.hidden(h);
    session.onPresence = (changes) => {
      for (const c of changes) this.online.set(c.userId, c.online);
      this.renderList();
      this.renderHeader();
    };
    session.onState = (state, why) => {
      byId("connection").textContent = state === "online" ? "online" : "reconnecting…";
      byId("connection").className = `connection ${state}`;
      if (state === "online" && this.open && this.shown.size === 0) void this.loadEarlier();
      if (state === "online") void this.requests();
      if (state === "ended") this.end(why?.message ?? "signed out");
    };
    this.watchPresence();
    this.renewPresence = setInterval(() => this.watchPresence(), PRESENCE_LEASE_MS * 0.75);
    void this.requests();
    this.pollRequests = setInterval(() => {
      if (document.visibilityState === "visible") void this.requests();
    }, REQUESTS_POLL_MS);
    document.addEventListener("visibilitychange", () => this.markRead());
    window.addEventListener("focus", () => {
      this.markRead();
      void this.requests();
    });
  }

  private layout(): HTMLElement {
    const newChat = h("input", { id: "new-chat-name", placeholder: "User name", "aria-label": "Start a chat with" });
    const groupName = h("input", { id: "new-group-name", placeholder: "Group name", "aria-label": "Group name" });
    const groupMembers = h("input", {
      id: "new-group-members",
      placeholder: "Members, comma-separated",
      "aria-label": "Group members",
    });
    const text = h("textarea", {
      id: "composer-text",
      rows: 1,
      placeholder: "Write a message",
      "aria-label": "Message",
      disabled: true,
      onkeydown: (e) => {
        const k = e as KeyboardEvent;
        if (k.key === "Enter" && !k.shiftKey && !k.isComposing) {
          e.preventDefault();
          this.sendText(text);
        } else if (k.key === "Escape" && this.editing !== undefined) {
          this.stopEditing();
        }
      },
      oninput: () => this.typed(),
    });
    const file = h("input", {
      id: "composer-file",
      type: "file",
      accept: "image/*",
      class: "visually-hidden",
      onchange: () => {
        for (const f of Array.from(file.files ?? [])) void this.sendImage(f);
        file.value = "";
      },
    });
    return h(
      "div",
      {
        class: "app",
        onkeydown: (e) => {
          const k = e as KeyboardEvent;
          if (k.altKey && (k.key === "ArrowUp" || k.key === "ArrowDown")) {
            e.preventDefault();
            this.step(k.key === "ArrowUp" ? -1 : 1);
          }
        },
      },
      h(
        "aside",
        { class: "sidebar" },
        h(
          "header",
          {},
          h("strong", { id: "me" }, this.login.name),
          h("span", { id: "connection", class: "connection online" }, "online"),
          h("button", { id: "sign-out", class: "secondary", onclick: () => void this.signOut() }, "Sign out"),
        ),
        h(
          "form",
          {
            id: "new-chat",
            onsubmit: (e) => {
              e.preventDefault();
              void this.startChat(newChat.value.trim()).then(() => (newChat.value = ""));
            },
          },
          newChat,
          h("button", { type: "submit" }, "Chat"),
        ),
        h(
          "details",
          { class: "new-group" },
          h("summary", {}, "New group"),
          h(
            "form",
            {
              id: "new-group",
              onsubmit: (e) => {
                e.preventDefault();
                void this.createGroup(groupName.value.trim(), groupMembers.value).then(() => {
                  groupName.value = "";
                  groupMembers.value = "";
                });
              },
            },
            groupName,
            groupMembers,
            h("button", { type: "submit" }, "Create"),
          ),
        ),
        h("section", { id: "requests", class: "requests", hidden: true }, h("h3", {}, "Requests"), h("ul", { id: "request-list" })),
        h("ul", { id: "conversations", "aria-label": "Conversations" }),
      ),
      h(
        "main",
        { class: "chat" },
        h(
          "header",
          {},
          h("span", { id: "chat-presence", class: "dot" }),
          h("h2", { id: "chat-title" }, "No chat open"),
          h("span", { id: "typing", class: "typing", "aria-live": "polite" }),
          h("button", { id: "friend", class: "secondary", hidden: true, onclick: () => void this.befriend() }, "Add friend"),
        ),
        h(
          "div",
          { id: "messages", class: "messages" },
          h("button", { id: "load-earlier", class: "secondary", hidden: true, onclick: () => void this.loadEarlier() }, "Load earlier messages"),
          h("ol", { id: "message-list", role: "log", "aria-live": "polite" }),
        ),
        h("p", { id: "notice", class: "notice", role: "status" }),
        h(
          "form",
          {
            id: "composer",
            class: "composer",
            onsubmit: (e) => {
              e.preventDefault();
              this.sendText(text);
            },
          },
          h("label", { class: "attach", title: "Send an image" }, "Image", file),
          text,
          h("button", { type: "submit", id: "send" }, "Send"),
        ),
      ),
    );
  }

  // --- the conversation list ---

  private merge(list: ConversationSummary[]): void {
    for (const s of list) {
      const c = this.conversations.get(s.conversation);
      if (s.peer !== undefined && s.name) this.names.set(s.peer, s.name);
      const lastText = s.lastMessage
        ? s.lastMessage.recalled
          ? "Message recalled"
          : s.lastMessage.type === "text"
            ? (s.lastMessage.text ?? "")
            : s.lastMessage.type === "media"
              ? "Image"
              : ""
        : "";
      if (c && c.lastSeq > s.lastSeq) continue; // live messages got here first
      this.conversations.set(s.conversation, {
        id: s.conversation,
        kind: s.kind,
        name: s.name ?? s.conversation,
        peer: s.peer,
        group: s.group,
        lastSeq: s.lastSeq,
        readSeq: s.readSeq,
        unread: this.open?.id === s.conversation ? 0 : s.unread,
        mentions: this.open?.id === s.conversation ? 0 : s.mentions,
        lastText: lastText || c?.lastText || "",
        lastTextSeq: lastText ? (s.lastMessage?.seq ?? 0n) : (c?.lastTextSeq ?? 0n),
        lastActivityMs: s.lastActivityMs,
        pinned: s.pinned,
        peerReadSeq: c?.peerReadSeq ?? 0n,
        groupReads: c?.groupReads ?? new Map(),
      });
      if (this.open?.id === s.conversation) this.open = this.conversations.get(s.conversation);
    }
    this.renderList();
  }

  /** Reloads the list soon (a conversation this device has not seen appeared). */
  private refreshList(): void {
    if (this.listRefresh) return;
    this.listRefresh = setTimeout(async () => {
      this.listRefresh = undefined;
      try {
        this.merge(await this.http.conversations());
        this.watchPresence();
      } catch {
        this.refreshList();
      }
    }, 150);
  }

  private renderList(): void {
    if (this.listDirty) return;
    this.listDirty = true;
    requestAnimationFrame(() => {
      this.listDirty = false;
      const items = [...this.conversations.values()]
        .sort((a, b) => Number(b.pinned) - Number(a.pinned) || b.lastActivityMs - a.lastActivityMs)
        .map((c) => {
          const unread = c.unread > 0 ? h("span", { class: "badge", "aria-label": `${c.unread} unread` }, String(c.unread)) : null;
          const mentioned =
            c.mentions > 0 ? h("span", { class: "mention-badge", "aria-label": `${c.mentions} mentions`, title: "You were mentioned" }, "@") : null;
          return h(
            "li",
            {},
            h(
              "button",
              {
                class: `conversation${this.open?.id === c.id ? " active" : ""}`,
                "data-conversation": c.id,
                "aria-current": this.open?.id === c.id ? "true" : undefined,
                onclick: () => void this.openConversation(c.id),
              },
              this.dot(c),
              h("span", { class: "name" }, c.name),
              mentioned,
              unread,
              h("span", { class: "preview" }, c.lastText),
            ),
          );
        });
      byId("conversations").replaceChildren(...items);
    });
  }

  private dot(c: Conversation): HTMLElement {
    if (c.peer === undefined) return h("span", { class: "dot group", "aria-hidden": "true" });
    const on = this.online.get(c.peer);
    if (on === undefined) return h("span", { class: "dot", "aria-hidden": "true" }); // not a friend: not shown
    return h("span", { class: `dot ${on ? "online" : "offline"}`, title: on ? "online" : "offline" });
  }

  /** The peers of direct conversations (presence is shown to friends only). */
  private peers(): bigint[] {
    return [...this.conversations.values()].flatMap((c) => (c.peer === undefined ? [] : [c.peer])).slice(0, 256);
  }

  private watchPresence(): void {
    const peers = this.peers();
    if (peers.length === 0 || !this.session) return;
    this.session.subscribePresence(peers, PRESENCE_LEASE_MS);
    this.fetchPresence(peers);
  }

  private fetchPresence(peers = this.peers()): void {
    if (peers.length === 0) return;
    void this.http.presence(peers).then(
      (list) => {
        for (const p of peers) this.online.delete(p); // left out: no longer shown to this user
        for (const p of list) this.online.set(p.userId, p.online);
        this.renderList();
        this.renderHeader();
      },
      () => {},
    );
  }

  /** Friend requests and group invitations waiting for this user. */
  private async requests(): Promise<void> {
    let friends, invitations;
    try {
      [friends, invitations] = await Promise.all([this.http.friendRequests(), this.http.invitations()]);
    } catch {
      return; // offline: the next poll tries again
    }
    this.fetchPresence(); // a request accepted elsewhere may have made a friend
    const answer = (what: Promise<unknown>, then?: () => void) =>
      void what.then(
        () => {
          then?.();
          void this.requests();
        },
        (e) => this.notice(e),
      );
    const items = [
      ...friends.incoming.map((r) =>
        h(
          "li",
          { class: "request", "data-user": String(r.userId) },
          h("span", {}, `${r.name} wants to be friends`),
          h("button", { class: "accept", onclick: () => answer(this.http.answerFriend(r.userId, true), () => this.watchPresence()) }, "Accept"),
          h("button", { class: "decline secondary", onclick: () => answer(this.http.answerFriend(r.userId, false)) }, "Decline"),
        ),
      ),
      ...invitations.map((i) =>
        h(
          "li",
          { class: "invitation", "data-group": String(i.groupId) },
          h("span", {}, `${i.inviterName} invites you to “${i.name}”`),
          h("button", { class: "accept", onclick: () => answer(this.http.answerInvitation(i.groupId, true), () => this.refreshList()) }, "Join"),
          h("button", { class: "decline secondary", onclick: () => answer(this.http.answerInvitation(i.groupId, false)) }, "Decline"),
        ),
      ),
    ];
    byId("request-list").replaceChildren(...items);
    byId("requests").hidden = items.length === 0;
    if (this.open?.peer !== undefined) void this.friendButton(this.open);
  }

  /** The chat header's friend button: for a peer who is not a friend yet. */
  private async friendButton(c: Conversation): Promise<void> {
    const button = byId<HTMLButtonElement>("friend");
    if (c.peer === undefined) {
      button.hidden = true;
      return;
    }
    try {
      const r = await this.http.relation(c.peer);
      if (this.open !== c) return;
      button.hidden = r.friend || r.blocking;
      button.disabled = r.requestSent;
      button.textContent = r.requestSent ? "Friend request sent" : r.requestReceived ? "Accept friend" : "Add friend";
    } catch {
      button.hidden = true;
    }
  }

  private async befriend(): Promise<void> {
    const c = this.open;
    if (c?.peer === undefined) return;
    try {
      const r = await this.http.relation(c.peer);
      if (r.requestReceived) await this.http.answerFriend(c.peer, true);
      else await this.http.requestFriend(c.peer);
      this.watchPresence();
      await this.friendButton(c);
      void this.requests();
    } catch (e) {
      this.notice(e);
    }
  }

  /** Alt+Up / Alt+Down: the previous or next conversation of the list. */
  private step(by: number): void {
    const buttons = Array.from(document.querySelectorAll<HTMLButtonElement>("#conversations .conversation"));
    const at = buttons.findIndex((b) => b.dataset.conversation === this.open?.id);
    const next = buttons[Math.max(0, Math.min(buttons.length - 1, at + by))];
    if (next) {
      next.focus();
      void this.openConversation(next.dataset.conversation!);
    }
  }

  private async startChat(name: string): Promise<void> {
    if (!name) return;
    try {
      const user = await this.http.userByName(name);
      const id = directConversation(this.login.userId, user.userId);
      this.names.set(user.userId, user.name);
      if (!this.conversations.has(id)) {
        this.conversations.set(id, {
          id,
          kind: "direct",
          name: user.name,
          peer: user.userId,
          lastSeq: 0n,
          readSeq: 0n,
          unread: 0,
          mentions: 0,
          lastText: "",
          lastTextSeq: 0n,
          lastActivityMs: Date.now(),
          pinned: false,
          peerReadSeq: 0n,
          groupReads: new Map(),
        });
        this.watchPresence();
      }
      await this.openConversation(id);
    } catch (e) {
      this.notice(e);
    }
  }

  private async createGroup(name: string, members: string): Promise<void> {
    if (!name) return;
    try {
      const names = members.split(",").map((m) => m.trim()).filter(Boolean);
      const users = await Promise.all(names.map((n) => this.http.userByName(n)));
      const group = await this.http.createGroup(name, users.map((u) => u.userId));
      this.merge(await this.http.conversations());
      await this.openConversation(group.conversation);
    } catch (e) {
      this.notice(e);
    }
  }

  // --- the open conversation ---

  private async openConversation(id: string): Promise<void> {
    const c = this.conversations.get(id);
    if (!c) return;
    this.open = c;
    this.stopEditing();
    this.shown.clear();
    this.events.clear();
    this.reactions.clear();
    this.oldestShown = 0n;
    this.hasEarlier = false;
    byId("message-list").replaceChildren();
    byId<HTMLButtonElement>("load-earlier").hidden = true;
    byId<HTMLTextAreaElement>("composer-text").disabled = false;
    this.notice("");
    this.renderHeader();
    this.renderTyping();
    this.renderList();
    byId("friend").hidden = true;
    void this.friendButton(c);
    this.loadMembers(c);
    await this.loadEarlier();
    byId<HTMLTextAreaElement>("composer-text").focus();
  }

  /** A group's member names, for senders and events. */
  private loadMembers(c: Conversation): void {
    if (c.group === undefined) return;
    void this.http.groupMembers(c.group).then(
      (members) => {
        for (const m of members) this.names.set(m.userId, m.name);
        if (this.open !== c) return;
        for (const li of this.shown.values()) this.labelSender(li);
        for (const [seq, e] of this.events) {
          const li = this.shown.get(seq);
          if (li) li.textContent = describeSystem(e, (u) => this.name(u));
        }
      },
      () => {},
    );
  }

  private renderHeader(): void {
    const c = this.open;
    byId("chat-title").textContent = c ? c.name : "No chat open";
    const dot = byId("chat-presence");
    if (c) dot.replaceWith(Object.assign(this.dot(c), { id: "chat-presence" }));
  }

  /** The page of history before the oldest message shown. */
  private async loadEarlier(): Promise<void> {
    const c = this.open;
    if (!c || !this.session) return;
    let page;
    try {
      page = await this.session.history(c.id, this.oldestShown, PAGE);
    } catch (e) {
      this.notice(e instanceof CourierError ? "offline: history will load once reconnected" : e);
      return;
    }
    if (this.open !== c) return;
    const box = byId("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    const first = this.shown.size === 0;
    for (const m of page.messages) this.show(m);
    this.hasEarlier = page.hasMore;
    byId<HTMLButtonElement>("load-earlier").hidden = !this.hasEarlier;
    box.scrollTop = first ? box.scrollHeight : box.scrollHeight - fromBottom;
    if (c.kind === "direct") void this.peerReadOf(c);
    this.markRead();
  }

  /** The peer's read cursor, from the newest own message on screen. */
  private async peerReadOf(c: Conversation): Promise<void> {
    const mine = [...this.shown.entries()].filter(([, li]) => li.classList.contains("mine")).map(([s]) => s);
    const newest = mine.reduce((a, b) => (b > a ? b : a), 0n);
    if (newest === 0n || c.peerReadSeq >= newest) return;
    try {
      if ((await this.http.reads(c.id, newest)).count > 0) c.peerReadSeq = newest;
      this.renderReceipts();
    } catch {
      // Receipts are a nicety; a failed lookup leaves the marks as they are.
    }
  }

  /** Puts `m` on screen at its seq (once) and applies what it says. */
  private show(m: Message): void {
    const body = m.body?.content;
    if (body?.case === "system" && body.value.event.case === "messageRecalled") {
      this.markRecalled(body.value.event.value.seq);
    }
    if (body?.case === "system" && body.value.event.case === "messageEdited") {
      const e = body.value.event.value;
      this.markEdited(e.seq, e.text?.text ?? "");
    }
    if (body?.case === "system" && body.value.event.case === "reactionsChanged") {
      const e = body.value.event.value;
      for (const t of e.totals) {
        const mine = e.changes.find((ch) => ch.seq === t.seq && ch.emoji === t.emoji && ch.userId === this.login.userId);
        const kinds = this.reactions.get(t.seq) ?? new Map<string, { count: number; mine: boolean }>();
        const was = kinds.get(t.emoji);
        kinds.set(t.emoji, { count: Number(t.count), mine: mine ? mine.added : (was?.mine ?? false) });
        this.reactions.set(t.seq, kinds);
        this.renderReactions(t.seq);
      }
    }
    if (this.shown.has(m.seq)) return;
    if (body?.case === "system") {
      this.events.set(m.seq, body.value);
      const who = body.value.event.case;
      if ((who === "memberJoined" || who === "membersAdded") && this.open) {
        const unknown = who === "memberJoined" ? [body.value.event.value.userId] : body.value.event.value.userIds;
        if (unknown.some((u) => !this.names.has(u))) this.loadMembers(this.open);
      }
    }
    if (this.oldestShown === 0n || m.seq < this.oldestShown) this.oldestShown = m.seq;
    const li = this.render(m);
    this.shown.set(m.seq, li);
    const list = byId("message-list");
    const after = [...list.children].find((el) => BigInt((el as HTMLElement).dataset.seq ?? "0") > m.seq);
    list.insertBefore(li, after ?? null);
  }

  private render(m: Message): HTMLLIElement {
    const mine = m.sender === this.login.userId;
    const body = m.body?.content;
    if (body?.case === "system") {
      // Edits and reactions change other messages; their own lines stay out of sight.
      const quiet = appliedInPlace(body.value);
      return h(
        "li",
        { class: `message system${quiet ? " applied" : ""}`, "data-seq": String(m.seq), hidden: quiet },
        describeSystem(body.value, (u) => this.name(u)),
      );
    }
    if (m.reactions.length > 0) {
      this.reactions.set(m.seq, new Map(m.reactions.map((r) => [r.emoji, { count: Number(r.count), mine: r.mine }])));
    }
    const li = h("li", {
      class: `message ${mine ? "mine" : "theirs"}`,
      "data-seq": String(m.seq),
      "data-sender": String(m.sender),
    });
    li.append(h("div", { class: "sender" }));
    this.labelSender(li);
    if (m.recalled) {
      li.append(h("div", { class: "text recalled" }, "Message recalled"));
    } else if (body?.case === "text") {
      li.append(h("div", { class: "text" }, body.value.text));
    } else if (body?.case === "media") {
      const media = body.value;
      const img = h("img", {
        class: "image",
        alt: media.caption || media.name || "image",
        src: this.http.link(media.url),
        width: media.width || undefined,
        height: media.height || undefined,
        loading: "lazy",
      });
      // Links in stored messages expire: renew once.
      img.addEventListener(
        "error",
        () =>
          void this.http.mediaLink(media.sha256, m.conversation, m.seq).then(
            (v) => (img.src = this.http.link(v.url)),
            () => {},
          ),
        { once: true },
      );
      li.append(img);
      if (media.caption) li.append(h("div", { class: "text" }, media.caption));
    } else {
      li.append(h("div", { class: "text unsupported" }, "This message cannot be shown here"));
    }
    li.append(h("div", { class: "reactions" }));
    li.append(this.meta(m.seq, Number(m.serverTimeMs), mine && !m.recalled, mine && !m.recalled && body?.case === "text"));
    if (m.edited) li.querySelector(".meta")?.prepend(h("span", { class: "edited" }, "edited"));
    this.fillReactions(li, m.seq);
    return li;
  }

  private meta(seq: bigint, timeMs: number, recallable: boolean, editable: boolean): HTMLElement {
    return h(
      "div",
      { class: "meta" },
      h("time", { datetime: new Date(timeMs).toISOString() }, clock(timeMs)),
      h("span", { class: "receipt" }, this.receiptText(seq)),
      h("button", { class: "react link", title: "React", onclick: () => void this.react(seq, QUICK_REACTION) }, QUICK_REACTION),
      editable ? h("button", { class: "edit link", onclick: () => this.startEditing(seq) }, "Edit") : null,
      recallable
        ? h("button", { class: "recall link", onclick: () => void this.recall(seq) }, "Recall")
        : null,
      h("button", { class: "delete link", title: "Delete for me", onclick: () => void this.deleteForMe(seq) }, "Delete"),
    );
  }

  /** The reaction chips of message `seq` (each one toggles the user's own). */
  private fillReactions(li: HTMLElement, seq: bigint): void {
    const box = li.querySelector(".reactions");
    if (!box) return;
    const kinds = [...(this.reactions.get(seq) ?? new Map<string, { count: number; mine: boolean }>())].filter(([, r]) => r.count > 0);
    box.replaceChildren(
      ...kinds.map(([emoji, r]) =>
        h(
          "button",
          {
            class: `reaction${r.mine ? " mine" : ""}`,
            "data-emoji": emoji,
            "aria-pressed": r.mine ? "true" : "false",
            onclick: () => void this.react(seq, emoji),
          },
          `${emoji} ${r.count}`,
        ),
      ),
    );
  }

  private renderReactions(seq: bigint): void {
    const li = this.shown.get(seq);
    if (li) this.fillReactions(li, seq);
  }

  private labelSender(li: HTMLLIElement): void {
    const sender = li.querySelector(".sender");
    const id = li.dataset.sender;
    if (sender && id && this.open?.kind === "group" && !li.classList.contains("mine")) {
      sender.textContent = this.name(BigInt(id));
    }
  }

  private name(user: bigint): string {
    return user === this.login.userId ? "you" : (this.names.get(user) ?? `user ${user}`);
  }

  private receiptText(seq: bigint): string {
    const c = this.open;
    if (!c) return "";
    if (c.kind === "direct") return c.peerReadSeq >= seq ? "Read" : "";
    let readers = 0;
    for (const [s, n] of c.groupReads) if (s >= seq && n > readers) readers = n;
    return readers > 0 ? `Read by ${readers}` : "";
  }

  private renderReceipts(): void {
    for (const [seq, li] of this.shown) {
      if (!li.classList.contains("mine")) continue;
      const r = li.querySelector(".receipt");
      if (r) r.textContent = this.receiptText(seq);
    }
  }

  private markRecalled(seq: bigint): void {
    const li = this.shown.get(seq);
    if (!li || li.classList.contains("system")) return;
    li.querySelector(".image")?.remove();
    li.querySelector(".recall")?.remove();
    li.querySelector(".edit")?.remove();
    li.querySelector(".edited")?.remove();
    const text = li.querySelector(".text") ?? li.insertBefore(h("div", {}), li.querySelector(".meta"));
    text.className = "text recalled";
    text.textContent = "Message recalled";
  }

  /** Message `seq` now reads `text`. */
  private markEdited(seq: bigint, text: string): void {
    const li = this.shown.get(seq);
    if (!li || li.classList.contains("system")) return;
    const el = li.querySelector(".text");
    if (el && !el.classList.contains("recalled")) el.textContent = text;
    if (!li.querySelector(".edited")) li.querySelector(".meta")?.prepend(h("span", { class: "edited" }, "edited"));
  }

  /** Reports the open conversation read when the page is seen. */
  private markRead(): void {
    const c = this.open;
    if (!c || document.visibilityState !== "visible" || !this.session) return;
    const newest = [...this.shown.keys()].reduce((a, b) => (b > a ? b : a), 0n);
    if (newest > c.readSeq || c.unread > 0 || c.mentions > 0) {
      c.readSeq = newest > c.readSeq ? newest : c.readSeq;
      c.unread = 0;
      c.mentions = 0;
      this.session.reportRead(c.id, c.readSeq);
      this.renderList();
    }
  }

  // --- live events ---

  private received(m: Message): void {
    const c = this.conversations.get(m.conversation);
    if (!c) {
      this.refreshList();
      return;
    }
    if (m.seq > c.lastSeq) {
      c.lastSeq = m.seq;
      c.lastActivityMs = Number(m.serverTimeMs) || Date.now();
      const text = preview(m, (u) => this.name(u));
      if (text) {
        c.lastText = text;
        c.lastTextSeq = m.seq;
      }
      const body = m.body?.content;
      if (body?.case === "system" && body.value.event.case === "messageEdited") {
        const e = body.value.event.value;
        if (e.seq === c.lastTextSeq) c.lastText = e.text?.text ?? c.lastText;
      }
      const counts = m.sender !== this.login.userId && m.body?.content.case !== "system";
      if (counts && m.seq > c.readSeq) c.unread += 1;
      const mentioned =
        body?.case === "text" && (body.value.mentionAll || body.value.mentions.includes(this.login.userId));
      if (counts && mentioned && m.seq > c.readSeq) c.mentions += 1;
    }
    // A message from someone ends its typing notice.
    if (this.typingNow.get(m.conversation)?.delete(m.sender) && this.open === c) this.renderTyping();
    if (this.open === c) {
      this.show(m);
      const box = byId("messages");
      box.scrollTop = box.scrollHeight;
      this.markRead();
    }
    this.renderList();
  }

  private receipt(r: ReadReceipt): void {
    const c = this.conversations.get(r.conversation);
    if (!c) return;
    if (r.reader === this.login.userId) {
      // Read on another device of this user.
      if (r.seq > c.readSeq) c.readSeq = r.seq;
      if (c.readSeq >= c.lastSeq) c.unread = 0;
      else this.refreshList();
      this.renderList();
      return;
    }
    if (c.kind === "direct") {
      if (r.seq > c.peerReadSeq) c.peerReadSeq = r.seq;
    } else {
      c.groupReads.set(r.seq, Math.max(r.readers, c.groupReads.get(r.seq) ?? 0));
    }
    if (this.open === c) this.renderReceipts();
  }

  // --- sending ---

  private sendText(input: HTMLTextAreaElement): void {
    const c = this.open;
    const text = input.value.trim();
    if (!c || !text || !this.session) return;
    input.value = "";
    if (this.typingSentAt > 0) {
      this.session.typing(c.id, false);
      this.typingSentAt = 0;
    }
    if (this.editing !== undefined) {
      const seq = this.editing;
      this.stopEditing();
      this.session.edit(c.id, seq, text).then(
        () => {
          this.markEdited(seq, text);
          if (c.lastTextSeq === seq) {
            c.lastText = text;
            this.renderList();
          }
        },
        (e) => this.notice(e),
      );
      return;
    }
    const pending = this.pending(c, h("div", { class: "text" }, text));
    this.settle(c, pending, this.session.sendText(c.id, text), text);
  }

  private async sendImage(file: File): Promise<void> {
    const c = this.open;
    if (!c || !this.session) return;
    const local = URL.createObjectURL(file);
    const pending = this.pending(c, h("img", { class: "image", alt: file.name, src: local }));
    try {
      const media = await this.http.upload(file);
      this.settle(c, pending, this.session.send(c.id, imageBody(media.sha256)), "Image");
    } catch (e) {
      pending.classList.add("failed");
      this.notice(e);
    }
  }

  /** A message on screen before the server has it. */
  private pending(c: Conversation, content: HTMLElement): HTMLLIElement {
    const li = h("li", { class: "message mine pending" }, h("div", { class: "sender" }), content, h("div", { class: "meta" }, "sending…"));
    if (this.open === c) {
      byId("message-list").append(li);
      const box = byId("messages");
      box.scrollTop = box.scrollHeight;
    }
    return li;
  }

  private settle(c: Conversation, li: HTMLLIElement, ack: Promise<{ seq: bigint; serverTimeMs: bigint }>, text: string): void {
    ack.then(
      (a) => {
        li.classList.remove("pending");
        li.dataset.seq = String(a.seq);
        li.dataset.sender = String(this.login.userId);
        li.querySelector(".meta")?.replaceWith(this.meta(a.seq, Number(a.serverTimeMs), true, li.querySelector("img") === null));
        li.querySelector(".meta")?.before(h("div", { class: "reactions" }));
        if (a.seq > c.lastSeq) {
          c.lastSeq = a.seq;
          c.lastText = text;
          c.lastTextSeq = a.seq;
          c.lastActivityMs = Number(a.serverTimeMs);
        }
        if (this.open === c && !this.shown.has(a.seq)) {
          this.shown.set(a.seq, li);
          const list = byId("message-list");
          const after = [...list.children].find((el) => el !== li && BigInt((el as HTMLElement).dataset.seq ?? "0") > a.seq);
          if (after) list.insertBefore(li, after);
        } else {
          li.remove();
        }
        this.renderList();
      },
      (e) => {
        li.classList.add("failed");
        li.querySelector(".meta")!.textContent = "not sent";
        this.notice(e);
      },
    );
  }

  private async recall(seq: bigint): Promise<void> {
    const c = this.open;
    if (!c || !this.session) return;
    try {
      await this.session.recall(c.id, seq);
      this.markRecalled(seq);
    } catch (e) {
      this.notice(e);
    }
  }

  /** Adds the user's `emoji` to message `seq`, or takes it back if it is there. */
  private async react(seq: bigint, emoji: string): Promise<void> {
    const c = this.open;
    if (!c || !this.session) return;
    const mine = this.reactions.get(seq)?.get(emoji)?.mine ?? false;
    try {
      await this.session.react(c.id, seq, emoji, mine);
    } catch (e) {
      this.notice(e);
    }
  }

  /** Puts own message `seq` in the composer to be edited (Escape cancels). */
  private startEditing(seq: bigint): void {
    const li = this.shown.get(seq);
    const input = byId<HTMLTextAreaElement>("composer-text");
    if (!li) return;
    this.editing = seq;
    input.value = li.querySelector(".text")?.textContent ?? "";
    input.placeholder = "Edit the message (Escape cancels)";
    byId("send").textContent = "Save";
    input.focus();
  }

  private stopEditing(): void {
    this.editing = undefined;
    const input = document.getElementById("composer-text") as HTMLTextAreaElement | null;
    if (!input) return;
    input.placeholder = "Write a message";
    byId("send").textContent = "Send";
  }

  /** Deletes message `seq` for this user only (its other devices follow). */
  private async deleteForMe(seq: bigint): Promise<void> {
    const c = this.open;
    if (!c || !this.session) return;
    try {
      await this.session.hide(c.id, { seqs: [seq] });
      this.unshow([seq]);
    } catch (e) {
      this.notice(e);
    }
  }

  /** Takes messages off the screen (deleted for this user). */
  private unshow(seqs: bigint[], clearedSeq = 0n): void {
    for (const [seq, li] of [...this.shown]) {
      if (seqs.includes(seq) || seq <= clearedSeq) {
        li.remove();
        this.shown.delete(seq);
      }
    }
  }

  /** This user's view changed on another device. */
  private hidden(h: Hidden): void {
    if (this.open?.id === h.conversation) this.unshow(h.seqs, h.clearedSeq);
  }

  // --- typing ---

  /** The user typed in the composer: the conversation hears of it now and then. */
  private typed(): void {
    const c = this.open;
    if (!c || !this.session || this.editing !== undefined) return;
    const now = Date.now();
    if (now - this.typingSentAt < TYPING_EVERY_MS) return;
    this.typingSentAt = now;
    this.session.typing(c.id, true);
  }

  private typing(t: TypingNotice): void {
    if (t.userId === this.login.userId) return;
    const who = this.typingNow.get(t.conversation) ?? new Map<bigint, number>();
    if (t.active) who.set(t.userId, Date.now() + t.expiresMs);
    else who.delete(t.userId);
    this.typingNow.set(t.conversation, who);
    this.renderTyping();
  }

  /** "alice is typing…" under the title while a notice lasts. */
  private renderTyping(): void {
    clearTimeout(this.typingTick);
    const now = Date.now();
    const who = this.open ? (this.typingNow.get(this.open.id) ?? new Map<bigint, number>()) : new Map<bigint, number>();
    for (const [u, until] of who) if (until <= now) who.delete(u);
    const names = [...who.keys()].map((u) => this.name(u));
    byId("typing").textContent =
      names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
    if (who.size > 0) {
      const next = Math.min(...who.values()) - now;
      this.typingTick = setTimeout(() => this.renderTyping(), Math.max(50, next));
    }
  }

  // --- the rest ---

  private notice(what: unknown): void {
    const text =
      what instanceof CourierError || what instanceof Error ? what.message : typeof what === "string" ? what : String(what);
    byId("notice").textContent = text;
  }

  private async signOut(): Promise<void> {
    try {
      await this.http.logout();
    } catch {
      // The token may be gone already; signing out here still ends the session.
    }
    this.end("signed out");
  }

  private end(why: string): void {
    if (!this.session) return;
    clearInterval(this.renewPresence);
    clearInterval(this.pollRequests);
    const session = this.session;
    this.session = undefined;
    session?.close();
    this.signedOut(why === "closed by the app" ? "" : why);
  }
}
