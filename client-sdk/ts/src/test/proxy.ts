// A TCP proxy for the tests that can cut every connection and refuse new ones for a
// while (a network outage, as a phone in a tunnel sees it).

import { createServer, connect, type Server, type Socket } from "node:net";

export class Proxy {
  private readonly sockets = new Set<Socket>();
  private darkUntil = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(upstreamHost: string, upstreamPort: number): Promise<Proxy> {
    let proxy: Proxy | undefined;
    const server = createServer((client) => {
      if (!proxy || Date.now() < proxy.darkUntil) return void client.destroy();
      const upstream = connect(upstreamPort, upstreamHost);
      for (const s of [client, upstream]) {
        proxy.sockets.add(s);
        s.on("close", () => proxy!.sockets.delete(s));
        s.on("error", () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (!address || typeof address === "string") throw new Error("no proxy port");
    proxy = new Proxy(server, address.port);
    return proxy;
  }

  /** Resets every connection now and refuses new ones for `ms`. */
  blackout(ms: number): void {
    this.darkUntil = Date.now() + ms;
    for (const s of this.sockets) s.destroy();
  }

  /** Refuses connections until `restore` (and resets those open now). */
  cut(): void {
    this.blackout(Number.MAX_SAFE_INTEGER - Date.now());
  }

  /** Lets connections through again. */
  restore(): void {
    this.darkUntil = 0;
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
