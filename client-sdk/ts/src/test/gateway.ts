// A real gateway for the tests: `courier serve` on ephemeral loopback ports with its
// embedded store in a temporary directory (the binary a `cargo build` made, or
// $COURIER_BIN).

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { webcrypto } from "node:crypto";
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { Client, Http, type WebSocketFactory } from "../index.js";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.COURIER_BIN ?? resolve(here, "../../../../target/debug/courier");

// Node 18 has Web Crypto only as a module; browsers and Node 20 have it as a global.
(globalThis as { crypto?: unknown }).crypto ??= webcrypto;

/** The `ws` package as the WebSocket the SDK uses in Node. */
export const nodeWebSocket: WebSocketFactory = (url, protocols) =>
  new WebSocket(url, protocols) as unknown as ReturnType<WebSocketFactory>;

export class Gateway {
  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly http: Http,
  ) {}

  static async start(env: Record<string, string> = {}): Promise<Gateway> {
    if (!existsSync(BIN)) {
      throw new Error(`no courier binary at ${BIN}: run \`cargo build --bin courier\` first (or set COURIER_BIN)`);
    }
    const dir = mkdtempSync(join(tmpdir(), "courier-ts-"));
    const child = spawn(BIN, ["serve", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", dir], {
      env: {
        ...process.env,
        COURIER_QUIC_ENABLED: "false",
        COURIER_PASSWORD_MEMORY_KIB: "64",
        COURIER_PASSWORD_ITERATIONS: "1",
        COURIER_RATE_LIMITS: "off",
        COURIER_LOG: "warn",
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout! });
    const first = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the gateway did not start in time")), 20_000);
      lines.once("line", (line) => {
        clearTimeout(timer);
        resolve(line);
      });
      child.once("exit", (code) => reject(new Error(`the gateway exited (${code})`)));
    });
    const listening = JSON.parse(first) as { event: string; http: string };
    if (listening.event !== "listening") throw new Error(`unexpected first line: ${first}`);
    return new Gateway(child, dir, new Http(listening.http));
  }

  /** Registers `name` and connects a client for it as `device`. */
  async user(name: string, device = `${name}-web`): Promise<{ client: Client; token: string }> {
    await this.http.register(name, "password123");
    const login = await this.http.login(name, "password123");
    const client = await Client.connect(this.http.webSocketUrl, login.token, {
      deviceId: device,
      webSocket: nodeWebSocket,
    });
    return { client, token: login.token };
  }

  async stop(): Promise<void> {
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    await exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
