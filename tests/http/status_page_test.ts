/**
 * The status page in a real browser: Debian's headless Chromium, driven
 * over the DevTools protocol (a WebSocket, no extra package). It checks that
 * the page renders the cache's entries and updates by itself after a new
 * request. Skipped, with the reason in its name, where Chromium is missing.
 *
 * Set TCPCACHE_SCREENSHOT=path.png to save a screenshot of the page.
 */

import assert from "node:assert/strict";
import {
  eventually,
  RawConnection,
  seededBytes,
  seededRandom,
  type Tree,
  waitForOutput,
  withServer,
} from "../helpers.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_BIN") ?? "/usr/bin/chromium";
const missing = (() => {
  try {
    Deno.statSync(CHROMIUM);
    return undefined;
  } catch {
    return `${CHROMIUM} not found (install Debian's chromium package)`;
  }
})();

/** The flags our machines need: no sandbox as root, no network but loopback. */
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--remote-debugging-port=0",
  "--window-size=1200,900",
];

/** A DevTools protocol connection to one page. */
class DevTools {
  #socket: WebSocket;
  #nextId = 1;
  #waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #sessionId = "";

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const waiter = this.#waiting.get(message.id);
      if (!waiter) return; // an event
      this.#waiting.delete(message.id);
      if (message.error) waiter.reject(new Error(JSON.stringify(message.error)));
      else waiter.resolve(message.result);
    };
  }

  /** Connects to the browser and opens `url` in a new page. */
  static async open(browserUrl: string, url: string): Promise<DevTools> {
    const socket = new WebSocket(browserUrl);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error(`cannot connect to ${browserUrl}`));
    });
    const devtools = new DevTools(socket);
    const { targetId } = await devtools.send("Target.createTarget", { url }) as {
      targetId: string;
    };
    const { sessionId } = await devtools.send("Target.attachToTarget", {
      targetId,
      flatten: true,
    }) as { sessionId: string };
    devtools.#sessionId = sessionId;
    return devtools;
  }

  send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.#nextId++;
    const message: Record<string, unknown> = { id, method, params };
    if (this.#sessionId) message.sessionId = this.#sessionId;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#socket.send(JSON.stringify(message));
    });
  }

  /** Evaluates an expression in the page and returns its JSON value. */
  async evaluate<T>(expression: string): Promise<T> {
    const { result } = await this.send("Runtime.evaluate", {
      expression,
      returnByValue: true,
    }) as { result: { value: T } };
    return result.value;
  }

  /** Polls `expression` until `accept` likes its value (at most 15 s). */
  async waitFor<T>(expression: string, accept: (value: T) => boolean, what: string): Promise<T> {
    let last: T | undefined;
    for (let i = 0; i < 150; i++) {
      last = await this.evaluate<T>(expression).catch(() => undefined);
      if (last !== undefined && accept(last)) return last;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.fail(`the page never showed ${what}; last: ${JSON.stringify(last)}`);
  }

  close(): void {
    this.#socket.close();
  }
}

