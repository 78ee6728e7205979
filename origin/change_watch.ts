/**
 * Freshness without a stat per request: the directory origin's files are
 * watched with inotify, and a file's stat stays trusted until a change to it
 * (or to any directory on its path, or to the mount table) is reported.
 *
 * Why this is as fresh as a stat: the kernel queues an inotify event (and
 * flags the mount table) inside the system call that makes the change,
 * before that call returns. Every {@linkcode ChangeWatch.trusted} takes in
 * what is queued first (one `epoll_wait` asks both), and it is called after
 * the request it answers was received. So a change that completed before the
 * request was sent is taken in before the answer is chosen, exactly as a stat
 * taken then would have seen it.
 *
 * One check serves every request received before it. A check stands until a
 * microtask queued right after it runs; a request answered while it stands
 * is answered by a job that was queued before that microtask (the queue is
 * first in, first out), so before the check, and a job is queued only once
 * the bytes it answers were received. Under load, many requests arrive in
 * one turn of the event loop and share one `epoll_wait` (it was a third of
 * the system calls of a small hit).
 *
 * What is watched: the file itself (so a write through any name, a link made
 * later, a descriptor opened before, is reported), each directory on its
 * path (renames, deletions, replacements), the root's ancestors (renamed or
 * replaced, they change what every path names), and the mount table (a
 * mount or unmount anywhere drops all trust). A lost event (queue overflow)
 * or a failed read drops all trust too.
 *
 * What is not trusted (stat'ed on every request, as before): files on file
 * systems whose changes may not pass through this kernel (network, FUSE,
 * overlayfs), paths through a symbolic link, files with more than one link,
 * and paths whose directories cannot all be watched.
 *
 * Not seen by inotify at all, so not by this: writes through a shared memory
 * map until the mapping is released, Linux native AIO (`io_submit`) writes
 * until the writer closes the file, writes through a loop device backed by a
 * served file, and `chattr` (only the ctime changes). See docs/server.md.
 *
 * @module
 */

import {
  ENOSPC,
  IN_ATTRIB,
  IN_CLOSE_WRITE,
  IN_CREATE,
  IN_DELETE,
  IN_DELETE_SELF,
  IN_DONT_FOLLOW,
  IN_IGNORED,
  IN_ISDIR,
  IN_MASK_ADD,
  IN_MODIFY,
  IN_MOVE_SELF,
  IN_MOVED_FROM,
  IN_MOVED_TO,
  IN_ONLYDIR,
  IN_Q_OVERFLOW,
  Inotify,
} from "./inotify.ts";
import type { OriginStat } from "./origin.ts";

/** What a change to a name in a served directory looks like. */
const DIRECTORY_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |
  IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_MASK_ADD;
/**
 * What a change to a trusted file looks like, seen on the file itself:
 * whatever name it is written through (a link made later, a descriptor
 * opened before, an `O_TMPFILE` linked in).
 */
const FILE_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF |
  IN_DONT_FOLLOW | IN_MASK_ADD;
/** An ancestor of the root matters only when the next name on the chain changes. */
const ANCESTOR_MASK = IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_DELETE_SELF |
  IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_MASK_ADD;

/** File systems whose every change is made by this kernel (statfs magic numbers). */
const LOCAL_FILE_SYSTEMS = new Set([
  0xef53, // ext2, ext3, ext4
  0x58465342, // XFS
  0x9123683e, // Btrfs
  0x01021994, // tmpfs
  0xf2f52010, // F2FS
  0x2fc12fc1, // ZFS
  0x3153464a, // JFS
  0xca451a4e, // bcachefs
]);

/**
 * The most watches (directories and trusted files): a quarter of what the
 * user may have (`max_user_watches`), at most 65,536, so that other programs
 * keep the rest. Past it, trust starts again from nothing.
 */
function watchBudget(): number {
  try {
    const allowed = Number(Deno.readTextFileSync("/proc/sys/fs/inotify/max_user_watches"));
    return Math.max(16, Math.min(65_536, Math.floor(allowed / 4)));
  } catch {
    return 1024;
  }
}

