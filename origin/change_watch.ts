/**
 * Freshness without a stat per request: the directory origin's files are
 * watched with inotify, and a file's stat stays trusted until a change to it
 * (or to any directory on its path) is reported.
 *
 * Why this is as fresh as a stat: the kernel queues an inotify event inside
 * the system call that makes the change, before that call returns. Every
 * {@linkcode ChangeWatch.trusted} drains the queue first, and it is called
 * after the request it answers was received. So a change that completed
 * before the request was sent has its event drained before the answer is
 * chosen, exactly as a stat taken then would have seen it.
 *
 * What is trusted, and what is not (those are stat'ed on every request, as
 * before):
 *
 * - Only files on local file systems (ext4, XFS, Btrfs, tmpfs, ...), whose
 *   every change goes through this kernel. Network and FUSE file systems
 *   (NFS, CIFS, Ceph, 9p, FUSE) and overlayfs, whose lower layers can change
 *   unseen, are not.
 * - Only paths without symbolic links, and only files with one link: a
 *   change made through another hard link would be reported to the other
 *   name's directory.
 * - A watch covers each directory on the path, and the root's ancestors
 *   (renamed or replaced, they change what every path names). A lost event
 *   (queue overflow), a failed read, or a change to the root's chain drops
 *   all trust.
 *
 * Not seen by inotify at all: writes through a shared memory map until the
 * writer closes the file, and a file system mounted over a directory.
 *
 * @module
 */

import {
  IN_ATTRIB,
  IN_CLOSE_WRITE,
  IN_CREATE,
  IN_DELETE,
  IN_DELETE_SELF,
  IN_DONT_FOLLOW,
  IN_IGNORED,
  IN_ISDIR,
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
  IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW;
/** An ancestor of the root matters only when the next name on the chain moves. */
const ANCESTOR_MASK = IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF |
  IN_ONLYDIR | IN_DONT_FOLLOW;

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

/** The most watched directories: the rest of the user's inotify budget is left alone. */
const MAX_WATCHES = 8192;
/** The most trusted files: past it, trust starts again from nothing. */
const MAX_TRUSTED = 100_000;

/** Trusted stats of a directory origin's files, kept honest by inotify. */
export class ChangeWatch {
  #inotify: Inotify;
  #root: string;
  /** Trusted stats by protocol path. */
  #trusted = new Map<string, OriginStat>();
  /** Watched served directories ("" is the root) by path, and back. */
  #dirs = new Map<string, number>();
  #dirOf = new Map<number, string>();
  /** The root's ancestors' watches, each with the name on the chain below it. */
  #ancestors = new Map<number, string>();
  #broken = false;

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
    if (this.#broken) return undefined;
    if (!this.#inotify.drain((wd, mask, name) => this.#changed(wd, mask, name))) {
      this.#broken = true; // events may be lost: trust nothing from now on
      this.#forgetAll();
      return undefined;
    }
    return this.#trusted.get(path);
  }

  /**
   * Watches every directory on `path`'s way, before it is stat'ed (so that
   * a change after the stat is reported); false when one cannot be watched
   * (missing, a link, another file system, out of watches), and the stat
   * must not be trusted.
   */
  prepare(path: string): boolean {
    if (this.#broken) return false;
    if (this.#ancestors.size === 0 && !this.#watchAncestors()) return false;
    let dir = "";
    if (!this.#watchDir(dir)) return false;
    for (let slash = path.indexOf("/"); slash !== -1; slash = path.indexOf("/", slash + 1)) {
      dir = path.slice(0, slash);
      if (!this.#watchDir(dir)) return false;
    }
    return true;
  }

  /** Trusts `stat`, taken after {@linkcode prepare} returned true, until `path` changes. */
  trust(path: string, stat: OriginStat): void {
    if (this.#broken) return;
    if (this.#trusted.size >= MAX_TRUSTED) this.#trusted.clear();
    this.#trusted.set(path, stat);
  }

  /** Stops watching. */
  close(): void {
    this.#broken = true;
    this.#inotify.close();
  }

  #watchDir(dir: string): boolean {
    if (this.#dirs.has(dir)) return true;
    if (this.#dirs.size >= MAX_WATCHES) return false;
    const real = dir === "" ? this.#root : `${this.#root}/${dir}`;
    const type = this.#inotify.fileSystemType(real);
    if (type === undefined || !LOCAL_FILE_SYSTEMS.has(type)) return false;
    const wd = this.#inotify.addWatch(real, DIRECTORY_MASK);
    if (wd < 0) return false;
    // The same directory under two names (a bind mount) is watched once.
    const earlier = this.#dirOf.get(wd);
    if (earlier !== undefined && earlier !== dir) return false;
    this.#dirs.set(dir, wd);
    this.#dirOf.set(wd, dir);
    return true;
  }

  /** Watches "/" down to the root's parent, each for the next name on the chain. */
  #watchAncestors(): boolean {
    const names = this.#root.split("/").filter((name) => name !== "");
    let at = "";
    for (const name of names) {
      const wd = this.#inotify.addWatch(at === "" ? "/" : at, ANCESTOR_MASK);
      if (wd < 0) return false;
      this.#ancestors.set(wd, name);
      at += `/${name}`;
    }
    return true;
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
    const dir = this.#dirOf.get(wd);
    if (dir === undefined) return; // a watch already dropped
    if (name === "" || mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
      this.#forgetUnder(dir);
      return;
    }
    const path = dir === "" ? name : `${dir}/${name}`;
    // A file's change is its own; a directory's (renamed, deleted, its
    // mode changed) is everything below it, unless it is new.
    if (mask & IN_ISDIR && !(mask & IN_CREATE)) this.#forgetUnder(path);
    else this.#trusted.delete(path);
  }

  /**
   * Drops the trust of `path` and of everything below it, and the watches
   * of the directories at or below it: a name that changed may now be
   * another directory, watched anew when next needed.
   */
  #forgetUnder(path: string): void {
    const prefix = path === "" ? "" : `${path}/`;
    if (path === "") this.#trusted.clear();
    this.#trusted.delete(path);
    for (const trusted of this.#trusted.keys()) {
      if (trusted.startsWith(prefix)) this.#trusted.delete(trusted);
    }
    for (const [dir, wd] of this.#dirs) {
      if (dir === path || dir.startsWith(prefix)) {
        this.#dirs.delete(dir);
        this.#dirOf.delete(wd);
        this.#inotify.removeWatch(wd);
      }
    }
  }

  /** Drops every trust and every watch (they are set up again as requests come). */
  #forgetAll(): void {
    this.#trusted.clear();
    for (const wd of [...this.#dirs.values(), ...this.#ancestors.keys()]) {
      this.#inotify.removeWatch(wd);
    }
    this.#dirs.clear();
    this.#dirOf.clear();
    this.#ancestors.clear();
  }
}
