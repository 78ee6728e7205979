/**
 * A directory as the origin, seen through protocol paths. It owns the
 * rule that no path may reach outside the directory, through `..` or through
 * a symbolic link, and that only regular files are ever opened.
 *
 * @module
 */

import { escapeControls, RequestError } from "../protocol.ts";
import type {
  ByteRange,
  Origin,
  OriginDirEntry,
  OriginDirPage,
  OriginFile,
  OriginListWindow,
  OriginStat,
} from "./origin.ts";
import { DirectoryNames, type PageName } from "./directory_names.ts";
import { ChangeWatch } from "./change_watch.ts";
import { DEFAULTS } from "../defaults.ts";

/** Options of {@linkcode DirectoryOrigin.open}. */
export interface DirectoryOriginOptions {
  /**
   * A directory below the served one that must stay invisible (the cache
   * directory, when it lives inside the served directory).
   * @default {undefined}
   */
  hide?: string;
  /**
   * Watch the directory for changes (inotify) and trust a file's stat
   * until one is reported, instead of stat'ing it on every request (see
   * `change_watch.ts`). Where no watch can be had, every request stats.
   * @default {DEFAULTS.changeWatch}
   */
  watchChanges?: boolean;
}

/** Entries of a listing's page stat'ed at once. */
const LISTING_STATS_AT_ONCE = 8;
/**
 * Characters of the names of big directories kept between the pages of
 * their listings (see directory_names.ts): 16 MiB of Latin-1 names (32 of
 * others), a million names of 15 characters, or a hundred thousand of 160.
 */
const MAX_KEPT_UNITS = 16 * 1024 * 1024;

/** Converts a `Deno.FileInfo` to the fields the protocol speaks of. */
export function toOriginStat(info: Deno.FileInfo): OriginStat {
  const mtime = info.mtime?.getTime() ?? 0;
  const ctime = info.ctime?.getTime() ?? 0;
  return {
    size: info.size,
    mtime,
    validator: `${info.size}:${mtime}:${info.ino ?? 0}:${ctime}`,
  };
}

/** The served directory as an {@linkcode Origin}. */
export class DirectoryOrigin implements Origin {
  /** The served directory's real path (symbolic links resolved). */
  readonly root: string;
  #hide: string | undefined;
  #watch: ChangeWatch | undefined;
  #statsTaken = 0;
  #names = new DirectoryNames(MAX_KEPT_UNITS);

  private constructor(root: string, hide: string | undefined, watch: ChangeWatch | undefined) {
    this.root = root;
    this.#hide = hide;
    this.#watch = watch;
  }

  /**
   * How a file's freshness is known: `watch` (inotify reports changes, see
   * `change_watch.ts`) or `stat` (every request stats its file).
   */
  get freshness(): "watch" | "stat" {
    return this.#watch ? "watch" : "stat";
  }

  /** The stats taken of served files so far (those a watch spared are not counted). */
  get statsTaken(): number {
    return this.#statsTaken;
  }

  /** Stops watching for changes (the origin still serves, stat'ing every request), and forgets kept names. */
  close(): void {
    this.#watch?.close();
    this.#watch = undefined;
    this.#names.clear();
  }

  /**
   * Opens a directory as an origin.
   *
   * @throws {Error} with a one-line message when it is missing or not a
   *   directory.
   */
  static async open(
    dir: string,
    options: DirectoryOriginOptions = {},
  ): Promise<DirectoryOrigin> {
    let root: string;
    try {
      root = await Deno.realPath(dir);
      if (!(await Deno.stat(root)).isDirectory) throw new Error("not a directory");
      // Readable? The listing is ended at once (it holds a descriptor).
      const listing = Deno.readDir(root)[Symbol.asyncIterator]();
      await listing.next();
      await listing.return?.();
    } catch (error) {
      throw new Error(`cannot serve ${escapeControls(dir)}: ${describe(error)}`);
    }
    const hide = options.hide === undefined ? undefined : await resolvePath(options.hide);
    const watch = options.watchChanges ?? DEFAULTS.changeWatch
      ? ChangeWatch.start(root)
      : undefined;
    return new DirectoryOrigin(root, hide, watch);
  }