/** Trusted stats of a directory origin's files, kept honest by inotify. */
export class ChangeWatch {
  #inotify: Inotify;
  #root: string;
  /** Trusted stats by protocol path. */
  #trusted = new Map<string, OriginStat>();
  /** The watch on each file {@linkcode prepare} made ready, trusted or about to be. */
  #fileWatch = new Map<string, number>();
  /** What each watch is: a served directory ("" is the root) or a trusted file. */
  #watched = new Map<number, { dir: string } | { file: string }>();
  /** Watched served directories by path. */
  #dirs = new Map<string, number>();
  /** The root's ancestors' watches, each with the name on the chain below it. */
  #ancestors = new Map<number, string>();
  #chainComplete = false;
  /** Whether the last check still covers what is being answered (see the module doc). */
  #checkStands = false;
  #checkLapses = () => {
    this.#checkStands = false;
  };
  #budget = watchBudget();
  #stopped = false;

  private constructor(inotify: Inotify, root: string) {
    this.#inotify = inotify;
    this.#root = root;
  }

  /**
   * A watch of the directory at real path `root`; undefined where one
   * cannot be trusted: no inotify, or not a local file system.
   */
  static start(root: string): ChangeWatch | undefined {
    const inotify = Inotify.open();
    if (!inotify) return undefined;
    const type = inotify.fileSystemType(root);
    if (type === undefined || !LOCAL_FILE_SYSTEMS.has(type)) {
      inotify.close();
      return undefined;
    }
    return new ChangeWatch(inotify, root);
  }

  /**
   * The trusted stat of `path`, after taking in every change reported so
   * far; undefined when it must be stat'ed.
   */
  trusted(path: string): OriginStat | undefined {
    if (this.#trusted.size === 0) return undefined; // nothing to check (or stopped)
    this.#takeInChanges();
    return this.#trusted.get(path);
  }

  /**
   * Watches every directory on `path`'s way and the file itself, before it
   * is stat'ed (so that a change after the stat is reported); false when
   * one cannot be watched (missing, a link, another file system, out of
   * watches), and the stat must not be trusted.
   */
  prepare(path: string): boolean {
    // Changes reported before the stat concern what it will see anyway:
    // taken in now, they cannot cost the trust it is about to earn.
    this.#takeInChanges();
    if (this.#stopped) return false;
    if (this.#watched.size + this.#ancestors.size >= this.#budget) this.#forgetAll();
    if (!this.#chainComplete && !this.#watchAncestors()) return false;
    let dir = "";
    if (!this.#watchDir(dir)) return false;
    for (let slash = path.indexOf("/"); slash !== -1; slash = path.indexOf("/", slash + 1)) {
      dir = path.slice(0, slash);
      if (!this.#watchDir(dir)) return false;
    }
    return this.#watchFile(path);
  }

  /** Trusts `stat`, taken after {@linkcode prepare} returned true, until `path` changes. */
  trust(path: string, stat: OriginStat): void {
    if (this.#fileWatch.has(path)) this.#trusted.set(path, stat);
  }

  /**
   * Drops the watch {@linkcode prepare} put on `path` when its stat earned
   * no trust (not a regular file, more links, an error): a directory asked
   * for as a file must not keep a file watch that its own would collide
   * with.
   */
  release(path: string): void {
    if (!this.#trusted.has(path)) this.#forgetFile(path);
  }

  /** Stops watching. */
  close(): void {
    this.#inotify.close();
  }

  /**
   * Takes in every change reported so far (events, and mount table changes),
   * unless the last check still stands.
   */
  #takeInChanges(): void {
    if (this.#checkStands) return;
    this.#checkStands = true;
    queueMicrotask(this.#checkLapses);
    const pending = this.#inotify.pending();
    if (pending?.events) {
      const drained = this.#inotify.drain((wd, mask, name) => this.#changed(wd, mask, name));
      if (!drained) this.#forgetAll(); // events may be lost
    }
    // A mount or unmount may have changed what any path names.
    if (!pending || pending.mounts) this.#forgetAll();
  }

  #watchFile(path: string): boolean {
    if (this.#fileWatch.has(path)) return true;
    // Local, as a file mounted from another file system onto a served name is not.
    const wd = this.#addServedWatch(`${this.#root}/${path}`, FILE_MASK);
    if (wd === undefined) return false;
    this.#watched.set(wd, { file: path });
    this.#fileWatch.set(path, wd);
    return true;
  }

  #watchDir(dir: string): boolean {
    if (this.#dirs.has(dir)) return true;
    const wd = this.#addServedWatch(
      dir === "" ? this.#root : `${this.#root}/${dir}`,
      DIRECTORY_MASK,
    );
    if (wd === undefined) return false;
    this.#dirs.set(dir, wd);
    this.#watched.set(wd, { dir });
    return true;
  }

  /**
   * A new watch on a served file or directory at real path `real`, or
   * undefined when it cannot be trusted: not on a local file system, not
   * watchable, or an inode already watched under another name (a second
   * link, a bind mount, an ancestor of the root mounted inside it), whose
   * events could not be told apart.
   */
  #addServedWatch(real: string, mask: number): number | undefined {
    if (!this.#isLocal(real)) return undefined;
    const wd = this.#watch(real, mask);
    if (wd < 0 || this.#watched.has(wd) || this.#ancestors.has(wd)) return undefined;
    return wd;
  }

  /** Watches "/" down to the root's parent, each for the next name on the chain. */
  #watchAncestors(): boolean {
    const names = this.#root.split("/").filter((name) => name !== "");
    let at = "";
    for (const name of names) {
      const wd = this.#watch(at === "" ? "/" : at, ANCESTOR_MASK);
      if (wd < 0 || this.#ancestors.has(wd)) {
        // An unreadable ancestor, or out of watches: no chain, no trust.
        this.#forgetAll();
        return false;
      }
      this.#ancestors.set(wd, name);
      at += `/${name}`;
    }
    this.#chainComplete = true;
    return true;
  }

  #isLocal(path: string): boolean {
    const type = this.#inotify.fileSystemType(path);
    return type !== undefined && LOCAL_FILE_SYSTEMS.has(type);
  }

  /**
   * Adds a watch; out of watches (other programs took them), drops every
   * trust so that ours are given back, and the budget shrinks to what was
   * had.
   */
  #watch(path: string, mask: number): number {
    const wd = this.#inotify.addWatch(path, mask);
    if (wd === -ENOSPC) {
      this.#budget = Math.max(16, Math.floor((this.#watched.size + this.#ancestors.size) / 2));
      this.#forgetAll();
    }
    return wd;
  }

  #changed(wd: number, mask: number, name: string): void {
    if (mask & IN_Q_OVERFLOW) {
      this.#forgetAll();
      return;
    }
    const next = this.#ancestors.get(wd);
    if (next !== undefined) {
      if (name === next || name === "" || mask & IN_IGNORED) this.#forgetAll();
      return;
    }
    const watched = this.#watched.get(wd);
    if (watched === undefined) return; // a watch already dropped
    if ("file" in watched) {
      this.#forgetFile(watched.file);
      return;
    }
    const dir = watched.dir;
    if (name === "" || mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
      this.#forgetUnder(dir);
      return;
    }
    const path = dir === "" ? name : `${dir}/${name}`;
    // A file's change is its own; a directory's (renamed, deleted, its
    // mode changed) is everything below it, unless it is new.
    if (mask & IN_ISDIR && !(mask & IN_CREATE)) this.#forgetUnder(path);
    else this.#forgetFile(path);
  }

  /** Drops the trust of the file at `path`, and its watch. */
  #forgetFile(path: string): void {
    this.#trusted.delete(path);
    const wd = this.#fileWatch.get(path);
    if (wd === undefined) return;
    this.#fileWatch.delete(path);
    this.#watched.delete(wd);
    this.#inotify.removeWatch(wd);
  }

  /**
   * Drops the trust of `path` and of everything below it, and the watches
   * of the directories at or below it: a name that changed may now be
   * another directory, watched anew when next needed.
   */
  #forgetUnder(path: string): void {
    if (path === "") {
      this.#forgetAll();
      return;
    }
    const prefix = `${path}/`;
    this.#forgetFile(path);
    for (const file of [...this.#fileWatch.keys()]) {
      if (file.startsWith(prefix)) this.#forgetFile(file);
    }
    for (const [dir, wd] of this.#dirs) {
      if (dir === path || dir.startsWith(prefix)) {
        this.#dirs.delete(dir);
        this.#watched.delete(wd);
        this.#inotify.removeWatch(wd);
      }
    }
  }

  /**
   * Drops every trust and every watch (they are set up again as requests
   * come), all at once: a new inotify descriptor, so that no removal floods
   * the queue.
   */
  #forgetAll(): void {
    if (this.#watched.size + this.#ancestors.size > 0 && !this.#inotify.reset()) {
      this.#stopped = true; // no descriptor: nothing is trusted from now on
    }
    this.#trusted.clear();
    this.#watched.clear();
    this.#fileWatch.clear();
    this.#dirs.clear();
    this.#ancestors.clear();
    this.#chainComplete = false;
  }
}
