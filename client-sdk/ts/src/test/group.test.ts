// A group of three over WebSocket, read receipts and the conversation list, recall.

import { test } from "node:test";
import assert from "node:assert/strict";
import { directConversation, type Client, type Message, type ReadReceipt } from "../index.js";
import { Gateway } from "./gateway.js";
import { collect, textOf } from "./messages.js";

/** The next `n` text messages `client` is pushed (system events skipped). */
const texts = (client: Client, n: number) => collect(client, n, (m) => m.body?.content.case === "text");

test("a group of three: everyone sees every text once, in seq order", async () => {
  const gw = await Gateway.start({ COURIER_GROUP_ADD_POLICY: "anyone" });
  try {
    const alice = await gw.user("alice");
    const bob = await gw.user("bob");
    const carol = await gw.user("carol");
    const group = await gw.http
      .withToken(alice.token)
      .createGroup("three", [bob.client.userId, carol.client.userId]);
    const atBob = texts(bob.client, 10);
    const atCarol = texts(carol.client, 20);
    const atAlice = texts(alice.client, 10);
    const sent = [];
    for (let i = 0; i < 10; i++) {
      sent.push((await alice.client.sendText(group.conversation, `a${i}`)).seq);
      sent.push((await bob.client.sendText(group.conversation, `b${i}`)).seq);
    }
    const [b, c, a] = await Promise.all([atBob, atCarol, atAlice]);
    const bySeq = (ms: Message[]) => ms.map((m) => m.seq);
    // A device is not pushed its own messages: carol gets all 20, alice bob's, bob alice's.
    assert.deepEqual(bySeq(c), sent);
    assert.deepEqual(c.map(textOf).slice(0, 4), ["a0", "b0", "a1", "b1"]);
    assert.deepEqual(bySeq(a), sent.filter((_, i) => i % 2 === 1));
    assert.deepEqual(bySeq(b), sent.filter((_, i) => i % 2 === 0));
    for (const c of [alice, bob, carol]) c.client.close();
  } finally {
    await gw.stop();
  }
});

test("read receipts reach the peer, the list counts unread, recall erases", async () => {
  const gw = await Gateway.start();
  try {
    const alice = await gw.user("alice");
    const bob = await gw.user("bob");
    const c = directConversation(alice.client.userId, bob.client.userId);
    const arrived = texts(bob.client, 3);
    for (const t of ["one", "two", "three"]) await alice.client.sendText(c, t);
    await arrived;

    const listed = await gw.http.withToken(bob.token).conversations();
    const entry = listed.find((e) => e.conversation === c);
    assert.equal(entry?.unread, 3);
    assert.equal(entry?.lastSeq, 3n);

    const receipt = new Promise<ReadReceipt>((resolve) => (alice.client.onReadReceipt = resolve));
    bob.client.reportRead(c, 2n);
    const r = await receipt;
    assert.equal(r.reader, bob.client.userId);
    assert.equal(r.seq, 2n);
    const after = (await gw.http.withToken(bob.token).conversations()).find((e) => e.conversation === c);
    assert.equal(after?.unread, 1);

    const recalled = new Promise<Message>((resolve) => (bob.client.onMessage = resolve));
    const ack = await alice.client.recall(c, 3n);
    assert.equal(ack.eventSeq, 4n);
    const event = await recalled;
    assert.equal(event.seq, 4n);
    const page = await bob.client.history(c, 2, 0n, 10);
    const third = page.messages.find((m) => m.seq === 3n);
    assert.ok(third?.recalled, "the message is marked recalled");
    assert.equal(textOf(third!), "", "and its text is gone");
    alice.client.close();
    bob.client.close();
  } finally {
    await gw.stop();
  }
});

test("moderation over HTTP: a join request told live and approved, a ban, a mute", async () => {
  const gw = await Gateway.start({ COURIER_GROUP_ADD_POLICY: "anyone" });
  try {
    const alice = await gw.user("alice");
    const bob = await gw.user("bob");
    const carol = await gw.user("carol");
    const asAlice = gw.http.withToken(alice.token);
    const asCarol = gw.http.withToken(carol.token);
    const group = await asAlice.createGroup("gated", [bob.client.userId], "approval");

    // Carol asks; alice (the owner) is told at once and approves.
    const told = new Promise<{ groupId: bigint; userId: bigint; message: string }>(
      (resolve) => (alice.client.onJoinRequested = resolve),
    );
    assert.equal(await asCarol.joinGroup(group.groupId, "hello"), "requested");
    const request = await told;
    assert.deepEqual(
      [request.groupId, request.userId, request.message],
      [group.groupId, carol.client.userId, "hello"],
    );
    const pending = await asAlice.joinRequests(group.groupId);
    assert.deepEqual(
      pending.map((r) => [r.userId, r.message]),
      [[carol.client.userId, "hello"]],
    );
    await asAlice.answerJoinRequest(group.groupId, carol.client.userId, true);
    const members = await asAlice.groupMembers(group.groupId);
    assert.ok(members.some((m) => m.userId === carol.client.userId));

    // A mute refuses carol's sends; lifted, she speaks; banned, she is out for good.
    await asAlice.muteMember(group.groupId, carol.client.userId, 60_000);
    await assert.rejects(carol.client.sendText(group.conversation, "hi"), /MUTED/);
    await asAlice.muteMember(group.groupId, carol.client.userId, 0);
    await carol.client.sendText(group.conversation, "hi");
    await asAlice.ban(group.groupId, carol.client.userId);
    await assert.rejects(asCarol.joinGroup(group.groupId, "again?"), /banned_from_group/);
    const after = await asAlice.groupMembers(group.groupId);
    assert.ok(!after.some((m) => m.userId === carol.client.userId));
    for (const c of [alice, bob, carol]) c.client.close();
  } finally {
    await gw.stop();
  }
});
