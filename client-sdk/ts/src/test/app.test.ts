// The web chat app (served by the gateway at /app/) in real headless Chromium: two
// people chat both ways, one is offline while 50 messages are sent, a group of three,
// an image. Screenshots go to test-artifacts/.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";
import { build } from "esbuild";
import type { Browser } from "playwright-core";
// @ts-expect-error: a plain ES module without types
import { appBuild } from "../../scripts/build-app.mjs";
import { directConversation, textBody } from "../index.js";
import { Gateway } from "./gateway.js";
import { Proxy } from "./proxy.js";
import { chatWith, launch, open, openByName, people, say, screenshot, signUp, texts, waitForTexts } from "./browser.js";

const here = dirname(fileURLToPath(import.meta.url));
let browser: Browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test("the app the gateway serves is what its sources build to", async () => {
  const dir = mkdtempSync(join(tmpdir(), "courier-app-"));
  try {
    await build(appBuild(join(dir, "app.js")));
    const built = readFileSync(join(dir, "app.js"));
    const committed = readFileSync(resolve(here, "../../../../gateway/app/app.js"));
    assert.ok(built.equals(committed), "gateway/app/app.js is stale: run `npm run app` in client-sdk/ts and commit it");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("two people chat both ways: unread count, read receipt, presence, recall", async () => {
  const gw = await Gateway.start();
  try {
    const [alice, bob] = await people(browser, gw.http.base, "alice", "bob");

    await chatWith(alice, "bob");
    // Presence is for friends: alice asks, bob accepts, alice sees him online.
    await alice.click("#friend");
    await bob.locator("#request-list .request", { hasText: "alice wants to be friends" }).locator(".accept").click();
    await alice.waitForSelector("#chat-presence.online");
    await alice.locator("#friend").waitFor({ state: "hidden" });
    await say(alice, "hi bob");
    await say(alice, "are you there?");
    await waitForTexts(alice, ["hi bob", "are you there?"]);

    // Bob's list learns of the conversation, with two unread and the last message.
    const item = bob.locator("#conversations .conversation", { hasText: "alice" });
    await item.locator(".badge", { hasText: "2" }).waitFor();
    assert.equal(await item.locator(".preview").textContent(), "are you there?");
    await openByName(bob, "alice");
    await waitForTexts(bob, ["hi bob", "are you there?"]);
    await item.locator(".badge").waitFor({ state: "detached" });

    // Opening it read it: alice's messages show the receipt.
    await alice.locator("#message-list .message.mine .receipt", { hasText: "Read" }).first().waitFor();
    await say(bob, "yes, hello alice");
    await waitForTexts(alice, ["hi bob", "are you there?", "yes, hello alice"]);
    assert.deepEqual(await texts(bob), ["hi bob", "are you there?", "yes, hello alice"]);

    // Alice recalls her second message: both see it recalled.
    await alice.locator("#message-list .message.mine", { hasText: "are you there?" }).locator(".recall").click();
    await bob.locator("#message-list .message .text.recalled").waitFor();
    assert.deepEqual(await texts(bob), ["hi bob", "Message recalled", "yes, hello alice"]);
    await screenshot(alice, "chat-alice");
    await screenshot(bob, "chat-bob");
  } finally {
    await gw.stop();
  }
});

test("offline while alice sends 50: bob's page shows each once, in order, after it comes back", async () => {
  const gw = await Gateway.start();
  const url = new URL(gw.http.base);
  const proxy = await Proxy.start(url.hostname, Number(url.port));
  try {
    const alice = await open(browser, gw.http.base);
    const bob = await open(browser, `http://127.0.0.1:${proxy.port}`); // bob's network runs through the proxy
    await signUp(alice, "alice");
    await signUp(bob, "bob");
    await chatWith(alice, "bob");
    await say(alice, "before");
    await openByName(bob, "alice");
    await waitForTexts(bob, ["before"]);

    proxy.cut();
    await bob.context().setOffline(true);
    await bob.locator("#connection", { hasText: "reconnecting" }).waitFor();
    const fifty = Array.from({ length: 50 }, (_, i) => `m${i}`);
    for (const t of fifty) await say(alice, t);
    await waitForTexts(alice, ["before", ...fifty]);
    await alice.waitForFunction(() => document.querySelectorAll("#message-list .message.pending").length === 0);
    await screenshot(bob, "offline-bob");

    proxy.restore();
    await bob.context().setOffline(false);
    await waitForTexts(bob, ["before", ...fifty], 60_000);
    await bob.locator("#connection", { hasText: "online" }).waitFor();
    assert.deepEqual(await texts(bob), ["before", ...fifty], "each once, in order");
    const seqs = await bob.$$eval("#message-list .message", (els) => els.map((e) => Number((e as HTMLElement).dataset.seq)));
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    assert.equal(new Set(seqs).size, seqs.length);
    await screenshot(bob, "back-online-bob");
  } finally {
    await proxy.close();
    await gw.stop();
  }
});

test("a group of three: created in the page, everyone sees everyone's messages with names", async () => {
  const gw = await Gateway.start();
  try {
    const [alice, bob, carol] = await people(browser, gw.http.base, "alice", "bob", "carol");

    await alice.click(".new-group summary");
    await alice.fill("#new-group-name", "trio");
    await alice.fill("#new-group-members", "bob, carol");
    await alice.press("#new-group-members", "Enter");
    await alice.waitForFunction(() => document.getElementById("chat-title")?.textContent === "trio");
    // The embedded default invites: bob and carol join from their requests.
    for (const page of [bob, carol]) {
      await page.locator("#request-list .invitation", { hasText: "alice invites you to “trio”" }).locator(".accept").click();
      await openByName(page, "trio");
    }
    await alice.locator("#message-list .message.system", { hasText: "carol joined" }).waitFor();
    await say(alice, "hello trio");
    for (const page of [bob, carol]) {
      await waitForTexts(page, ["hello trio"]);
      await page.locator("#message-list .message.theirs .sender", { hasText: "alice" }).waitFor();
    }
    await say(bob, "hi from bob");
    await say(carol, "carol here");
    for (const page of [alice, bob, carol]) {
      await waitForTexts(page, ["hello trio", "hi from bob", "carol here"]);
      const all = await texts(page);
      assert.deepEqual([...all].sort(), ["carol here", "hello trio", "hi from bob"]);
    }
    // Every page orders them by seq: the same order everywhere.
    const orders = await Promise.all([alice, bob, carol].map(texts));
    assert.deepEqual(orders[1], orders[0]);
    assert.deepEqual(orders[2], orders[0]);
    await alice.locator("#message-list .message.theirs .sender", { hasText: "carol" }).waitFor();
    await screenshot(carol, "group-carol");
  } finally {
    await gw.stop();
  }
});

test("in a chat: typing shown, a reaction, an edit, delete for me, a mention mark", async () => {
  const gw = await Gateway.start();
  try {
    const [alice, bob] = await people(browser, gw.http.base, "alice", "bob");
    await chatWith(alice, "bob");
    await say(alice, "lunch at noon?");
    await openByName(bob, "alice");
    await waitForTexts(bob, ["lunch at noon?"]);

    // Bob types: alice is told, under the title.
    await bob.locator("#composer-text").pressSequentially("sure");
    await alice.locator("#typing", { hasText: "bob is typing…" }).waitFor();
    await bob.fill("#composer-text", "");

    // Bob reacts: both see the count, bob's own marked.
    await bob.locator("#message-list .message.theirs", { hasText: "lunch at noon?" }).locator(".react").click();
    await alice.locator('#message-list .message.mine .reaction[data-emoji="👍"]', { hasText: "👍 1" }).waitFor();
    await bob.locator("#message-list .message.theirs .reaction.mine", { hasText: "👍 1" }).waitFor();

    // Alice edits her message: bob sees the new text, marked edited, in place.
    await alice.locator("#message-list .message.mine", { hasText: "lunch at noon?" }).locator(".edit").click();
    await alice.fill("#composer-text", "lunch at one?");
    await alice.press("#composer-text", "Enter");
    await bob.locator("#message-list .message.theirs .text", { hasText: "lunch at one?" }).waitFor();
    await bob.locator("#message-list .message.theirs .edited").waitFor();
    assert.deepEqual(await texts(bob), ["lunch at one?"]);
    await alice.locator("#message-list .message.mine .edited").waitFor();
    // The list's preview of the last message follows the edit, on both pages.
    for (const [page, peer] of [[bob, "alice"], [alice, "bob"]] as const) {
      await page.locator("#conversations .conversation", { hasText: peer }).locator(".preview", { hasText: "lunch at one?" }).waitFor();
    }
    await screenshot(bob, "reactions-edits-bob");

    // Bob deletes it for himself: gone from his page (and after a reload), kept on alice's.
    await bob.locator("#message-list .message.theirs").locator(".delete").click();
    await bob.locator("#message-list .message.theirs").waitFor({ state: "detached" });
    assert.deepEqual(await texts(alice), ["lunch at one?"]);
    await say(alice, "still there?");
    await waitForTexts(bob, ["still there?"]);
    await bob.reload();
    await bob.waitForSelector("#conversations");
    await openByName(bob, "alice");
    await waitForTexts(bob, ["still there?"]);
    assert.deepEqual(await texts(bob), ["still there?"]);

    // Carol (through the SDK) mentions bob: his list marks the conversation.
    const carol = await gw.user("carol");
    const bobId = (await gw.http.withToken(carol.token).userByName("bob")).userId;
    await carol.client.send(directConversation(carol.client.userId, bobId), textBody("@bob look", [bobId]));
    const item = bob.locator("#conversations .conversation", { hasText: "carol" });
    await item.locator(".mention-badge").waitFor();
    await openByName(bob, "carol");
    await item.locator(".mention-badge").waitFor({ state: "detached" });
    carol.client.close();
  } finally {
    await gw.stop();
  }
});

test("history pages: the newest 30 first, earlier ones on request, the view kept in order", async () => {
  const gw = await Gateway.start();
  try {
    const [alice, bob] = await people(browser, gw.http.base, "alice", "bob");
    await chatWith(alice, "bob");
    const all = Array.from({ length: 45 }, (_, i) => `h${i}`);
    for (const t of all) await say(alice, t);
    await waitForTexts(alice, all);
    await openByName(bob, "alice");
    await waitForTexts(bob, all.slice(15));
    assert.deepEqual(await texts(bob), all.slice(15), "the newest page only");
    await bob.click("#load-earlier");
    await waitForTexts(bob, all);
    assert.deepEqual(await texts(bob), all);
    await bob.locator("#load-earlier").waitFor({ state: "hidden" });
  } finally {
    await gw.stop();
  }
});

test("an image message: uploaded from one page, shown in the other", async () => {
  const gw = await Gateway.start();
  try {
    const [alice, bob] = await people(browser, gw.http.base, "alice", "bob");
    await chatWith(alice, "bob");
    await say(alice, "a picture:");
    await alice.setInputFiles("#composer-file", { name: "squares.png", mimeType: "image/png", buffer: png(48, 32) });
    await alice.locator("#message-list .message.mine:not(.pending) img.image").waitFor();

    await openByName(bob, "alice");
    const img = bob.locator("#message-list .message.theirs img.image");
    await img.waitFor();
    await bob.waitForFunction(() => {
      const i = document.querySelector<HTMLImageElement>("#message-list .message.theirs img.image");
      return !!i && i.complete && i.naturalWidth > 0;
    });
    const size = await img.evaluate((i: HTMLImageElement) => [i.naturalWidth, i.naturalHeight]);
    assert.deepEqual(size, [48, 32], "the bytes came back through the signed link");
    await screenshot(bob, "image-bob");
  } finally {
    await gw.stop();
  }
});

/** A `width`×`height` PNG of coloured squares. */
function png(width: number, height: number): Buffer {
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) {
      const on = (Math.floor(x / 8) + Math.floor(y / 8)) % 2 === 0;
      row.set(on ? [47, 111, 222] : [250, 200, 60], 1 + x * 3);
    }
    rows.push(row);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function chunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

function crc32(bytes: Uint8Array): number {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}
