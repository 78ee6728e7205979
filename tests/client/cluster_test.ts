/**
 * The cluster: rendezvous hashing's properties on their own, then a real
 * cluster of three nodes, twice: servers on loopback ports in this process,
 * and three test hosts in network namespaces that the test creates (veth
 * pairs, addresses of its own) and removes, one tcpcache process in each.
 * The second is skipped, with the reason, where namespaces cannot be made.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { ClusterClient, type NodeAddress, parseNodes, rankNodes } from "../../client.ts";
import type { CacheListing, Stats } from "../../client.ts";
import { startServer } from "../../server.ts";
import { eventually, seededBytes, sha256, waitForOutput, writeTree } from "../helpers.ts";

const SERVER = fileURLToPath(new URL("../../server.ts", import.meta.url));

Deno.test("rankNodes: paths spread within 2% of even, and the same order for every client", () => {
  const nodes = ["10.0.0.1:9089", "10.0.0.2:9089", "10.0.0.3:9089"];
  const counts = new Map(nodes.map((node) => [node, 0]));
  const paths = Array.from({ length: 30_000 }, (_, i) => `dir${i % 97}/file-${i}.bin`);
  for (const path of paths) {
    const first = rankNodes(path, nodes)[0];
    counts.set(first, counts.get(first)! + 1);
  }
  for (const [node, count] of counts) {
    assert.ok(Math.abs(count / paths.length - 1 / 3) < 0.02, `${node}: ${count}`);
  }
  // The order the nodes are listed in does not matter.
  const reversed = [...nodes].reverse();
  for (const path of paths.slice(0, 1000)) {
    assert.deepEqual(rankNodes(path, reversed), rankNodes(path, nodes));
  }
});

Deno.test("rankNodes: removing or adding a node moves only that node's share of paths", () => {
  const nodes = ["a:1", "b:1", "c:1"];
  const paths = Array.from({ length: 9000 }, (_, i) => `p/${i}`);
  const before = new Map(paths.map((path) => [path, rankNodes(path, nodes)]));
  // Without b: b's paths go to their second choice; no other path moves.
  for (const path of paths) {
    const [first, second] = before.get(path)!;
    const now = rankNodes(path, ["a:1", "c:1"])[0];
    assert.equal(now, first === "b:1" ? second : first, path);
  }
  // With d: only the paths d now wins move, and about a quarter of them do.
  let moved = 0;
  for (const path of paths) {
    const now = rankNodes(path, [...nodes, "d:1"])[0];
    if (now !== before.get(path)![0]) {
      assert.equal(now, "d:1", path);
      moved++;
    }
  }
  assert.ok(Math.abs(moved / paths.length - 1 / 4) < 0.02, `moved ${moved}`);
});

Deno.test("parseNodes: HOST:PORT lists, IPv6 in brackets, clear errors", () => {
  assert.deepEqual(parseNodes("a:1, 10.0.0.2:9089,[::1]:80"), ["a:1", "10.0.0.2:9089", "[::1]:80"]);
  for (const bad of ["", "a", "a:0", "a:70000", "a:1,a:1", "::1:80", "a:b"]) {
    assert.throws(() => parseNodes(bad), RangeError, bad);
  }
});

/** A running cluster, however its nodes run. */
interface Cluster {
  nodes: NodeAddress[];
  /** Stops node `i` abruptly. */
  kill(i: number): Promise<void>;
  /** Starts node `i` again, at the same address, with an empty cache. */
  restart(i: number): Promise<void>;
}

const FILE_COUNT = 1500;

/** The served tree: small files with distinct, seeded contents. */
function clusterTree(): Record<string, Uint8Array> {
  const tree: Record<string, Uint8Array> = {};
  for (let i = 0; i < FILE_COUNT; i++) {
    tree[`set${i % 10}/f${i}.bin`] = seededBytes(256 + (i % 7) * 100, i + 1);
  }
  return tree;
}

/**
 * The scenario both cluster tests run: spread, stickiness, a node killed,
 * the node back.
 */
