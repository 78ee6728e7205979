/**
 * Linux's inotify(7) through Deno's foreign function interface: one
 * non-blocking descriptor, watches on directories, and a synchronous drain
 * of the events queued so far. Deno's own `Deno.watchFs` delivers events
 * asynchronously, on its own schedule; the freshness check in
 * `change_watch.ts` needs to read, at a moment it chooses, every event the
 * kernel has queued, which only a read of the descriptor itself gives.
 *
 * @module
 */

/** A file was written. */
export const IN_MODIFY = 0x2;
/** Metadata changed (mode, times, links). */
export const IN_ATTRIB = 0x4;
/** A file opened for writing was closed. */
export const IN_CLOSE_WRITE = 0x8;
/** A name was renamed away from the directory. */
export const IN_MOVED_FROM = 0x40;
/** A name was renamed into the directory. */
export const IN_MOVED_TO = 0x80;
/** A name was created. */
export const IN_CREATE = 0x100;
/** A name was deleted. */
export const IN_DELETE = 0x200;
/** The watched directory itself was deleted. */
export const IN_DELETE_SELF = 0x400;
/** The watched directory itself was renamed. */
export const IN_MOVE_SELF = 0x800;
/** The event is about a directory. */
export const IN_ISDIR = 0x40000000;
/** The queue overflowed: events were lost. */
export const IN_Q_OVERFLOW = 0x4000;
/** The watch is gone (removed, or its directory deleted). */
export const IN_IGNORED = 0x8000;
/** Watch only a directory. */
export const IN_ONLYDIR = 0x1000000;
/** Do not follow a symbolic link to watch its target. */
export const IN_DONT_FOLLOW = 0x2000000;

const IN_NONBLOCK = 0o4000;
const IN_CLOEXEC = 0o2000000;
const EAGAIN = 11;
const EINTR = 4;
/** `struct inotify_event` before its name: wd, mask, cookie, len. */
const EVENT_HEADER = 16;

const SYMBOLS = {
  inotify_init1: { parameters: ["i32"], result: "i32" },
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  inotify_rm_watch: { parameters: ["i32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  statfs: { parameters: ["buffer", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An inotify descriptor and the calls made on it. */
export class Inotify {
  #lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  #fd: number;
  #buffer = new Uint8Array(64 * 1024);
  #view = new DataView(this.#buffer.buffer);
  #statfs = new Uint8Array(128);

  private constructor(lib: Deno.DynamicLibrary<typeof SYMBOLS>, fd: number) {
    this.#lib = lib;
    this.#fd = fd;
  }

  /**
   * A new non-blocking inotify descriptor; undefined where there is none to
   * have: not Linux, no C library to load, or no permission to load one
   * (`--allow-ffi`).
   */
  static open(): Inotify | undefined {
    if (Deno.build.os !== "linux") return undefined;
    // Asked, dlopen would prompt on a terminal: a server must not wait on that.
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
    let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      lib = Deno.dlopen("libc.so.6", SYMBOLS);
    } catch {
      return undefined;
    }
    const fd = lib.symbols.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
      lib.close();
      return undefined;
    }
    return new Inotify(lib, fd);
  }

  /** Watches directory `path` for `mask`; the watch descriptor, or -1. */
  addWatch(path: string, mask: number): number {
    return this.#lib.symbols.inotify_add_watch(this.#fd, cString(path), mask);
  }

  /** Stops a watch (its `IN_IGNORED` event follows). */
  removeWatch(wd: number): void {
    this.#lib.symbols.inotify_rm_watch(this.#fd, wd);
  }

  /**
   * Reads every event queued so far and hands each to `onEvent` (`name` is
   * "" for an event about the watched directory itself). False when the
   * descriptor failed: events may then have been lost.
   */
  drain(onEvent: (wd: number, mask: number, name: string) => void): boolean {
    const buffer = this.#buffer;
    while (true) {
      const read = Number(this.#lib.symbols.read(this.#fd, buffer, BigInt(buffer.length)));
      if (read < 0) {
        const errno = this.#errno();
        if (errno === EAGAIN) return true;
        if (errno === EINTR) continue;
        return false;
      }
      for (let at = 0; at + EVENT_HEADER <= read;) {
        const wd = this.#view.getInt32(at, true);
        const mask = this.#view.getUint32(at + 4, true);
        const length = this.#view.getUint32(at + 12, true);
        const raw = buffer.subarray(at + EVENT_HEADER, at + EVENT_HEADER + length);
        const end = raw.indexOf(0);
        onEvent(wd, mask, decoder.decode(end === -1 ? raw : raw.subarray(0, end)));
        at += EVENT_HEADER + length;
      }
    }
  }

  /** The type of the file system holding `path` (`statfs`'s `f_type`), or undefined. */
  fileSystemType(path: string): number | undefined {
    if (this.#lib.symbols.statfs(cString(path), this.#statfs) !== 0) return undefined;
    // f_type is the first field, a long, on every 64-bit Linux ABI.
    return Number(new DataView(this.#statfs.buffer).getBigInt64(0, true));
  }

  /** Closes the descriptor (every watch goes with it). */
  close(): void {
    this.#lib.symbols.close(this.#fd);
    this.#lib.close();
  }

  #errno(): number {
    const pointer = this.#lib.symbols.__errno_location();
    return pointer === null ? 0 : new Deno.UnsafePointerView(pointer).getInt32();
  }
}

function cString(text: string): Uint8Array {
  return encoder.encode(`${text}\0`);
}
