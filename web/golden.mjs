// node web/golden.mjs ARTIFACT CASES.json: replay golden cases written by
// `python -m checks.golden write` on onnxruntime-node; prints a one-line JSON
// summary and exits 1 on any difference from Python's answers.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { openArtifact } from "./node_host.mjs";
import { replay } from "./replay.mjs";

const [artifact, casesFile] = process.argv.slice(2);
if (!artifact || !casesFile) {
  process.stderr.write("usage: node web/golden.mjs ARTIFACT CASES.json\n");
  process.exit(2);
}
const cases = JSON.parse(await readFile(casesFile, "utf8"));
const { failures, strings } = await replay(cases, (precision, greedy) => openArtifact(artifact, { precision, greedy }),
  await readFile(join(artifact, "artifact.json")));
for (const f of failures) process.stderr.write(`golden: DIFFERS: ${f}\n`);
process.stdout.write(`${JSON.stringify({ arch: process.arch, decode_cases: cases.decode.length, strings,
  refusals: cases.refusals.length, failures: failures.length })}\n`);
process.exitCode = failures.length ? 1 : 0;
