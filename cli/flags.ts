/**
 * What the three command lines (server, client, simulator) share: the
 * error for a wrong invocation and the parsers of flag values.
 *
 * @module
 */

/** The command line was used wrongly: the CLIs print it and exit with 2. */
export class UsageError extends Error {
  /** Creates the error; `message` says what was wrong. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** `parse(text)`, or undefined when the flag was not given. */
export function optional<T>(text: string | undefined, parse: (text: string) => T): T | undefined {
  return text === undefined ? undefined : parse(text);
}

/** A whole number from `min` to `max`, or a {@linkcode UsageError} naming `flag`. */
export function parseInteger(flag: string, text: string, max: number, min = 0): number {
  const value = Number(text);
  if (!/^[0-9]+$/.test(text) || value < min || value > max) {
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, not "${text}"`);
  }
  return value;
}

/**
 * A number of seconds, as milliseconds, or a {@linkcode UsageError} naming
 * `flag`; 0 only where `options.zero` allows it (a lifetime, not a timeout).
 */
export function parseSeconds(flag: string, text: string, options: { zero?: boolean } = {}): number {
  const seconds = Number(text);
  const least = options.zero ? 0 : 0.001;
  // Timers longer than 2^31-1 ms would fire at once.
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || seconds < least || seconds > 2_147_483) {
    throw new UsageError(
      `${flag} must be a number of seconds from ${least} to 2147483, not "${text}"`,
    );
  }
  return Math.round(seconds * 1000);
}

/** Milliseconds as the help texts write them: `60`, `0.5`. */
export function seconds(ms: number): string {
  return String(ms / 1000);
}