async function exerciseCluster(cluster: Cluster, tree: Record<string, Uint8Array>): Promise<void> {
  const { nodes } = cluster;
  const paths = Object.keys(tree);
  const owner = new Map(paths.map((path) => [path, rankNodes(path, nodes)]));
  const client = new ClusterClient(nodes, { retryAfterMs: 300 });
  const fetchAll = async () => {
    await Promise.all(paths.map(async (path) => {
      const { bytes } = await client.get(path);
      assert.equal(sha256(bytes!), sha256(tree[path]), path);
    }));
  };
  const perNode = async () => {
    const stats = await client.stats();
    return stats.nodes as Record<NodeAddress, Stats & { up: boolean; cache: { entries: number } }>;
  };
  const cachedOn = async () => {
    const listing = await client.list();
    const byNode = new Map<NodeAddress, Set<string>>(nodes.map((node) => [node, new Set()]));
    for (const entry of listing.entries) byNode.get(entry.node)!.add(entry.path);
    return byNode;
  };
  try {
    // 1. Every path is fetched from its first-ranked node; the spread is even.
    await fetchAll();
    let cached = await cachedOn();
    for (const [i, node] of nodes.entries()) {
      const own = paths.filter((path) => owner.get(path)![0] === node);
      assert.deepEqual([...cached.get(node)!].sort(), own.sort(), `node ${i} holds its paths`);
      const share = own.length / paths.length;
      assert.ok(Math.abs(share - 1 / 3) < 0.05, `node ${i} has ${own.length} of ${paths.length}`);
    }

    // 2. Asked again, every path goes to the same node: all hits.
    await fetchAll();
    let stats = await perNode();
    for (const node of nodes) {
      assert.equal(stats[node].hits, cached.get(node)!.size, `${node}: one hit per own path`);
      assert.equal(stats[node].misses, cached.get(node)!.size, `${node}: no new misses`);
    }

    // 3. A node dies: only its paths move, each to its second choice, and
    //    the bytes stay right.
    await cluster.kill(1);
    await fetchAll();
    cached = await cachedOn();
    const listing = await client.list() as CacheListing & { nodes: { up: boolean }[] };
    assert.deepEqual(listing.nodes.map((node) => node.up), [true, false, true]);
    for (const node of [nodes[0], nodes[2]]) {
      const expected = paths.filter((path) => {
        const [first, second] = owner.get(path)!;
        return first === node || (first === nodes[1] && second === node);
      });
      assert.deepEqual([...cached.get(node)!].sort(), expected.sort(), `${node} after the kill`);
    }
    stats = await perNode();
    const moved = paths.filter((path) => owner.get(path)![0] === nodes[1]).length;
    // The survivors missed once on each of their own paths and once on each
    // of the dead node's, and on nothing else.
    assert.equal(stats[nodes[0]].misses + stats[nodes[2]].misses, paths.length);

    // 4. The node comes back (empty): after the retry pause, its paths return to it.
    await cluster.restart(1);
    await new Promise((resolve) => setTimeout(resolve, 400));
    const before = await perNode();
    await fetchAll();
    const after = await perNode();
    assert.equal(after[nodes[1]].up, true);
    assert.equal(after[nodes[1]].misses, moved, "its paths are fetched from it again");
    for (const node of [nodes[0], nodes[2]]) {
      const own = paths.filter((path) => owner.get(path)![0] === node).length;
      assert.equal(after[node].hits - before[node].hits, own, `${node} serves only its own`);
      assert.equal(after[node].misses, before[node].misses, `${node}: no new misses`);
    }
  } finally {
    client.close();
  }
}

