/**
 * Which names make a page of a local directory's listing. Every page needs
 * the directory's names (a directory is read in no particular order), so a
 * page of a directory bigger than one page reads them all but keeps only
 * the page's own (origin/listing_page.ts).
 *
 * A directory bigger than a page is then paged through, so its names are
 * also kept, sorted, for a little while: the following pages find their
 * place in them by binary search instead of reading the directory again.
 * Paging through 100,000 entries read a million names without this (ten
 * pages), and made as many objects for the collector. They are kept packed
 * (one string and their offsets: 100,000 names of 15 characters in 1.7 MB,
 * where as many strings take 4 MB or more), within a budget of characters.
 *
 * Kept names serve a page only while the directory's inode, mtime and
 * ctime are those read with them; they go once no page has asked for
 * {@linkcode KEEP_MS}. A change made within the file system's timestamp
 * granule after the read would leave the mtime as it was, so a directory
 * changed within {@linkcode SETTLE_MS} before its read is not kept: it is
 * read again for every page.
 *
 * @module
 */

import { compareNames } from "../protocol.ts";
import { PageSelection } from "./listing_page.ts";
import { nextTurn } from "../util/next_turn.ts";

/** A name of a page, and whether it is a symbolic link (which alone needs resolving). */
export interface PageName {
  /** The entry's name. */
  name: string;
  /** True for a symbolic link. */
  link: boolean;
}

/** How long kept names wait for the next page of their directory. */
const KEEP_MS = 20_000;
/** A directory changed this recently before its read is not kept (timestamp granules: FAT's are 2 s). */
const SETTLE_MS = 2_000;
/** Names sorted in one run before runs are merged: a few ms of the event loop each. */
const RUN = 4096;

/** The sorted names of one directory, kept between its pages. */
interface Kept {
  /** The directory's inode, mtime and ctime when its names were read. */
  validator: string;
  /** Its names, in listing order (sorted after the first page was answered). */
  names: Promise<PackedNames>;
  /** The characters (UTF-16 code units) they hold. */
  units: number;
  /** The names that are symbolic links. */
  links: Set<string>;
  /** Drops them once no page has asked for {@linkcode KEEP_MS}. */
  timer?: ReturnType<typeof setTimeout>;
}

/** Sorted names, packed: one string of them all, NUL-separated (no name holds a NUL). */
class PackedNames {
  readonly count: number;
  #joined: string;
  /** Where each name starts in `#joined`, and (last) where the end is, past a NUL. */
  #starts: Uint32Array;

  constructor(sorted: string[]) {
    this.count = sorted.length;
    this.#joined = sorted.join("\0");
    this.#starts = new Uint32Array(sorted.length + 1);
    let at = 0;
    sorted.forEach((name, i) => {
      this.#starts[i] = at;
      at += name.length + 1;
    });
    this.#starts[sorted.length] = at;
  }

  /** The name at `index` (0 to `count - 1`). */
  at(index: number): string {
    return this.#joined.slice(this.#starts[index], this.#starts[index + 1] - 1);
  }

  /** The index of the first name after `after`: a binary search. */
  after(after: string): number {
    let [start, end] = [0, this.count];
    while (start < end) {
      const middle = (start + end) >>> 1;
      if (compareNames(this.at(middle), after) <= 0) start = middle + 1;
      else end = middle;
    }
    return start;
  }
}

/** Pages of names of local directories, with the names of big ones kept a while. */
export class DirectoryNames {
  #maxUnits: number;
  /** By real path; the oldest first. */
  #kept = new Map<string, Kept>();
  #keptUnits = 0;

  /** Keeps names of at most `maxUnits` characters (UTF-16 code units, of all directories) at once. */
  constructor(maxUnits: number) {
    this.#maxUnits = maxUnits;
  }

  /**
   * The names of the page of `window` in the directory `dir` (a real path),
   * in listing order, and whether more follow.
   *
   * @throws the file system's errors (the directory is missing, not one, ...).
   */
  async page(
    dir: string,
    window: { after?: string; limit: number },
  ): Promise<{ names: PageName[]; more: boolean }> {
    const validator = directoryValidator(await Deno.stat(dir));
    const kept = this.#kept.get(dir);
    if (kept && kept.validator === validator) {
      this.#touch(dir, kept);
      return pageOf(kept, await kept.names, window);
    }
    if (kept) this.#drop(dir);
    return await this.#read(dir, validator, window);
  }

