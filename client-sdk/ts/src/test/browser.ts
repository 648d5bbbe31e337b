// Real Chromium for the web app's tests: Debian's `chromium` (or $CHROMIUM) driven
// by playwright-core, with screenshots written to test-artifacts/ (or
// $COURIER_ARTIFACTS).

import { existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const ARTIFACTS = process.env.COURIER_ARTIFACTS ?? resolve(here, "../../test-artifacts");

export async function launch(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROMIUM`,
    );
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
  });
}

/** A new browser context (its own storage, like another person's browser) on the app. */
export async function open(browser: Browser, base: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.goto(`${base}/app/`);
  return page;
}

/** Creates an account on the sign-in form and waits for the chat. */
export async function signUp(page: Page, name: string): Promise<void> {
  await page.fill("input[name=name]", name);
  await page.fill("input[name=password]", "password123");
  await page.click("#register-button");
  await page.waitForSelector("#conversations");
}

/** A browser context each for `names`, signed up in this order. */
export async function people(browser: Browser, base: string, ...names: string[]): Promise<Page[]> {
  const pages = [];
  for (const name of names) {
    const page = await open(browser, base);
    await signUp(page, name);
    pages.push(page);
  }
  return pages;
}

/** Starts (or opens) the direct chat with `name`. */
export async function chatWith(page: Page, name: string): Promise<void> {
  await page.fill("#new-chat-name", name);
  await page.press("#new-chat-name", "Enter");
  await page.waitForFunction((n) => document.getElementById("chat-title")?.textContent === n, name);
}

/** Opens a conversation of the list by its name, once it is there. */
export async function openByName(page: Page, name: string): Promise<void> {
  const item = page.locator("#conversations .conversation", { has: page.locator(".name", { hasText: name }) });
  await item.waitFor();
  await item.click();
  await page.waitForFunction((n) => document.getElementById("chat-title")?.textContent === n, name);
}

/** Types a message into the composer and sends it with Enter. */
export async function say(page: Page, text: string): Promise<void> {
  await page.fill("#composer-text", text);
  await page.press("#composer-text", "Enter");
}

/** The open chat's message texts, top to bottom, sent ones only (not pending). */
export function texts(page: Page): Promise<string[]> {
  return page.$$eval("#message-list .message:not(.pending):not(.system) .text", (els) =>
    els.map((e) => e.textContent ?? ""),
  );
}

/** Waits until the open chat shows exactly `expected` (as `texts` reads it). */
export async function waitForTexts(page: Page, expected: string[], timeout = 30_000): Promise<void> {
  try {
    await page.waitForFunction(
      (want) => {
        const got = Array.from(
          document.querySelectorAll("#message-list .message:not(.pending):not(.system) .text"),
          (e) => e.textContent ?? "",
        );
        return got.length >= want.length;
      },
      expected,
      { timeout },
    );
  } catch (e) {
    throw new Error(`waiting for ${expected.length} messages, have: ${JSON.stringify(await texts(page))}`, {
      cause: e,
    });
  }
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}
