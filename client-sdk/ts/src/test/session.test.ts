// Sessions that outlive their connections, against a real gateway through a proxy
// that drops the network.

import { test } from "node:test";
import assert from "node:assert/strict";
import { MemoryCursors, Session, directConversation, type Message } from "../index.js";
import { Gateway, nodeWebSocket } from "./gateway.js";
import { Proxy } from "./proxy.js";
import { textOf } from "./messages.js";

test("offline while 50 messages are sent: each arrives once, in order, after the reconnect", async () => {
  const gw = await Gateway.start();
  const url = new URL(gw.http.base);
  const proxy = await Proxy.start(url.hostname, Number(url.port));
  try {
    const alice = await gw.user("alice");
    await gw.http.register("bob", "password123");
    const bobLogin = await gw.http.login("bob", "password123");
    const cursors = new MemoryCursors();
    const bob = await Session.start(`ws://127.0.0.1:${proxy.port}/v1/ws`, bobLogin.token, {
      deviceId: "bob-web",
      webSocket: nodeWebSocket,
      cursors,
      backoffInitialMs: 50,
      backoffMaxMs: 500,
    });
    const c = directConversation(alice.client.userId, bob.user);
    const got: Message[] = [];
    let wake = () => {};
    bob.onMessage = (m) => {
      got.push(m);
      wake();
    };
    const states: string[] = [];
    bob.onState = (s) => states.push(s);
    const until = async (n: number) => {
      const deadline = Date.now() + 20_000;
      while (got.length < n) {
        if (Date.now() > deadline) throw new Error(`only ${got.length} of ${n} messages`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 100);
        });
      }
    };

    await alice.client.sendText(c, "before");
    await until(1);
    proxy.blackout(1_000);
    // Bob writes into the outage; alice writes 50.
    const during = bob.sendText(c, "from bob, offline");
    for (let i = 0; i < 50; i++) await alice.client.sendText(c, `m${i}`);
    await until(51);
    const ack = await during;

    assert.deepEqual(got.map(textOf), ["before", ...Array.from({ length: 50 }, (_, i) => `m${i}`)]);
    const seqs = got.map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => (a < b ? -1 : 1)), "in seq order");
    assert.equal(new Set(seqs).size, seqs.length, "each once");
    assert.ok(states.includes("offline") && states.at(-1) === "online", states.join(","));
    // The resend was stored once, after the 50 or among them, never twice.
    const history = await alice.client.history(c, 1, 0n, 100);
    assert.equal(history.messages.filter((m) => textOf(m) === "from bob, offline").length, 1);
    assert.ok(ack.seq > 1n);
    assert.equal(cursors.cursors.get(c), bob.cursor(c));
    bob.close();
    alice.client.close();
  } finally {
    await proxy.close();
    await gw.stop();
  }
});