  stat(path: string): Promise<OriginStat> {
    try {
      return Promise.resolve(this.statNow(path));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Stats a file synchronously: a trusted stat when the change watch vouches
   * for it (as fresh as the job's first check, see {@linkcode Origin.statNow}),
   * else a real one. Synchronous on purpose: a metadata lookup (answered from
   * the kernel's caches) costs a few microseconds, far less than a round trip
   * through Deno's blocking thread pool, which dominated small hits' latency.
   */
  statNow(path: string): OriginStat {
    const watch = this.#watch;
    const trusted = watch?.trusted(path);
    if (trusted) return trusted;
    // Watched before the stat, so that a change right after it is reported;
    // the hidden cache directory never is (its own writes would flood it).
    const hidden = this.#hide !== undefined && isWithin(`${this.root}/${path}`, this.#hide);
    const watched = !hidden && (watch?.prepare(path) ?? false);
    try {
      this.#statsTaken++;
      const [info, direct] = this.#statInside(path);
      if (!info.isFile) throw notFound(path);
      const stat = toOriginStat(info);
      // A file with more links can change through a name not watched here.
      if (watched && direct && info.nlink === 1) watch!.trust(path, stat);
      else if (watched) watch!.release(path);
      return stat;
    } catch (error) {
      if (watched) watch!.release(path);
      throw asProtocolError(path, error);
    }
  }

  async open(path: string, range?: ByteRange): Promise<OriginFile> {
    const real = await this.#resolve(path);
    // Check the kind before opening: opening a FIFO for reading would block.
    const before = await Deno.stat(real).catch(mapFsError(path));
    if (!before.isFile) throw notFound(path);
    const file = await Deno.open(real, { read: true }).catch(mapFsError(path));
    try {
      const info = await file.stat();
      if (!info.isFile) throw notFound(path);
      if (range && range.offset > 0) await file.seek(range.offset, Deno.SeekMode.Start);
      return {
        stat: toOriginStat(info),
        read: (into) => file.read(into),
        close: () => file.close(),
        restat: async () => toOriginStat(await file.stat()),
      };
    } catch (error) {
      file.close();
      throw error;
    }
  }

  /**
   * One page of a directory: only the page's entries are stat'ed (stat'ing
   * every entry of 100,000 took seconds), and the names are read as
   * `DirectoryNames` says (directory_names.ts).
   */
  async list(path: string, window: OriginListWindow): Promise<OriginDirPage> {
    const real = path === "" ? this.root : await this.#resolve(path);
    const { names, more } = await this.#names.page(real, window).catch(mapFsError(path));
    const described = new Array<OriginDirEntry | undefined>(names.length);
    let taken = 0;
    // A few stats at once: each is a round trip through Deno's blocking
    // pool, and one at a time left the cores idle.
    const describeNext = async () => {
      while (taken < names.length) {
        const at = taken++;
        described[at] = await this.#describe(real, names[at]);
      }
    };
    await Promise.all(Array.from({ length: LISTING_STATS_AT_ONCE }, describeNext));
    const entries = described.filter((entry) => entry !== undefined);
    return more ? { entries, next: names[names.length - 1].name } : { entries };
  }

  /** An entry as listed, or undefined when it must not be shown. */
  async #describe(dir: string, entry: PageName): Promise<OriginDirEntry | undefined> {
    try {
      let at = `${dir}/${entry.name}`;
      // The directory is a real path, so an entry that is no link is its
      // own real path: lstat it (a link put there since the read is then
      // seen, not followed). Only links are resolved and checked.
      let info = entry.link ? undefined : await Deno.lstat(at);
      if (!info || info.isSymlink) {
        at = await Deno.realPath(at);
        info = await Deno.stat(at);
      }
      if (!this.#contains(at)) return undefined;
      if (!info.isFile && !info.isDirectory) return undefined;
      return {
        name: entry.name,
        type: info.isFile ? "file" : "dir",
        size: info.isFile ? info.size : 0,
        mtime: info.mtime?.getTime() ?? 0,
      };
    } catch {
      return undefined; // a dangling link or an entry that just vanished
    }
  }

  /**
   * Resolves a checked protocol path to a real path inside the root.
   *
   * @throws {RequestError} 404 when it does not exist, 403 when it resolves
   *   outside the served directory.
   */
  async #resolve(path: string): Promise<string> {
    const real = await Deno.realPath(`${this.root}/${path}`).catch(mapFsError(path));
    if (!this.#contains(real)) {
      throw new RequestError(403, `outside the served directory: ${path}`);
    }
    return real;
  }

  /**
   * Stats a checked protocol path inside the root, and says whether it was
   * direct (no link on the way). Each component is
   * lstat'ed from the root down (one system call for a file at the top):
   * where none is a symbolic link, the path is its own real path and the
   * last lstat is the file's stat. Only a path through a link is resolved
   * in full and checked to stay inside, as {@linkcode #resolve} does.
   *
   * @throws {RequestError} 403 when it resolves outside the served directory.
   */
  #statInside(path: string): [info: Deno.FileInfo, direct: boolean] {
    let at = this.root;
    let info: Deno.FileInfo | undefined;
    for (const segment of path.split("/")) {
      // A link, or a segment that is not a name ("..", "." or empty: the
      // protocol refuses them, a caller of the library may not), is
      // resolved in full: only then is the containment check sound.
      if (segment === "" || segment === "." || segment === "..") {
        return [Deno.statSync(this.#resolveSync(path)), false];
      }
      at += `/${segment}`;
      info = Deno.lstatSync(at);
      if (info.isSymlink) return [Deno.statSync(this.#resolveSync(path)), false];
    }
    if (!this.#contains(at)) throw new RequestError(403, `outside the served directory: ${path}`);
    return [info!, true];
  }

  #resolveSync(path: string): string {
    const real = Deno.realPathSync(`${this.root}/${path}`);
    if (!this.#contains(real)) {
      throw new RequestError(403, `outside the served directory: ${path}`);
    }
    return real;
  }

  #contains(real: string): boolean {
    if (this.#hide !== undefined && isWithin(real, this.#hide)) return false;
    return isWithin(real, this.root);
  }
}

/**
 * The real path of `path`, which need not exist yet: the real path of its
 * nearest existing ancestor, with the missing names appended.
 */
async function resolvePath(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch (error) {
    // Missing, or below a file (a cache directory that cannot be made): the
    // path it would have.
    const missing = error instanceof Deno.errors.NotFound ||
      error instanceof Deno.errors.NotADirectory;
    if (!missing) throw error;
    const trimmed = path.replace(/\/+$/, "");
    const slash = trimmed.lastIndexOf("/");
    const parent = slash < 0 ? "." : slash === 0 ? "/" : trimmed.slice(0, slash);
    const base = await resolvePath(parent);
    return `${base === "/" ? "" : base}/${trimmed.slice(slash + 1)}`;
  }
}

function isWithin(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith("/") ? dir : dir + "/");
}

function notFound(path: string): RequestError {
  return new RequestError(404, `not found: ${path}`);
}

/** A file-system error on `path` as a protocol error, when it has one. */
function asProtocolError(path: string, error: unknown): unknown {
  try {
    mapFsError(path)(error);
  } catch (mapped) {
    return mapped;
  }
}

/** Maps file-system errors on `path` to protocol errors; rethrows others. */
function mapFsError(path: string): (error: unknown) => never {
  return (error: unknown) => {
    if (error instanceof RequestError) throw error;
    if (error instanceof Deno.errors.NotFound) throw notFound(path);
    // No file can exist under such a path: a name too long, a loop of links,
    // a file where a directory should be.
    if (
      error instanceof Deno.errors.NotADirectory ||
      error instanceof Deno.errors.FilesystemLoop ||
      (error as { code?: string }).code === "ENAMETOOLONG"
    ) throw notFound(path);
    if (error instanceof Deno.errors.PermissionDenied) {
      throw new RequestError(403, `not readable: ${path}`);
    }
    throw error;
  };
}

function describe(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  return error instanceof Error ? error.message : String(error);
}
