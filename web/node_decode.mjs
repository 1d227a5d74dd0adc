// node web/node_decode.mjs ARTIFACT TEXTS_FILE [--greedy step|fused] [--beam K]
// Decodes one text a line with onnxruntime-node and prints a JSON array of outputs.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";

import { loadArtifact, Seq2SeqError } from "./seq2seq.mjs";

const [artifact, textsFile, ...rest] = process.argv.slice(2);
const option = (name, fallback) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : fallback;
};
try {
  const model = await loadArtifact(ort, async (name) => new Uint8Array(await readFile(join(artifact, name))),
    { greedy: option("--greedy", "auto") });
  const texts = (await readFile(textsFile, "utf8")).split("\n").filter((l) => l !== "").map((l) => l.split("\t")[0]);
  const outputs = await model.translate(texts, { beamSize: Number(option("--beam", "1")) });
  process.stdout.write(JSON.stringify(outputs) + "\n");
} catch (e) {
  if (e instanceof Seq2SeqError) {
    process.stderr.write(`error: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}
