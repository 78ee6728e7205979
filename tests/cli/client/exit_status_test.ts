/**
 * Unit tests of how the client's command line answers an error
 * (`cli/client/exit_status.ts`): the message and the exit status.
 *
 * @module
 */

import assert from "node:assert/strict";
import { describeError, exitStatus, Interrupted } from "../../../cli/client/exit_status.ts";
import {
  ConnectionError,
  IntegrityError,
  InterruptedDownloadError,
  ResumeError,
  ServerError,
} from "../../../client/errors.ts";

const broken = new InterruptedDownloadError("connection closed", "a.bin.part", 10);

const ERRORS: { name: string; error: unknown; status: number; message?: string }[] = [
  { name: "no error", error: undefined, status: 0 },
  {
    name: "a server error",
    error: new ServerError(404, "not found: x.txt"),
    status: 1,
    message: "not found: x.txt",
  },
  {
    name: "a failed verification",
    error: new IntegrityError("x", "aa", "bb", "x.part discarded"),
    status: 1,
    message: "sha256 mismatch for x: server said aa, received bb; x.part discarded",
  },
  {
    name: "a .part that cannot be continued",
    error: new ResumeError("x.part is longer than x on the server; discarded"),
    status: 1,
    message: "x.part is longer than x on the server; discarded",
  },
  {
    name: "a connection failure",
    error: new ConnectionError("cannot connect to 127.0.0.1:1: refused"),
    status: 3,
    message: "cannot connect to 127.0.0.1:1: refused",
  },
  {
    name: "a download cut short: resumable",
    error: broken,
    status: 3,
    message: "connection closed (get --continue finishes it)",
  },
  {
    name: "Ctrl-C during a download: the .part kept",
    error: new Interrupted(broken),
    status: 130,
    message: "interrupted; 10 bytes kept in a.bin.part (get --continue finishes it)",
  },
  {
    name: "Ctrl-C before a download started",
    error: new Interrupted(new ConnectionError("closed")),
    status: 130,
    message: "interrupted",
  },
  {
    name: "a local failure",
    error: new Deno.errors.PermissionDenied("cannot write out/a.txt"),
    status: 1,
    message: "cannot write out/a.txt",
  },
  { name: "not an Error", error: "a string", status: 1, message: "a string" },
];

Deno.test("each error's exit status and message", async (t) => {
  for (const { name, error, status, message } of ERRORS) {
    await t.step(name, () => {
      assert.equal(exitStatus(error), status);
      if (message !== undefined) assert.equal(describeError(error), message);
    });
  }
});

Deno.test("Interrupted keeps the interrupted download's error only when bytes were kept", () => {
  assert.equal(new Interrupted(broken).kept, broken);
  assert.equal(new Interrupted(new Error("other")).kept, undefined);
  assert.equal(new Interrupted().kept, undefined);
});
