// What the tests read of messages: their text, and the next few a client is pushed.

import type { Client, Message } from "../index.js";

export function textOf(m: Message): string {
  const c = m.body?.content;
  return c?.case === "text" ? c.value.text : "";
}

/** The next `n` messages `client` is pushed that `keep` accepts (all by default). */
export function collect(client: Client, n: number, keep: (m: Message) => boolean = () => true): Promise<Message[]> {
  const got: Message[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} messages in time`)), 20_000);
    client.onMessage = (m) => {
      if (!keep(m)) return;
      got.push(m);
      if (got.length === n) {
        clearTimeout(timer);
        resolve(got);
      }
    };
  });
}
