// The SDK against a real gateway on loopback, over WebSocket.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Client,
  CourierError,
  Direction,
  ErrorCode,
  PushProvider,
  directConversation,
  textBody,
  type TypingNotice,
} from "../index.js";
import { Gateway, nodeWebSocket } from "./gateway.js";
import { collect, textOf } from "./messages.js";

test("two users chat both ways in seq order and page through history", async () => {
  const gw = await Gateway.start();
  try {
    const alice = await gw.user("alice");
    const bob = await gw.user("bob");
    const c = directConversation(alice.client.userId, bob.client.userId);

    const arriving = collect(bob.client, 30);
    const acks = [];
    for (let i = 0; i < 30; i++) acks.push(await alice.client.sendText(c, `hi bob ${i}`));
    assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: 30 }, (_, i) => BigInt(i + 1)));
    const got = await arriving;
    assert.deepEqual(got.map((m) => m.seq), acks.map((a) => a.seq));
    assert.equal(textOf(got[7]), "hi bob 7");
    assert.equal(got[0].sender, alice.client.userId);
    bob.client.ack(c, 30n);

    const replies = collect(alice.client, 5);
    await Promise.all(Array.from({ length: 5 }, (_, i) => bob.client.sendText(c, `re ${i}`)));
    assert.deepEqual((await replies).map((m) => m.seq), [31n, 32n, 33n, 34n, 35n]);

    const newest = await alice.client.history(c, Direction.BACKWARD, 0n, 10);
    assert.deepEqual(newest.messages.map((m) => m.seq), Array.from({ length: 10 }, (_, i) => BigInt(26 + i)));
    assert.equal(newest.hasMore, true);
    const oldest = await alice.client.history(c, Direction.FORWARD, 0n, 3);
    assert.deepEqual(oldest.messages.map((m) => m.seq), [1n, 2n, 3n]);

    // A resend with the same id is stored once.
    const first = await alice.client.send(c, textBody("once"), "same-id-1");
    const again = await alice.client.send(c, textBody("once"), "same-id-1");
    assert.equal(again.seq, first.seq);
    assert.equal(again.duplicate, true);

    // An edit reaches the peer as an event; history shows the new text, marked.
    const editEvent = collect(bob.client, 1, (m) => m.body?.content.case === "system");
    const edit = await alice.client.edit(c, first.seq, "once, edited");
    const [event] = await editEvent;
    assert.equal(event.seq, edit.eventSeq);
    assert.equal(event.body?.content.case, "system");
    const edited = await bob.client.history(c, Direction.FORWARD, first.seq - 1n, 1);
    assert.equal(textOf(edited.messages[0]), "once, edited");
    assert.equal(edited.messages[0].edited?.count, 1);

    // A reaction: an event to the peer, counts in history, the reader's own marked.
    const reactionEvent = collect(alice.client, 1, (m) => m.body?.content.case === "system");
    const reacted = await bob.client.react(c, first.seq, "👍");
    assert.equal(reacted.changed, true);
    assert.equal((await reactionEvent)[0].seq, reacted.eventSeq);
    const withReactions = await alice.client.history(c, Direction.FORWARD, first.seq - 1n, 1);
    const counts = withReactions.messages[0].reactions.map((r) => [r.emoji, r.count, r.mine]);
    assert.deepEqual(counts, [["👍", 1n, false]]);

    // Delete for me: gone from Alice's history, not from Bob's.
    const hidden = await alice.client.hide(c, { seqs: [first.seq] });
    assert.deepEqual(hidden.seqs, [first.seq]);
    const mine = await alice.client.history(c, Direction.FORWARD, first.seq - 1n, 1);
    assert.notEqual(mine.messages[0]?.seq, first.seq);
    const theirs = await bob.client.history(c, Direction.FORWARD, first.seq - 1n, 1);
    assert.equal(theirs.messages[0].seq, first.seq);

    // Typing reaches the peer, never stored.
    const typing = new Promise<TypingNotice>((resolve) => (bob.client.onTyping = resolve));
    alice.client.typing(c, true);
    const notice = await typing;
    assert.deepEqual([notice.conversation, notice.userId, notice.active], [c, alice.client.userId, true]);
    assert.ok(notice.expiresMs > 0);
    alice.client.close();
    bob.client.close();
  } finally {
    await gw.stop();
  }
});

test("errors come back with their stable codes", async () => {
  const gw = await Gateway.start();
  try {
    await assert.rejects(
      Client.connect(gw.http.webSocketUrl, "not-a-token", { deviceId: "x", webSocket: nodeWebSocket }),
      (e: unknown) => e instanceof CourierError && e.code === ErrorCode.BAD_TOKEN,
    );
    const alice = await gw.user("alice");
    await assert.rejects(
      alice.client.sendText("g:999999", "to nowhere"),
      (e: unknown) => e instanceof CourierError && e.code !== ErrorCode.UNSPECIFIED,
    );
    // Push registration is answered (this gateway has no push service configured).
    await assert.rejects(
      alice.client.setPushToken({ provider: PushProvider.FCM, token: "t", appId: "p" }),
      (e: unknown) => e instanceof CourierError && e.code === ErrorCode.NOT_IMPLEMENTED,
    );
    await alice.client.setPushToken(null);
    alice.client.close();
  } finally {
    await gw.stop();
  }
});
