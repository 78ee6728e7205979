/**
 * The policies by name: what `--policy NAME` makes.
 *
 * @module
 */

import { ClockPolicy } from "./clock.ts";
import { FifoPolicy } from "./fifo.ts";
import { LruPolicy } from "./lru.ts";
import type { PolicyFactory, PolicyName } from "./policy.ts";
import { S3FifoPolicy } from "./s3fifo.ts";
import { SievePolicy } from "./sieve.ts";

/**
 * The policies `--policy` accepts, by name: each makes a fresh policy for a
 * cache of `capacity` bytes (a policy may size its queues by it).
 */
export const POLICIES: Readonly<Record<PolicyName, PolicyFactory>> = {
  fifo: () => new FifoPolicy(),
  lru: () => new LruPolicy(),
  clock: () => new ClockPolicy(),
  sieve: () => new SievePolicy(),
  s3fifo: (capacity) => new S3FifoPolicy({ capacity }),
};

/** Whether `name` is one of the {@linkcode POLICIES}. */
export function isPolicyName(name: string): name is PolicyName {
  return Object.hasOwn(POLICIES, name);
}
