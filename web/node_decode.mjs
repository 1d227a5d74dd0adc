// node web/node_decode.mjs ARTIFACT [TEXTS_FILE] [options]: decode one text a line
// with onnxruntime-node, as `python -m runtime` does (run with --help for the options).
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";

import { Seq2SeqError } from "./errors.mjs";
import { openArtifact } from "./node_host.mjs";

const HELP = `usage: node web/node_decode.mjs ARTIFACT [TEXTS_FILE] [options]

Decode texts with an artifact written by \`python -m export\`, in Node with
onnxruntime-node: one text a line of TEXTS_FILE (or of standard input when it is
absent or "-"), one output a line. Blank lines are refused, so outputs always
line up with inputs; Windows line ends (CRLF) are read as line ends.

options:
  -h, --help            show this help and exit
  --greedy MODE         auto, step or fused (default: auto, the faster one as
                        export measured)
  --precision P         fp32, int8 or int8-full, a variant the artifact has (default: fp32);
                        fp16, int8-io and int16x8 are TFLite files, refused here
  --beam K              beam size, 1 to 256 (default: 1, greedy)
  --length-penalty A    beam search ranks finished outputs by sum(log p) / length ** A
                        (default: 1.0)
  --max-length N        most output tokens (default: the model's maximum)
  --n-best              with --beam K: print each input's K best outputs and their
                        scores, one JSON object a line
  --skip-unknown        drop characters (or words) outside the vocabulary
  --unk                 map them to the vocabulary's unknown token
  --truncate            cut inputs longer than the model's maximum
  --json                one JSON object a line: {"input", "output"}
  --no-verify           skip the sha256 check of the model files`;

const OPTIONS = {
  help: { type: "boolean", short: "h" }, greedy: { type: "string" }, precision: { type: "string" },
  beam: { type: "string" }, "length-penalty": { type: "string" }, "max-length": { type: "string" },
  "n-best": { type: "boolean" }, "skip-unknown": { type: "boolean" }, unk: { type: "boolean" },
  truncate: { type: "boolean" }, json: { type: "boolean" }, "no-verify": { type: "boolean" },
};

class UsageError extends Error {}

// A whole number or a decimal, as Python's int() and float() accept them.
function number(name, text, integer) {
  if (text === undefined) return undefined;
  const ok = integer ? /^\s*[-+]?\d+\s*$/.test(text)
    : /^\s*[-+]?(\d+\.?\d*(e[-+]?\d+)?|\.\d+(e[-+]?\d+)?|inf(inity)?|nan)\s*$/i.test(text);
  if (!ok) throw new UsageError(`--${name}: invalid ${integer ? "int" : "float"} value: '${text}'`);
  return /inf/i.test(text) ? (text.includes("-") ? -Infinity : Infinity) : Number(text);
}

function parse(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(e.message);
  }
  const { values: v, positionals } = parsed;
  if (v.help) return { help: true };
  if (positionals.length < 1 || positionals.length > 2) {
    throw new UsageError(positionals.length ? `expected ARTIFACT [TEXTS_FILE], got ${positionals.length} arguments`
      : "the following arguments are required: ARTIFACT");
  }
  if (v["skip-unknown"] && v.unk) throw new UsageError("--skip-unknown and --unk are exclusive");
  const choose = (name, value, choices) => {
    if (value !== undefined && !choices.includes(value)) {
      throw new UsageError(`--${name}: invalid choice: '${value}' (choose from ${choices.join(", ")})`);
    }
    return value;
  };
  const beamSize = number("beam", v.beam, true) ?? 1;
  if (v["n-best"] && beamSize < 2) throw new UsageError("--n-best needs --beam K with K >= 2");
  return {
    artifact: positionals[0], textsFile: positionals[1] ?? "-", json: Boolean(v.json), nBest: Boolean(v["n-best"]),
    load: { greedy: choose("greedy", v.greedy, ["auto", "step", "fused"]) ?? "auto",
      precision: choose("precision", v.precision, ["fp32", "int8", "fp16", "int8-full", "int8-io", "int16x8"]) ?? "fp32", verify: !v["no-verify"] },
    decode: { beamSize, lengthPenalty: number("length-penalty", v["length-penalty"], false) ?? 1.0,
      maxLength: number("max-length", v["max-length"], true) ?? null,
      unknown: v["skip-unknown"] ? "skip" : v.unk ? "unk" : "error", tooLong: v.truncate ? "truncate" : "error" },
  };
}

// One text a line: CRLF read as a line end; a blank line is an error that names it.
async function readTexts(file) {
  let text;
  try {
    text = file === "-" ? await readStdin() : await readFile(file, "utf8");
  } catch (e) {
    throw new Seq2SeqError(`${file}: cannot read the texts (${e.code ?? e.message})`);
  }
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  const where = file === "-" ? "standard input" : file;
  return lines.map((line, i) => {
    const t = line.replace(/[\r\n]+$/, "");
    if (t === "") throw new Seq2SeqError(`line ${i + 1} of ${where} is blank; every line is one input`);
    return t;
  });
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

async function main(argv) {
  const args = parse(argv);
  if (args.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const model = await openArtifact(args.artifact, args.load);
  const texts = await readTexts(args.textsFile);
  if (args.nBest) {
    for (const [i, text] of texts.entries()) {
      const best = await model.nBest(text, args.decode).catch((e) => {
        throw e instanceof Seq2SeqError ? new Seq2SeqError(`line ${i + 1}: ${e.message}`) : e;
      });
      process.stdout.write(`${JSON.stringify({ input: text, n_best: best })}\n`);
    }
    return 0;
  }
  let outputs;
  try {
    outputs = await model.translate(texts, args.decode);
  } catch (e) {
    const row = /^input (\d+) /.exec(e.message);
    if (!(e instanceof Seq2SeqError) || !row) throw e;
    const where = args.textsFile === "-" ? "standard input" : args.textsFile;
    throw new Seq2SeqError(`${e.message} (line ${Number(row[1]) + 1} of ${where}; --skip-unknown, `
      + "--unk and --truncate relax the rules)");
  }
  texts.forEach((text, i) => process.stdout.write(`${args.json
    ? JSON.stringify({ input: text, output: outputs[i] }) : outputs[i]}\n`));
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (e instanceof UsageError) {
    process.stderr.write(`usage: node web/node_decode.mjs ARTIFACT [TEXTS_FILE] [options] (--help)\nerror: ${e.message}\n`);
    process.exitCode = 2;
  } else if (e instanceof Seq2SeqError) {
    process.stderr.write(`error: ${e.message}\n`);
    process.exitCode = 2;
  } else {
    throw e;
  }
}
