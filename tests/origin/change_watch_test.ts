/**
 * The directory origin's change watch: a trusted stat spares the stat of a
 * hit, and no kind of change, made by another process, is ever missed: each
 * is seen by the very next `statNow`, as a stat would see it.
 */

import assert from "node:assert/strict";
import { DirectoryOrigin } from "../../origin/directory.ts";
import { RequestError } from "../../protocol.ts";
import { startServer } from "../../server.ts";
import { type Tree, writeTree } from "../helpers.ts";

/** A served directory `outer/x/root` over `tree`, its origin, and a cleanup. */
async function withOrigin(
  tree: Tree,
  test: (origin: DirectoryOrigin, dirs: { outer: string; root: string }) => Promise<void> | void,
  options: { watchChanges?: boolean } = {},
): Promise<void> {
  const outer = await Deno.realPath(await Deno.makeTempDir({ prefix: "tcpcache-watch-" }));
  const root = `${outer}/x/root`;
  await Deno.mkdir(root, { recursive: true });
  await writeTree(root, tree);
  const origin = await DirectoryOrigin.open(root, options);
  try {
    await test(origin, { outer, root });
  } finally {
    origin.close();
    await Deno.remove(outer, { recursive: true });
  }
}

/** Changes made by another process, as an operator or a deploy would make them. */
async function sh(script: string): Promise<void> {
  const { code, stderr } = await new Deno.Command("sh", { args: ["-c", script], stderr: "piped" })
    .output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
}

function assertNotFound(origin: DirectoryOrigin, path: string): void {
  assert.throws(() => origin.statNow(path), (e) => e instanceof RequestError && e.code === 404);
}

Deno.test("change watch: a trusted stat spares the next stat, and every change to the file is seen at once", async () => {
  await withOrigin({ "f.txt": "first", "other.txt": "other" }, async (origin, { root }) => {
    assert.equal(origin.freshness, "watch");
    const first = origin.statNow("f.txt");
    assert.equal(origin.statNow("f.txt"), first);
    assert.equal(origin.statsTaken, 1);
    const seen = [first.validator];
    const changes = [
      `printf 'FIRST' > ${root}/f.txt`, // rewritten in place, same size
      `printf 'x' >> ${root}/f.txt`, // appended
      `touch -m -d '2001-01-01' ${root}/f.txt`, // only its mtime
      `printf 'new' > ${root}/f.tmp && mv ${root}/f.tmp ${root}/f.txt`, // replaced by a rename
      `rm ${root}/f.txt && printf 'again' > ${root}/f.txt`, // deleted and made again
      `truncate -s 0 ${root}/f.txt`, // emptied
    ];
    for (const change of changes) {
      await sh(change);
      const taken: number = origin.statsTaken;
      const now = origin.statNow("f.txt");
      assert.equal(origin.statsTaken, taken + 1, `stat'ed again after: ${change}`);
      assert.ok(!seen.includes(now.validator), `unseen after: ${change}`);
      assert.equal(now.size, (await Deno.stat(`${root}/f.txt`)).size, change);
      seen.push(now.validator);
      assert.equal(origin.statNow("f.txt"), now, "trusted again after its stat");
    }
    // A change of mode alone is a change too (the validator may not show it).
    await sh(`chmod 600 ${root}/f.txt`);
    const beforeMode: number = origin.statsTaken;
    origin.statNow("f.txt");
    assert.equal(origin.statsTaken, beforeMode + 1);
    await sh(`rm ${root}/f.txt`);
    assertNotFound(origin, "f.txt");
    // A change to another file does not cost this one its trust.
    const other = origin.statNow("other.txt");
    await sh(`printf 'y' > ${root}/f.txt`);
    const before: number = origin.statsTaken;
    assert.equal(origin.statNow("other.txt"), other);
    assert.equal(origin.statsTaken, before);
  });
});

Deno.test("change watch: one check serves what was received before it, and lapses at the next job", async () => {
  await withOrigin({ "f.txt": "first" }, async (origin, { root }) => {
    const first = origin.statNow("f.txt");
    await null; // a job queued after the check above: it has lapsed
    assert.equal(origin.statNow("f.txt"), first); // a check: nothing was reported
    Deno.writeTextFileSync(`${root}/f.txt`, "changed");
    // The same job answers only requests received before its check: the check stands.
    assert.equal(origin.statNow("f.txt"), first);
    await null;
    // A later job may answer a request sent after the change: a new check sees it.
    const taken: number = origin.statsTaken;
    assert.equal(origin.statNow("f.txt").size, "changed".length);
    assert.equal(origin.statsTaken, taken + 1);
  });
});

