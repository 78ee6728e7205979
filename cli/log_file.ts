/**
 * The access log's file (`--access-log FILE`): appended to, and reopened on
 * SIGHUP by name, the logrotate convention (rename the file, send SIGHUP:
 * lines up to the signal are in the renamed file, later ones in a new file
 * under the old name).
 *
 * @module
 */

const encoder = new TextEncoder();

/** A file appended to in whole writes, reopened by name when asked. */
export class LogFile {
  readonly #path: string;
  #file: Deno.FsFile;

  private constructor(path: string, file: Deno.FsFile) {
    this.#path = path;
    this.#file = file;
  }

  /**
   * Opens (creating it if needed) `path` for appending.
   *
   * @throws {Error} naming the file when it cannot be opened.
   */
  static open(path: string): LogFile {
    return new LogFile(path, openForAppend(path));
  }

  /** Appends `text` (synchronously: the access log writes batches of at most 64 KiB). */
  write(text: string): void {
    const bytes = encoder.encode(text);
    for (let written = 0; written < bytes.length;) {
      written += this.#file.writeSync(bytes.subarray(written));
    }
  }

  /**
   * Opens the file by its name again and closes the old one; when the name
   * cannot be opened, the old file stays.
   *
   * @throws {Error} naming the file when it cannot be opened.
   */
  reopen(): void {
    const file = openForAppend(this.#path);
    this.#file.close();
    this.#file = file;
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}

function openForAppend(path: string): Deno.FsFile {
  try {
    return Deno.openSync(path, { append: true, create: true });
  } catch (error) {
    throw new Error(`cannot open the access log ${path}: ${(error as Error).message}`);
  }
}