Deno.test("a cluster of three servers on loopback: spread, stickiness, a node killed and back", async () => {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-cluster-" });
  const tree = clusterTree();
  await writeTree(`${root}/files`, tree);
  const start = (i: number, port = 0) =>
    startServer({
      dir: `${root}/files`,
      cacheDir: `${root}/cache${i}`,
      port,
      onError: () => {},
    });
  const servers = [await start(0), await start(1), await start(2)];
  const nodes = servers.map((server) => `127.0.0.1:${server.addr.port}`);
  try {
    await exerciseCluster({
      nodes,
      kill: (i) => servers[i].close(),
      restart: async (i) => {
        servers[i] = await start(i, Number(nodes[i].split(":")[1]));
      },
    }, tree);
  } finally {
    await Promise.all(servers.map((server) => server.close()));
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("ClusterClient: a connection the node closed while idle is replaced, and the node stays up", async () => {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-cluster-" });
  await writeTree(`${root}/files`, { "a.txt": "alpha" });
  const servers = await Promise.all([0, 1].map((i) =>
    startServer({
      dir: `${root}/files`,
      cacheDir: `${root}/cache${i}`,
      port: 0,
      idleTimeoutMs: 200, // the server answers 408 and closes idle connections
      onError: () => {},
    })
  ));
  const nodes = servers.map((server) => `127.0.0.1:${server.addr.port}`);
  const client = new ClusterClient(nodes);
  try {
    const node = client.nodeFor("a.txt");
    assert.equal((await client.get("a.txt")).cache, "miss");
    const owner = servers[nodes.indexOf(node)];
    await eventually(
      async () => (await owner.stats()).connections.open === 0,
      "the idle connection closed",
    );
    assert.equal((await client.get("a.txt")).cache, "hit", "the same node, on a new connection");
    assert.equal(client.nodeFor("a.txt"), node, "not marked down");
    client.close();
    await assert.rejects(client.get("a.txt"), /the cluster client is closed/);
  } finally {
    client.close();
    await Promise.all(servers.map((server) => server.close()));
    await Deno.remove(root, { recursive: true });
  }
});

/** Runs a command; resolves to its output, or throws with its stderr. */
async function sh(command: string, args: string[]): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(command, { args }).output();
  if (code !== 0) {
    throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(stderr).trim()}`);
  }
  return new TextDecoder().decode(stdout);
}

/** Why network namespaces cannot be used here, or undefined when they can. */
async function netnsUnavailable(): Promise<string | undefined> {
  const probe = `tcpc-probe-${Deno.pid}`;
  try {
    await sh("ip", ["netns", "add", probe]);
    await sh("ip", ["netns", "del", probe]);
    return undefined;
  } catch (error) {
    return `cannot create network namespaces: ${(error as Error).message}`;
  }
}

const netnsSkip = await netnsUnavailable();

/** Three hosts: a namespace each, joined to this one by a veth pair on 10.231.N.0/24. */
class TestHosts {
  readonly names: string[];
  readonly addresses: string[];
  #links: string[];

  constructor(count: number) {
    const tag = Deno.pid % 100_000;
    this.names = Array.from({ length: count }, (_, i) => `tcpc-${tag}-${i}`);
    this.addresses = Array.from({ length: count }, (_, i) => `10.231.${i + 1}.2`);
    this.#links = Array.from({ length: count }, (_, i) => `tc${tag}h${i}`); // <= 15 characters
  }

  async create(): Promise<void> {
    await removeStaleHosts();
    for (const [i, name] of this.names.entries()) {
      const link = this.#links[i];
      await sh("ip", ["netns", "add", name]);
      await sh("ip", ["link", "add", link, "type", "veth", "peer", "name", `${link}n`]);
      await sh("ip", ["link", "set", `${link}n`, "netns", name]);
      await sh("ip", ["addr", "add", `10.231.${i + 1}.1/24`, "dev", link]);
      await sh("ip", ["link", "set", link, "up"]);
      const inside = (...args: string[]) => sh("ip", ["netns", "exec", name, "ip", ...args]);
      await inside("addr", "add", `${this.addresses[i]}/24`, "dev", `${link}n`);
      await inside("link", "set", `${link}n`, "up");
      await inside("link", "set", "lo", "up");
    }
  }

  /** Removes every namespace (which removes its end of the veth pair, and so both ends). */
  async remove(): Promise<void> {
    for (const [i, name] of this.names.entries()) {
      await sh("ip", ["netns", "del", name]).catch(() => {});
      await sh("ip", ["link", "del", this.#links[i]]).catch(() => {});
    }
  }
}

/**
 * Removes the namespaces and links a killed run of this test left behind
 * (their names carry the run's process id), so that their routes to
 * 10.231.N.0/24 cannot shadow this run's.
 */
async function removeStaleHosts(): Promise<void> {
  const alive = (pid: string) => {
    try {
      Deno.statSync(`/proc/${pid}`);
      return true;
    } catch {
      return false;
    }
  };
  for (const line of (await sh("ip", ["netns", "list"])).split("\n")) {
    const stale = /^(tcpc-(\d+)-\d+)/.exec(line);
    if (stale && !alive(stale[2])) await sh("ip", ["netns", "del", stale[1]]).catch(() => {});
  }
  for (const line of (await sh("ip", ["-o", "link", "show"])).split("\n")) {
    const stale = /^\d+: (tc(\d+)h\d+)[@:]/.exec(line);
    if (stale && !alive(stale[2])) await sh("ip", ["link", "del", stale[1]]).catch(() => {});
  }
}

/** A tcpcache process inside host `i`'s namespace, once it says it is listening (30 s at most). */
async function startNode(
  hosts: TestHosts,
  i: number,
  root: string,
): Promise<Deno.ChildProcess> {
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      hosts.names[i],
      Deno.execPath(),
      "run",
      "-A",
      SERVER,
      "--dir",
      `${root}/files`,
      "--cache-dir",
      `${root}/cache${i}`,
      "--host",
      hosts.addresses[i],
      "--port",
      "9089",
      "--quiet",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  await waitForOutput(child, child.stdout, /listening on/);
  return child;
}

Deno.test({
  name: netnsSkip
    ? `a cluster of three hosts in network namespaces (skipped: ${netnsSkip})`
    : "a cluster of three hosts in network namespaces: spread, stickiness, a node killed and back",
  ignore: netnsSkip !== undefined,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "tcpcache-netns-" });
    const hosts = new TestHosts(3);
    const nodes: (Deno.ChildProcess | undefined)[] = [];
    const stop = async (i: number) => {
      const child = nodes[i];
      nodes[i] = undefined;
      if (!child) return;
      child.kill("SIGKILL");
      await child.status;
    };
    try {
      const tree = clusterTree();
      await writeTree(`${root}/files`, tree);
      await hosts.create();
      for (let i = 0; i < 3; i++) nodes[i] = await startNode(hosts, i, root);
      await exerciseCluster({
        nodes: hosts.addresses.map((address) => `${address}:9089`),
        kill: stop,
        restart: async (i) => {
          nodes[i] = await startNode(hosts, i, root);
        },
      }, tree);
    } finally {
      for (let i = 0; i < nodes.length; i++) await stop(i);
      await hosts.remove();
      await Deno.remove(root, { recursive: true });
    }
    const left = await sh("ip", ["netns", "list"]);
    for (const name of hosts.names) assert.ok(!left.includes(name), `namespace ${name} removed`);
  },
});