/** Starts Chromium and resolves to it and its DevTools browser URL. */
async function launchChromium(userDataDir: string): Promise<[Deno.ChildProcess, string]> {
  const child = new Deno.Command(CHROMIUM, {
    args: [...CHROMIUM_FLAGS, `--user-data-dir=${userDataDir}`, "about:blank"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const match = await waitForOutput(child, child.stderr, /DevTools listening on (ws:\/\/\S+)/);
  return [child, match[1]];
}

const ENTRY_PATHS =
  `[...document.querySelectorAll("#entries tbody td.path")].map((e) => e.textContent)`;
const RECENT = `[...document.querySelectorAll("#recent tbody td.path")].map((e) => e.textContent)`;

Deno.test({
  name: missing
    ? `status page in headless Chromium (skipped: ${missing})`
    : "status page in headless Chromium: renders the cache's entries and updates after a new request",
  ignore: missing !== undefined,
  fn: async () => {
    const tree: Tree = {
      "a.txt": "first file\n",
      "docs/b.md": "# second\n",
      "data/c.bin": seededBytes(300 * 1024, 4),
    };
    for (let i = 0; i < 40; i++) {
      tree[`pages/p${String(i).padStart(2, "0")}.html`] = seededBytes((i % 7 + 1) * 40_000, i);
    }
    await withServer(tree, { httpPort: 0, cacheSize: 4 * 1024 * 1024 }, async (server) => {
      const conn = await RawConnection.open(server.port);
      const userDataDir = await Deno.makeTempDir({ prefix: "tcpcache-chromium-" });
      let chromium: Deno.ChildProcess | undefined;
      let devtools: DevTools | undefined;
      try {
        await conn.request("GET a.txt");
        await conn.request("GET data/c.bin");
        let browserUrl: string;
        [chromium, browserUrl] = await launchChromium(userDataDir);
        const page = `http://127.0.0.1:${server.server.httpAddr!.port}/-/`;
        devtools = await DevTools.open(browserUrl, page);

        const first = await devtools.waitFor<string[]>(
          ENTRY_PATHS,
          (paths) => paths.length === 2,
          "the two cached entries",
        );
        assert.deepEqual(first, ["a.txt", "data/c.bin"], "in eviction order (FIFO: oldest first)");
        const fill = await devtools.evaluate<string>(`document.getElementById("fill").textContent`);
        assert.match(fill, /2 entries, policy fifo/);

        // A new request: the page shows it without being reloaded.
        await conn.request("GET docs/b.md");
        const after = await devtools.waitFor<string[]>(
          ENTRY_PATHS,
          (paths) => paths.includes("docs/b.md"),
          "the new entry",
        );
        assert.deepEqual(after, ["a.txt", "data/c.bin", "docs/b.md"]);
        await devtools.waitFor<string[]>(
          RECENT,
          (rows) => rows.includes("GET docs/b.md"),
          "the new request among the recent ones",
        );
        const ratio = await devtools.evaluate<string>(
          `document.getElementById("ratio").textContent`,
        );
        assert.match(ratio, /of 3 reads/);
        const origin = await devtools.evaluate<string>(
          `document.getElementById("origin").textContent`,
        );
        assert.match(origin, /^healthy; 0 answers within their lifetime/);
        const state = await devtools.evaluate<string>(
          `document.getElementById("cache-state").textContent`,
        );
        assert.equal(state, "", "a healthy cache shows no warning");
        // What a full disk's STATS.cache looks like on the page (the disk-full test in
        // tests/faults_test.ts checks that STATS says so).
        const degraded = await devtools.evaluate<string>(
          `cacheState({ degraded: "disk full", effectiveCapacity: 3 * 1048576, writeFailures: 2, adopting: 0 })`,
        );
        assert.equal(degraded, "DEGRADED (disk full): holding at most 3.0 MiB; 2 failed writes");

        const screenshot = Deno.env.get("TCPCACHE_SCREENSHOT");
        if (screenshot) {
          await someTraffic(server.port, server.server.httpAddr!.port);
          await devtools.waitFor<number>(
            `document.querySelectorAll("#ratio-chart polyline").length`,
            (n) => n > 0,
            "the hit-ratio chart",
          );
          const { data } = await devtools.send("Page.captureScreenshot", { format: "png" }) as {
            data: string;
          };
          await Deno.writeFile(screenshot, Uint8Array.from(atob(data), (c) => c.charCodeAt(0)));
        }
      } finally {
        devtools?.close();
        conn.close();
        if (chromium) {
          chromium.kill("SIGKILL");
          await chromium.status;
        }
        // Chromium's helper processes may still write there for a moment
        // after the main one is killed.
        await eventually(
          () => Deno.remove(userDataDir, { recursive: true }).then(() => true, () => false),
          `removing ${userDataDir}`,
        );
      }
    });
  },
});

/** Ten seconds of skewed requests over both protocols, for a lively screenshot. */
async function someTraffic(tcpPort: number, httpPort: number): Promise<void> {
  const random = seededRandom(7);
  const conn = await RawConnection.open(tcpPort);
  try {
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      // Skewed: low page numbers are asked for far more often.
      const page = `pages/p${String(Math.floor(40 * random() ** 3)).padStart(2, "0")}.html`;
      if (random() < 0.5) await conn.request(`GET ${page}`);
      else await (await fetch(`http://127.0.0.1:${httpPort}/${page}`)).arrayBuffer();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    conn.close();
  }
}
