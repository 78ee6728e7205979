/**
 * Who may connect: a list of IPv4 and IPv6 networks (`--allow`), checked
 * against a client's address when it is accepted, before a byte is read.
 *
 * @module
 */

/** One network: its address bits and how many of them must match. */
interface Network {
  /** 4 bytes (IPv4) or 16 (IPv6). */
  bytes: Uint8Array;
  /** Leading bits that must match. */
  prefix: number;
  /** How it was written, for STATS and the banner. */
  text: string;
}

/** The networks allowed to connect; an address outside all of them is refused. */
export class AllowList {
  readonly #networks: Network[];

  private constructor(networks: Network[]) {
    this.#networks = networks;
  }

  /**
   * Parses `CIDR,CIDR,...`: `10.0.0.0/8`, `192.168.1.7` (one address),
   * `::1`, `fd00::/8`. An IPv4 network also matches its IPv4-mapped IPv6
   * form (`::ffff:10.1.2.3`).
   *
   * @throws {SyntaxError} naming the entry that does not parse.
   * @example
   * ```ts
   * import { AllowList } from "./allow_list.ts";
   * const list = AllowList.parse("127.0.0.0/8,::1");
   * console.log(list.admits("127.0.0.1"), list.admits("10.0.0.1")); // true false
   * ```
   */
  static parse(text: string): AllowList {
    const entries = text.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "");
    if (entries.length === 0) throw new SyntaxError("--allow needs at least one network");
    return new AllowList(entries.map(parseNetwork));
  }

  /** The networks as written (normalised), for STATS. */
  get networks(): string[] {
    return this.#networks.map((network) => network.text);
  }

  /** Whether a client at `address` (as `Deno.NetAddr.hostname` gives it) may connect. */
  admits(address: string): boolean {
    const bytes = parseAddress(address) ?? undefined;
    if (!bytes) return false;
    // An IPv4 client and its IPv4-mapped IPv6 form are one client, whichever
    // form the listener reports and whichever form the network was written in.
    const other = bytes.length === 16
      ? (isV4Mapped(bytes) ? bytes.subarray(12) : undefined)
      : mapped(bytes);
    for (const network of this.#networks) {
      if (matches(network, bytes) || (other && matches(network, other))) return true;
    }
    return false;
  }
}

function parseNetwork(entry: string): Network {
  const slash = entry.indexOf("/");
  const addressText = slash < 0 ? entry : entry.slice(0, slash);
  const bytes = parseAddress(addressText);
  if (!bytes) throw new SyntaxError(`--allow: "${entry}" is not an IPv4 or IPv6 network`);
  const bits = bytes.length * 8;
  let prefix = bits;
  if (slash >= 0) {
    const prefixText = entry.slice(slash + 1);
    prefix = /^(0|[1-9][0-9]{0,2})$/.test(prefixText) ? Number(prefixText) : NaN;
    if (!(prefix <= bits)) {
      throw new SyntaxError(`--allow: "${entry}" has a prefix length outside 0-${bits}`);
    }
  }
  // Host bits set below the prefix (10.1.2.3/8) are ignored, as routers do.
  const network = bytes.slice();
  for (let bit = prefix; bit < bits; bit++) network[bit >> 3] &= ~(0x80 >> (bit & 7));
  return { bytes: network, prefix, text: `${formatAddress(network)}/${prefix}` };
}

function matches(network: Network, address: Uint8Array): boolean {
  if (network.bytes.length !== address.length) return false;
  const whole = network.prefix >> 3;
  for (let i = 0; i < whole; i++) if (network.bytes[i] !== address[i]) return false;
  const rest = network.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff00 >> rest) & 0xff;
  return (address[whole] & mask) === network.bytes[whole];
}

/** `::ffff:a.b.c.d` for the IPv4 address `bytes`. */
function mapped(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  out.set([0xff, 0xff], 10);
  out.set(bytes, 12);
  return out;
}

function isV4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/** An IPv4 or IPv6 address's bytes; null when it is neither. */
export function parseAddress(text: string): Uint8Array | null {
  // A scoped IPv6 address (fe80::1%eth0) is matched without its zone.
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  return text.includes(":") ? parseV6(text) : parseV4(text);
}

function parseV4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i]) || Number(parts[i]) > 255) return null;
    bytes[i] = Number(parts[i]);
  }
  return bytes;
}

function parseV6(text: string): Uint8Array | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (half: string): number[] | null => {
    if (half === "") return [];
    const out: number[] = [];
    const parts = half.split(":");
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (i === parts.length - 1 && part.includes(".")) {
        const v4 = parseV4(part); // the last 32 bits written as IPv4
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(part)) {
        out.push(parseInt(part, 16));
      } else return null;
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}

function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  // The longest run of zero groups (two or more) is written "::" (RFC 5952).
  let best = -1, bestLength = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLength).join(":")}`;
}