Deno.test("change watch: a directory on the path renamed, replaced or deleted is seen at once", async () => {
  const tree = { "a/b/c.txt": "old c", "a/b/d/e.txt": "old e", "z.txt": "z" };
  await withOrigin(tree, async (origin, { root }) => {
    const c = origin.statNow("a/b/c.txt");
    const e = origin.statNow("a/b/d/e.txt");
    // The parent renamed away, another directory moved into its place.
    await sh(
      `mv ${root}/a/b ${root}/a/old && mkdir -p ${root}/a/b/d && printf 'new c!' > ${root}/a/b/c.txt` +
        ` && printf 'new e!!' > ${root}/a/b/d/e.txt`,
    );
    assert.notEqual(origin.statNow("a/b/c.txt").validator, c.validator);
    assert.equal(origin.statNow("a/b/c.txt").size, 6);
    assert.notEqual(origin.statNow("a/b/d/e.txt").validator, e.validator);
    assert.equal(origin.statNow("a/b/d/e.txt").size, 7);
    // The new directories are watched in turn.
    await sh(`printf 'newest' > ${root}/a/b/d/e.tmp && mv ${root}/a/b/d/e.tmp ${root}/a/b/d/e.txt`);
    assert.equal(origin.statNow("a/b/d/e.txt").size, 6);
    // A grandparent deleted.
    await sh(`rm -r ${root}/a`);
    assertNotFound(origin, "a/b/c.txt");
    assertNotFound(origin, "a/b/d/e.txt");
    assert.equal(origin.statNow("z.txt").size, 1);
  });
});

Deno.test("change watch: the served directory itself renamed away and replaced (an ancestor moved) is seen at once", async () => {
  await withOrigin({ "f.txt": "old" }, async (origin, { outer, root }) => {
    const old = origin.statNow("f.txt");
    assert.equal(origin.statNow("f.txt"), old);
    // An ancestor of the root renamed, and the same path made anew.
    await sh(`mv ${outer}/x ${outer}/y && mkdir -p ${root} && printf 'brand new' > ${root}/f.txt`);
    const now = origin.statNow("f.txt");
    assert.notEqual(now.validator, old.validator);
    assert.equal(now.size, 9);
  });
});

Deno.test("change watch: files with other links, and paths through a link, are stat'ed every time", async () => {
  const tree = { "real/f.txt": "via a link", "h.txt": "hard linked" };
  await withOrigin(tree, async (origin, { root }) => {
    await sh(`ln ${root}/h.txt ${root}/h2.txt && ln -s real ${root}/linked`);
    for (const path of ["h.txt", "linked/f.txt"]) {
      const before: number = origin.statsTaken;
      origin.statNow(path);
      origin.statNow(path);
      assert.equal(origin.statsTaken, before + 2, path);
    }
    // Written through the other name: the change is still seen.
    const h = origin.statNow("h.txt");
    await sh(`printf 'HARD LINKED' > ${root}/h2.txt`);
    assert.notEqual(origin.statNow("h.txt").validator, h.validator);
  });
});

Deno.test("change watch: writes through a name made or opened outside its directory are seen (the file itself is watched)", async () => {
  await withOrigin({ "f.txt": "trusted!" }, async (origin, { outer, root }) => {
    const writes = [
      // A hard link made after the stat, outside the tree, written through.
      `ln ${root}/f.txt ${outer}/elsewhere && printf 'through the link' > ${outer}/elsewhere`,
      // A descriptor opened through a second link, the link removed, then written.
      `ln ${root}/f.txt ${outer}/second && exec 3>>${outer}/second && rm ${outer}/second` +
      ` && sleep 0.2 && printf 'via fd' >&3`,
    ];
    for (const write of writes) {
      await Deno.remove(`${outer}/elsewhere`).catch(() => {});
      const before = origin.statNow("f.txt");
      assert.equal(origin.statNow("f.txt"), before, "trusted");
      const writing = sh(write);
      if (write.includes("sleep")) {
        // Trusted again while the descriptor is open and the link gone.
        await new Promise((resolve) => setTimeout(resolve, 100));
        origin.statNow("f.txt");
      }
      await writing;
      const after = origin.statNow("f.txt");
      assert.equal(after.size, (await Deno.stat(`${root}/f.txt`)).size, write);
      assert.notEqual(after.validator, before.validator, write);
    }
  });
});

