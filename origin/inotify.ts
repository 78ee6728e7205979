/**
 * Linux's inotify(7) through Deno's foreign function interface: one
 * non-blocking descriptor, watches, and a synchronous drain of the events
 * queued so far; beside it, the mount table's change signal. Deno's own
 * `Deno.watchFs` delivers events asynchronously, on its own schedule; the
 * freshness check in `change_watch.ts` needs to learn, at a moment it
 * chooses, of every event the kernel has queued, which only the descriptors
 * themselves tell. One `epoll_wait` with no timeout asks both at once.
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
/** Add to the mask of an existing watch of the same inode instead of replacing it. */
export const IN_MASK_ADD = 0x20000000;
/** Watch only a directory. */
export const IN_ONLYDIR = 0x1000000;
/** Do not follow a symbolic link to watch its target. */
export const IN_DONT_FOLLOW = 0x2000000;

const IN_NONBLOCK = 0o4000;
const IN_CLOEXEC = 0o2000000;
const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLLIN = 0x1;
const EPOLLPRI = 0x2;
const EPOLLERR = 0x8;
/** `struct epoll_event` is packed on x86-64 (12 bytes), naturally aligned elsewhere (16). */
const EPOLL_EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;
const EPOLL_DATA_OFFSET = Deno.build.arch === "x86_64" ? 4 : 8;
const EAGAIN = 11;
const EINTR = 4;
/** Out of watches (the user's `max_user_watches`). */
export const ENOSPC = 28;
/** `struct inotify_event` before its name: wd, mask, cookie, len. */
const EVENT_HEADER = 16;

const SYMBOLS = {
  inotify_init1: { parameters: ["i32"], result: "i32" },
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  inotify_rm_watch: { parameters: ["i32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  statfs: { parameters: ["buffer", "buffer"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What {@linkcode Inotify.pending} found. */
export interface Pending {
  /** inotify events are queued: {@linkcode Inotify.drain} them. */
  events: boolean;
  /** The mount table changed since the last call. */
  mounts: boolean;
}

/** An inotify descriptor, the mount table's signal, and the calls made on them. */
export class Inotify {
  #lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  #fd: number;
  #mounts: number;
  #epoll: number;
  #buffer = new Uint8Array(64 * 1024);
  #view = new DataView(this.#buffer.buffer);
  #statfs = new Uint8Array(128);
  #ready = new Uint8Array(2 * EPOLL_EVENT_SIZE);
  #readyView = new DataView(this.#ready.buffer);

  private constructor(
    lib: Deno.DynamicLibrary<typeof SYMBOLS>,
    fds: { inotify: number; mounts: number; epoll: number },
  ) {
    this.#lib = lib;
    this.#fd = fds.inotify;
    this.#mounts = fds.mounts;
    this.#epoll = fds.epoll;
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
    const { symbols } = lib;
    const inotify = symbols.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    // A mount or unmount changes what a path names without an inotify
    // event; the mount table signals it (EPOLLPRI) inside the mount call.
    const mounts = symbols.open(cString("/proc/self/mountinfo"), O_RDONLY | O_CLOEXEC);
    const epoll = symbols.epoll_create1(O_CLOEXEC);
    const added = inotify >= 0 && mounts >= 0 && epoll >= 0 &&
      symbols.epoll_ctl(epoll, EPOLL_CTL_ADD, inotify, epollEvent(EPOLLIN, inotify)) === 0 &&
      symbols.epoll_ctl(epoll, EPOLL_CTL_ADD, mounts, epollEvent(EPOLLPRI | EPOLLERR, mounts)) ===
        0;
    if (!added) {
      for (const fd of [inotify, mounts, epoll]) if (fd >= 0) symbols.close(fd);
      lib.close();
      return undefined;
    }
    return new Inotify(lib, { inotify, mounts, epoll });
  }

  /**
   * Whether inotify events are queued and whether the mount table changed,
   * without waiting; undefined when the descriptors failed.
   */
  pending(): Pending | undefined {
    const count = this.#lib.symbols.epoll_wait(this.#epoll, this.#ready, 2, 0);
    if (count < 0) return this.#errno() === EINTR ? this.pending() : undefined;
    const pending = { events: false, mounts: false };
    for (let i = 0; i < count; i++) {
      const fd = this.#readyView.getInt32(i * EPOLL_EVENT_SIZE + EPOLL_DATA_OFFSET, true);
      if (fd === this.#fd) pending.events = true;
      else if (fd === this.#mounts) pending.mounts = true;
    }
    return pending;
  }

  /**
   * Watches `path` for `mask`: the watch descriptor (1 or more), or the
   * error number negated (`-ENOSPC`: out of watches).
   */
  addWatch(path: string, mask: number): number {
    const wd = this.#lib.symbols.inotify_add_watch(this.#fd, cString(path), mask);
    return wd >= 0 ? wd : -this.#errno();
  }

  /**
   * Drops every watch at once, and every event still queued: the inotify
   * descriptor is replaced by a new one (watch descriptors start again at
   * 1). Removing tens of thousands of watches one by one would queue as
   * many events, more than the queue holds. False when no new descriptor
   * could be had; then nothing is watched any more.
   */
  reset(): boolean {
    const { symbols } = this.#lib;
    symbols.close(this.#fd); // leaves the epoll set with it
    this.#fd = symbols.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    return this.#fd >= 0 &&
      symbols.epoll_ctl(this.#epoll, EPOLL_CTL_ADD, this.#fd, epollEvent(EPOLLIN, this.#fd)) === 0;
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

  /** Closes the descriptors (every watch goes with them). */
  close(): void {
    for (const fd of [this.#fd, this.#mounts, this.#epoll]) {
      if (fd >= 0) this.#lib.symbols.close(fd);
    }
    this.#lib.close();
  }

  #errno(): number {
    const pointer = this.#lib.symbols.__errno_location();
    return pointer === null ? 0 : new Deno.UnsafePointerView(pointer).getInt32();
  }
}

/** A `struct epoll_event` asking for `events` on `fd`, with the descriptor as its data. */
function epollEvent(events: number, fd: number): Uint8Array {
  const event = new Uint8Array(EPOLL_EVENT_SIZE);
  const view = new DataView(event.buffer);
  view.setUint32(0, events, true);
  view.setInt32(EPOLL_DATA_OFFSET, fd, true);
  return event;
}

function cString(text: string): Uint8Array {
  return encoder.encode(`${text}\0`);
}
