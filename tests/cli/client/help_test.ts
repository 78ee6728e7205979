/**
 * Unit tests of the client's help texts (`cli/client/help.ts`): every
 * command has one, and every default they state is the one the code uses.
 *
 * @module
 */

import assert from "node:assert/strict";
import { COMMANDS, DEFAULT_PARALLEL, MAX_PARALLEL } from "../../../cli/client/args.ts";
import { HELP, USAGE } from "../../../cli/client/help.ts";
import { DEFAULTS } from "../../../defaults.ts";
import { VERSION } from "../../../version.ts";

Deno.test("the general help: version, every command, the defaults of DEFAULTS", () => {
  assert.ok(USAGE.startsWith(`tcpcache client ${VERSION}: `));
  for (const command of COMMANDS) assert.match(USAGE, new RegExp(`^  ${command}\\b`, "m"));
  assert.ok(USAGE.includes(`(default: $TCPCACHE_HOST or ${DEFAULTS.host})`));
  assert.ok(USAGE.includes(`(default: $TCPCACHE_PORT or ${DEFAULTS.port})`));
});

Deno.test("each command's help: title, usage, the server's defaults, an example", async (t) => {
  assert.deepEqual(Object.keys(HELP).sort(), [...COMMANDS].sort());
  for (const command of COMMANDS) {
    await t.step(command, () => {
      const help = HELP[command];
      assert.ok(help.startsWith(`tcpcache ${command}: `), help);
      assert.match(help, new RegExp(`^Usage:(\\n)? +tcpcache ${command}\\b`, "m"));
      assert.ok(help.includes(`else ${DEFAULTS.host}:${DEFAULTS.port})`), help);
      assert.match(help, new RegExp(`^Examples?:\\n(  .*\\n)*  .*tcpcache ${command}\\b`, "m"));
    });
  }
});

Deno.test("get's help states --parallel's default and limit as the parser has them", () => {
  assert.match(
    HELP.get,
    new RegExp(`\\(default ${DEFAULT_PARALLEL}, at\\n +most ${MAX_PARALLEL}\\)`),
  );
});