  /** Forgets every kept name. */
  clear(): void {
    for (const dir of [...this.#kept.keys()]) this.#drop(dir);
  }

  /** Reads every name of `dir`, keeps the page's, and the whole list when it is worth keeping. */
  async #read(
    dir: string,
    validator: string,
    window: { after?: string; limit: number },
  ): Promise<{ names: PageName[]; more: boolean }> {
    const started = Date.now();
    const selection = new PageSelection<PageName>(window.after, window.limit);
    let all: string[] | undefined = [];
    let units = 0;
    const links = new Set<string>();
    for await (const entry of Deno.readDir(dir)) {
      selection.offer({ name: entry.name, link: entry.isSymlink });
      if (!all) continue;
      units += entry.name.length + 1;
      all.push(entry.name);
      if (entry.isSymlink) links.add(entry.name);
      if (units > this.#maxUnits) all = undefined; // past the budget only the page is kept
    }
    const { items, more } = selection.take();
    if (all && more) {
      const after = await Deno.stat(dir);
      const settled = (after.mtime?.getTime() ?? started) < started - SETTLE_MS;
      if (settled && directoryValidator(after) === validator) {
        const names = sortInTurns(all).then((sorted) => new PackedNames(sorted));
        this.#keep(dir, { validator, names, units, links });
      }
    }
    return { names: items, more };
  }

  #keep(dir: string, kept: Kept): void {
    // Two first pages read at once: the later read's names replace the earlier's.
    this.#drop(dir);
    while (this.#kept.size > 0 && this.#keptUnits + kept.units > this.#maxUnits) {
      this.#drop(this.#kept.keys().next().value!);
    }
    const entry: Kept = { ...kept };
    this.#kept.set(dir, entry);
    this.#keptUnits += kept.units;
    this.#touch(dir, entry);
  }

  /** Keeps `dir`'s names for {@linkcode KEEP_MS} more: they go once no page asked for that long. */
  #touch(dir: string, kept: Kept): void {
    clearTimeout(kept.timer);
    kept.timer = setTimeout(() => this.#drop(dir), KEEP_MS);
    // An idle server holding names for a while is no reason to stay alive.
    Deno.unrefTimer(kept.timer);
  }

  #drop(dir: string): void {
    const kept = this.#kept.get(dir);
    if (!kept) return;
    clearTimeout(kept.timer);
    this.#kept.delete(dir);
    this.#keptUnits -= kept.units;
  }
}

/** What changes when an entry is added to, removed from or renamed in a directory. */
function directoryValidator(info: Deno.FileInfo): string {
  return `${info.ino ?? 0}:${info.mtime?.getTime() ?? 0}:${info.ctime?.getTime() ?? 0}`;
}

/** The page of `window` in a directory's sorted names. */
function pageOf(
  kept: Kept,
  names: PackedNames,
  window: { after?: string; limit: number },
): { names: PageName[]; more: boolean } {
  const start = window.after === undefined ? 0 : names.after(window.after);
  const end = Math.min(start + window.limit, names.count);
  const page: PageName[] = [];
  for (let i = start; i < end; i++) {
    const name = names.at(i);
    page.push({ name, link: kept.links.has(name) });
  }
  return { names: page, more: end < names.count };
}

/**
 * Sorts names in listing order a run at a time, merging the runs, with a
 * turn of the event loop between steps: sorting 100,000 names at once held
 * it for over 100 ms, and a million for over a second.
 */
async function sortInTurns(names: string[]): Promise<string[]> {
  let runs: string[][] = [];
  for (let start = 0; start < names.length; start += RUN) {
    runs.push(names.slice(start, start + RUN).sort(compareNames));
    await nextTurn();
  }
  names = []; // the runs hold them now: a copy less at the peak
  while (runs.length > 1) {
    const merged: string[][] = [];
    for (let i = 0; i < runs.length; i += 2) {
      const [a, b] = [runs[i], runs[i + 1]];
      if (!b) {
        merged.push(a);
        break;
      }
      runs[i] = runs[i + 1] = []; // each pair is dropped once merged
      merged.push(await merge(a, b));
    }
    runs = merged;
  }
  return runs[0] ?? [];
}

/** Two sorted runs as one, with a turn of the event loop every {@linkcode RUN} names. */
async function merge(a: string[], b: string[]): Promise<string[]> {
  const out = new Array<string>(a.length + b.length);
  let [i, j, k] = [0, 0, 0];
  while (i < a.length || j < b.length) {
    const fromA = j >= b.length || (i < a.length && compareNames(a[i], b[j]) <= 0);
    out[k++] = fromA ? a[i++] : b[j++];
    if (k % RUN === 0) await nextTurn();
  }
  return out;
}
