/**
 * libCacheSim's published numbers on its sample trace, shared by the test
 * that replays the trace in process (`tests/policies/policies_test.ts`) and
 * the one that runs `deno task sim --reference libcachesim`
 * (`tests/sim/sim_cli_test.ts`).
 *
 * @module
 */

/** libCacheSim's sample trace `cloudPhysicsIO.oracleGeneral.bin`. */
export const CLOUDPHYSICS_TRACE: URL = new URL(
  "../../../shared/data/traces/cloudPhysicsIO.oracleGeneral.bin",
  import.meta.url,
);

/** The cache sizes of {@linkcode LIBCACHESIM}'s columns: 128, 256, ..., 1024 MiB. */
export const LIBCACHESIM_CAPACITIES: readonly number[] = [1, 2, 3, 4, 5, 6, 7, 8].map((n) =>
  n * 128 * 1024 * 1024
);

/**
 * libCacheSim's test/test_evictionAlgo.c on {@linkcode CLOUDPHYSICS_TRACE}: misses and missed
 * bytes at 128, 256, ..., 1024 MiB ("s3fifo" is its current "S3-FIFO").
 */
export const LIBCACHESIM: Record<string, { misses: number[]; bytes: number[] }> = {
  fifo: {
    misses: [93403, 89386, 84387, 84025, 72498, 72228, 72182, 72140],
    bytes: [
      4213112832,
      4052646400,
      3829170176,
      3807412736,
      3093146112,
      3079525888,
      3079210496,
      3077547520,
    ],
  },
  lru: {
    misses: [93374, 89783, 83572, 81722, 72494, 72104, 71972, 71704],
    bytes: [
      4214303232,
      4061242368,
      3778040320,
      3660569600,
      3100927488,
      3078128640,
      3075403776,
      3061662720,
    ],
  },
  clock: {
    misses: [93313, 89775, 83411, 81328, 74815, 72283, 71927, 64456],
    bytes: [
      4213887488,
      4064512000,
      3762650624,
      3644467200,
      3256760832,
      3091688448,
      3074241024,
      2697378816,
    ],
  },
  sieve: {
    misses: [91699, 86720, 78578, 76707, 69945, 66221, 64445, 64376],
    bytes: [
      4158632960,
      3917211648,
      3536227840,
      3455379968,
      3035580416,
      2801699328,
      2699456000,
      2696345600,
    ],
  },
  s3fifo: {
    misses: [90117, 80915, 75060, 72191, 69815, 65542, 60799, 56045],
    bytes: [
      4058576896,
      3573827584,
      3244417024,
      3061737984,
      2898109952,
      2628363776,
      2425027072,
      2327934464,
    ],
  },
  belady: {
    misses: [79256, 70724, 65481, 61594, 59645, 57599, 50873, 48974],
    bytes: [
      3472532480,
      2995165696,
      2726689792,
      2537648128,
      2403427840,
      2269212672,
      2134992896,
      2029769728,
    ],
  },
};
