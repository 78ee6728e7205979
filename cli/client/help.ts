/**
 * The client's help texts: the general usage (`--help`) and each command's
 * (`COMMAND --help`). Every default in them is read from
 * {@linkcode DEFAULTS} or the command line's own constants, never written
 * twice.
 *
 * @module
 */

import { DEFAULTS } from "../../defaults.ts";
import { VERSION } from "../../version.ts";
import { type CommandName, DEFAULT_PARALLEL, MAX_PARALLEL } from "./args.ts";

/** The general help: every command, the options they share, exit statuses. */
export const USAGE = `tcpcache client ${VERSION}: fetch files from a tcpcache server

Usage: tcpcache COMMAND [ARGS] [options]
       deno task client COMMAND [ARGS] [options]

Commands:
  get PATH...      download files: one, several, or a directory tree (-r)
  list             the cache's entries, in eviction order
  files [DIR]      browse the served directory
  stat PATH        a file's size, mtime and cache state
  stats            the server's counters
  ping             check that the server answers

Options of every command:
  --host HOST      server address (default: $TCPCACHE_HOST or ${DEFAULTS.host})
  --port PORT      server port (default: $TCPCACHE_PORT or ${DEFAULTS.port})
  --nodes LIST     a cluster instead: HOST:PORT,HOST:PORT,... (default:
                   $TCPCACHE_NODES); each path goes to its node by rendezvous
                   hashing, the next one when it is down; list and stats
                   ask every node and add up
  --tls            speak TLS and verify the server's certificate (the system's
                   roots) and its name; never falls back to plain TCP
  --ca FILE        trust this CA's certificate (PEM) instead: a private CA
                   (default: $TCPCACHE_CA); implies --tls
  --token-file F   present the token on F's first line (AUTH) to a server that
                   needs one (default: the token in $TCPCACHE_TOKEN)
  --json           print the outcome as JSON on stdout
  -q, --quiet      print nothing but errors
  -h, --help       show this help; COMMAND --help shows a command's
  --version        print the version

The positional forms work too:
  client.ts HOST PORT list          list the cache
  client.ts HOST PORT FILE DIR      fetch FILE into DIR

Exit status: 0 success; 1 the server answered an error, or the bytes failed
verification; 2 usage error; 3 cannot connect, or the connection broke; 130
interrupted by Ctrl-C during a get (downloads in flight keep NAME.part for
get --continue). A get of several files exits with the highest status among
its files.

Examples:
  tcpcache get docs/readme.txt
  tcpcache --port 9090 list --json
  tcpcache get --help`;

/** The options every command has: the server, or a cluster. */
const COMMON = `  --host HOST, --port PORT   the server (default: $TCPCACHE_HOST, $TCPCACHE_PORT,
                             else ${DEFAULTS.host}:${DEFAULTS.port})
  --nodes HOST:PORT,...      a cluster instead (default: $TCPCACHE_NODES)
  --tls, --ca FILE           TLS, verified (--ca or $TCPCACHE_CA: a private CA)
  --token-file FILE          the token to present (default: $TCPCACHE_TOKEN)`;

/** The `--help` of each command. */
export const HELP: Record<CommandName, string> = {
  get: `tcpcache get: download files from a tcpcache server

Usage:
  tcpcache get PATH [-o DEST]       one file, to DEST or to its base name here
  tcpcache get PATH... [-o DIR]     several files, each under its base name in
                                    DIR (created if needed) or here
  tcpcache get -r DIR [-o OUT]      a directory tree, mirrored as OUT/DIR/...
                                    (OUT defaults to here)
  tcpcache get PATH -o -            one file's bytes to stdout, for pipes

Options:
  -o, --output DEST   where to save (see above); - is stdout
  -r, --recursive     mirror the directory DIR and everything below it
  --parallel N        download over N connections at once (default ${DEFAULT_PARALLEL}, at
                      most ${MAX_PARALLEL}); one file failing does not stop the others
  -c, --continue      finish NAME.part left by an interrupted download
  --json              print the outcome as JSON on stdout
  -q, --quiet         no progress line, no summary; errors only
${COMMON}

Every download goes to NAME.part and is renamed to NAME only once complete and
verified against the server's sha256. When the connection breaks in the middle
of a file, NAME.part is kept: get --continue asks only for the rest (a range
request) and then verifies the whole file; a mismatch discards NAME.part
(exit 1). Ctrl-C keeps NAME.part the same way (exit 130). A server error or a
failed verification removes NAME.part, and a get without --continue always
starts afresh.

The server knows a file's sha256 only while the file is in its cache, so a
file too large for the cache is saved unverified ("not verified" in the
summary). A continued download that gets no sha256 (neither with the range
nor from STAT) is accepted unverified only if NAME.part still carries the
file's modification time, as the interrupted download left it; otherwise
NAME.part is discarded with an error (exit 1), and a plain get starts afresh.

With -r, a file already present with the same size and the server's sha256
is skipped. A file the server has no sha256 for (not in its cache) is fetched
again, which caches it on the server, so the next mirror can skip it. Local
files the server does not have are left alone.

On a terminal a progress line shows bytes, percent, rate and time left, and is
cleared when done; then a summary line per file (size, time, rate, hit, miss
or bypass, and "verified sha256" when it was) goes to stderr.

Examples:
  tcpcache get docs/readme.txt
  tcpcache get docs/a.txt docs/b.txt big.iso --parallel 3 -o downloads
  tcpcache get -r docs -o mirror          # saves mirror/docs/...
  tcpcache get big.iso --continue
  tcpcache get hello.txt -o - | wc -c`,
  list: `tcpcache list: the cache's entries, in eviction order (#1 is evicted next)

Usage: tcpcache list [--json]

Options:
  --json     the server's listing as it is: capacity, used, policy, entries
${COMMON}

Example:
  tcpcache list --port 9090`,
  files: `tcpcache files: browse the served directory

Usage: tcpcache files [DIR] [--json]

Every entry of DIR, in byte order of the names: the server answers 10,000 at
a time, and every page is gathered.

Options:
  --json     the whole listing: path, entries (name, type, size, mtime)
${COMMON}

Example:
  tcpcache files docs`,
  stat: `tcpcache stat: a file's size, mtime, and whether it is cached (with its sha256)

Usage: tcpcache stat PATH [--json]

Options:
  --json     the server's answer as it is (sha256 is null when not cached)
${COMMON}

Example:
  tcpcache stat docs/readme.txt`,
  stats: `tcpcache stats: the server's counters since it started

Usage: tcpcache stats [--json]

Options:
  --json     the server's counters as they are
${COMMON}

Example:
  tcpcache stats --json`,
  ping: `tcpcache ping: check that the server answers, and how fast

Usage: tcpcache ping [--json]

Options:
  --json     {"host", "port", "ms"}
${COMMON}

Example:
  TCPCACHE_PORT=9090 tcpcache ping`,
};