Deno.test("change watch: a file made with O_TMPFILE, linked in, then written through its descriptor, is seen", async () => {
  await withOrigin({}, async (origin, { root }) => {
    const script = `
import ctypes, os, sys
root = sys.argv[1]
fd = os.open(root, os.O_TMPFILE | os.O_WRONLY, 0o644)
os.write(fd, b"first")
# linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, path, AT_SYMLINK_FOLLOW)
libc = ctypes.CDLL(None, use_errno=True)
if libc.linkat(-100, f"/proc/self/fd/{fd}".encode(), -100, f"{root}/new.txt".encode(), 0x400):
    sys.exit(f"linkat: errno {ctypes.get_errno()}")
print("linked", flush=True)
sys.stdin.readline()
os.write(fd, b" and then much more")
os.close(fd)
print("written", flush=True)
`;
    const child = new Deno.Command("python3", {
      args: ["-c", script, root],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.match((await lines.read()).value ?? "", /linked/);
    const before = origin.statNow("new.txt");
    assert.equal(before.size, 5);
    assert.equal(origin.statNow("new.txt"), before, "trusted");
    const stdin = child.stdin.getWriter();
    await stdin.write(new TextEncoder().encode("\n"));
    await stdin.close();
    assert.match((await lines.read()).value ?? "", /written/);
    assert.equal(origin.statNow("new.txt").size, 24);
    await lines.cancel();
    assert.equal((await child.status).code, 0);
  });
});

Deno.test({
  name: "change watch: a mount over a trusted file (or a directory on its path) is seen at once",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    await withOrigin(
      { "f.txt": "under", "other.txt": "mounted over it" },
      async (origin, { root }) => {
        const before = origin.statNow("f.txt");
        assert.equal(origin.statNow("f.txt"), before, "trusted");
        await sh(`mount --bind ${root}/other.txt ${root}/f.txt`);
        try {
          assert.equal(origin.statNow("f.txt").size, "mounted over it".length);
        } finally {
          await sh(`umount ${root}/f.txt`);
        }
        assert.equal(origin.statNow("f.txt").size, "under".length);
      },
    );
  },
});

Deno.test("change watch: a directory asked for as a file does not stop the files below it from being trusted", async () => {
  await withOrigin({ "sub/g.txt": "g" }, (origin) => {
    assertNotFound(origin, "sub");
    const g = origin.statNow("sub/g.txt");
    const taken: number = origin.statsTaken;
    assert.equal(origin.statNow("sub/g.txt"), g);
    assert.equal(origin.statsTaken, taken);
  });
});

Deno.test("change watch: lost events (a queue overflow) drop all trust, so a change made meanwhile is still seen", async () => {
  const limit = Number(await Deno.readTextFile("/proc/sys/fs/inotify/max_queued_events"));
  await withOrigin({ "f.txt": "before" }, async (origin, { root }) => {
    const before = origin.statNow("f.txt");
    // More events than the queue holds, then the change, whose event is lost.
    const count = Math.ceil(limit / 2) + 100;
    await sh(`cd ${root} && seq 1 ${count} | xargs touch && seq 1 ${count} | xargs rm`);
    await sh(`printf 'AFTER!' > ${root}/f.txt`);
    const after = origin.statNow("f.txt");
    assert.notEqual(after.validator, before.validator);
    assert.equal(after.size, 6);
  });
});

Deno.test("change watch off: every request stats its file", async () => {
  await withOrigin({ "f.txt": "x" }, (origin) => {
    assert.equal(origin.freshness, "stat");
    origin.statNow("f.txt");
    origin.statNow("f.txt");
    assert.equal(origin.statsTaken, 2);
  }, { watchChanges: false });
});

Deno.test("change watch: a server that fails to start (its port taken) leaves no descriptor behind", async () => {
  const openDescriptors = () => [...Deno.readDirSync("/proc/self/fd")].length;
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-watch-" });
  await Deno.writeTextFile(`${dir}/a.txt`, "a"); // a listing with an entry held one open
  try {
    const before = openDescriptors();
    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        startServer({ dir, cacheDir: `${dir}/cache`, port: taken.addr.port, onError: () => {} }),
        Deno.errors.AddrInUse,
      );
    }
    assert.equal(openDescriptors(), before);
  } finally {
    taken.close();
    await Deno.remove(dir, { recursive: true });
  }
});
