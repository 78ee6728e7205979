/**
 * Unit tests of the client's look at local files (`cli/client/local_files.ts`),
 * in a temporary directory.
 *
 * @module
 */

import assert from "node:assert/strict";
import { hashFile, isDirectory, localFileSize } from "../../../cli/client/local_files.ts";
import { seededBytes, sha256 } from "../../helpers.ts";
import { withTempDir } from "../cli_helpers.ts";

Deno.test("isDirectory, localFileSize and hashFile", async () => {
  await withTempDir(async (dir) => {
    const bytes = seededBytes(200 * 1024, 4);
    await Deno.writeFile(`${dir}/file.bin`, bytes);
    await Deno.mkdir(`${dir}/sub`);

    assert.equal(await isDirectory(dir), true);
    assert.equal(await isDirectory(`${dir}/sub`), true);
    assert.equal(await isDirectory(`${dir}/file.bin`), false);
    assert.equal(await isDirectory(`${dir}/nothing`), false);

    assert.equal(await localFileSize(`${dir}/file.bin`), bytes.length);
    assert.equal(await localFileSize(`${dir}/sub`), undefined, "a directory has no file size");
    assert.equal(await localFileSize(`${dir}/nothing`), undefined);

    assert.equal(await hashFile(`${dir}/file.bin`), sha256(bytes));
    await assert.rejects(hashFile(`${dir}/nothing`), Deno.errors.NotFound);
  });
});
