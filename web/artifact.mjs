// artifact.json read and checked as runtime/metadata.py's load_config does, and the
// graph files read through it: a file name must stay inside the artifact before
// anything is opened, and each file's size, sha256 and the contract digest
// inside it must match the metadata.
import { Seq2SeqError } from "./errors.mjs";
import { Vocabulary } from "./vocab.mjs";

const FORMAT = "seq2seq-artifact";
export const READABLE_VERSIONS = [1, 2, 3, 4];
const GRAPH_NAMES = ["encoder", "decoder_step", "greedy"];
const FILE_FORMATS = ["onnx", "ort", "tflite"];
const ATTENTION_KINDS = ["luong", "bahdanau"];
const GREEDY_PATHS = ["step", "fused"];
const DTYPES = ["float32", "int32"];
const STEP_KINDS = ["structured", "prefix", "cached"];
// The steps whose encoder hands the step graph a memory of its own (listed).
const CUT_STEPS = ["prefix", "cached"];
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

const fail = (message) => {
  throw new Seq2SeqError(`artifact.json: ${message}`);
};
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const field = (d, key, what = "field") => {
  if (!isObject(d) || !(key in d)) fail(`${what} missing or malformed: '${key}'`);
  return d[key];
};

// A graph file must be a plain file name inside the artifact directory.
export function safeFileName(name) {
  if (typeof name !== "string" || name === "") fail(`graph file name ${JSON.stringify(name)} is invalid`);
  if (name.includes("/") || name.includes("\\") || name === "." || name === ".." || name.includes("\0")) {
    fail(`graph file '${name}' is outside the artifact directory`);
  }
  return name;
}

// Input and output tensor names of each graph (runtime.metadata.graph_io): an
// attention model's memory by its attention record, a prefix step's listed.
export function graphIO(state, attention, memoryNames = []) {
  const memory = attention ? (attention.masked ? ["memory", "memory_mask"] : ["memory"]) : memoryNames;
  return {
    encoder: [["input_ids"], state.concat(memory)],
    decoder_step: [["token", ...state, ...memory],
      ["probs", ...state.map((n) => `${n}_out`), "next_token", ...(attention ? ["attention"] : [])]],
    greedy: [["input_ids"], ["output_ids", "lengths"]],
  };
}

// The validated metadata: {version, vocab, vocabulary (as recorded), state, units,
// attention, graphs, greedyPath}.
export function parseMetadata(text) {
  let d;
  try {
    d = JSON.parse(text);
  } catch (e) {
    fail(`corrupt metadata (${e.message})`);
  }
  if (!isObject(d) || d.format !== FORMAT) fail(`not a ${FORMAT} metadata file`);
  if (isObject(d.parity) && d.parity.passed === false) {
    fail("its export did not finish proving parity (parity.passed is false: killed or failed "
      + "part way); re-export it");
  }
  if (!READABLE_VERSIONS.includes(d.version)) {
    fail(`artifact version ${JSON.stringify(d.version)}, but this runtime reads versions `
      + `${READABLE_VERSIONS.join(", ")}; re-export the model with this toolkit's python -m export`);
  }
  let vocab;
  try {
    vocab = new Vocabulary(field(d, "vocabulary"));
  } catch (e) {
    if (e.message.startsWith("artifact.json")) throw e;
    fail(`bad vocabulary: ${e.message}`);
  }
  const state = d.version === 1
    ? [["h", field(d, "latent_dim")], ["c", d.latent_dim]]
    : (Array.isArray(field(d, "state")) ? d.state : fail("field missing or malformed: 'state'"))
      .map((s) => (!isObject(s) ? fail(`state entries must be objects, got ${JSON.stringify(s)}`)
        : s.dtype === undefined || s.dtype === "float32"
        ? [field(s, "name"), field(s, "units")] : [field(s, "name"), field(s, "units"), s.dtype]));
  const names = state.map(([n]) => n);
  const memory = d.memory === undefined || d.memory === null ? [] : d.memory;
  if (!Array.isArray(memory) || !memory.every(isObject)) fail("'memory' must be a list of objects");
  const memoryNames = memory.map((m) => field(m, "name"));
  const every = names.concat(memoryNames);
  if (names.length === 0 || new Set(every).size !== every.length
      || !state.every(([n, u, t = "float32"]) => typeof n === "string" && IDENTIFIER.test(n)
        && Number.isInteger(u) && u > 0 && DTYPES.includes(t))) {
    fail(`the decoder state ${JSON.stringify(names)} must be distinct names with positive units `
      + `and a dtype among ${DTYPES.join(", ")}`);
  }
  if (!memory.every((m) => typeof m.name === "string" && IDENTIFIER.test(m.name) && DTYPES.includes(m.dtype)
      && Array.isArray(m.shape) && m.shape.every((x) => Number.isInteger(x) && x > 0))) {
    fail("memory tensors must have names, positive shapes and a dtype among float32, int32");
  }
  if (d.step !== undefined && d.step !== null && !isObject(d.step)) fail(`'step' must be an object`);
  const stepKind = isObject(d.step) && d.step.kind !== undefined ? d.step.kind : "structured";
  let attention = null;
  if (d.attention !== undefined && d.attention !== null) {
    const a = d.attention;
    attention = { kind: field(a, "kind"), memoryUnits: field(a, "memory_units"), masked: field(a, "masked") };
    if (!ATTENTION_KINDS.includes(attention.kind) || !Number.isInteger(attention.memoryUnits)
        || attention.memoryUnits < 1 || typeof attention.masked !== "boolean") {
      fail(`attention kind must be one of ${ATTENTION_KINDS.join(", ")} with positive memory_units`);
    }
  }
  if (!STEP_KINDS.includes(stepKind) || CUT_STEPS.includes(stepKind) !== (memory.length > 0)
      || (memory.length > 0 && attention !== null)) {
    fail(`step kind ${JSON.stringify(stepKind)} must be one of ${STEP_KINDS.join(", ")}; a prefix `
      + "or cached step lists its memory, and only it (not attention)");
  }
  const io = graphIO(names, attention, memoryNames);
  if (!Array.isArray(field(d, "graphs"))) fail("field missing or malformed: 'graphs'");
  const graphs = d.graphs.map((g) => {
    const graph = {};
    for (const key of ["name", "format", "precision", "file", "sha256", "bytes", "inputs", "outputs"]) {
      graph[key] = field(g, key);
    }
    safeFileName(graph.file);
    if (!GRAPH_NAMES.includes(graph.name)) fail(`unknown graph ${JSON.stringify(graph.name)}`);
    if (!FILE_FORMATS.includes(graph.format)) fail(`${graph.file} has unknown format ${JSON.stringify(graph.format)}`);
    if (!Number.isInteger(graph.bytes) || typeof graph.sha256 !== "string") {
      fail(`${graph.file}: bytes and sha256 malformed`);
    }
    const [ins, outs] = io[graph.name];
    if (JSON.stringify(graph.inputs) !== JSON.stringify(ins) || JSON.stringify(graph.outputs) !== JSON.stringify(outs)) {
      fail(`${graph.file} lists inputs ${JSON.stringify(graph.inputs)} and outputs `
        + `${JSON.stringify(graph.outputs)}; the decoder state ${JSON.stringify(names)} needs `
        + `${JSON.stringify(ins)} and ${JSON.stringify(outs)}`);
    }
    return graph;
  });
  const greedyPath = d.greedy_path ?? {};
  if (!isObject(greedyPath) || !Object.values(greedyPath).every((v) => GREEDY_PATHS.includes(v))) {
    fail("greedy_path values must be one of step, fused");
  }
  return { version: d.version, vocab, vocabulary: d.vocabulary, state: names,
    units: state, attention, graphs, greedyPath, memory, stepKind };
}

async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// JSON as Python's json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":")).
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

// runtime.metadata.contract_digest: what a graph file must agree on with artifact.json.
function contractDigest(meta, g) {
  const a = meta.attention;
  const contract = {
    vocabulary: meta.vocabulary, graph: g.name, inputs: g.inputs, outputs: g.outputs,
    state: meta.units, attention: a ? [a.kind, a.memoryUnits, a.masked] : null,
  };
  if (meta.memory.length > 0) contract.memory = meta.memory.map((m) => [m.name, m.shape, m.dtype]);
  return sha256Hex(new TextEncoder().encode(canonical(contract)));
}

// A graph file's bytes, checked against the metadata. readFile(name) -> Uint8Array;
// any failure of it (a missing file) becomes a Seq2SeqError naming the file.
export async function readGraph(meta, g, readFile, verify) {
  let bytes;
  try {
    bytes = await readFile(safeFileName(g.file));
  } catch (e) {
    if (e instanceof Seq2SeqError) throw e;
    throw new Seq2SeqError(`${g.file}: model file missing or unreadable (${e.message})`);
  }
  if (verify) {
    if (bytes.length !== g.bytes) {
      throw new Seq2SeqError(`${g.file}: ${bytes.length} bytes, but the metadata records ${g.bytes}`
        + " (truncated or replaced?)");
    }
    if (await sha256Hex(bytes) !== g.sha256) {
      throw new Seq2SeqError(`${g.file}: sha256 differs from the metadata's (corrupt or tampered with)`);
    }
  }
  const found = onnxMetadata(bytes, g.file)["seq2seq.contract_sha256"];
  if (found === undefined) {
    if (meta.version >= 3) throw new Seq2SeqError(`${g.file}: carries no contract digest; re-export it`);
  } else if (found !== await contractDigest(meta, g)) {
    throw new Seq2SeqError(`${g.file}: artifact.json does not match this model file: its vocabulary, `
      + "tensor names or decoder state were changed after export");
  }
  return bytes;
}

// The ONNX file's metadata_props (ModelProto field 14: key 1, value 2), read from
// the protobuf's top-level fields, as runtime/embedded.py does.
function onnxMetadata(bytes, file) {
  const bad = () => new Seq2SeqError(`${file}: not a readable onnx file (malformed protobuf)`);
  const varint = (pos) => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (pos >= bytes.length) throw bad();
      const byte = bytes[pos++];
      value += (byte & 0x7f) * scale;
      scale *= 128;
      if (!(byte & 0x80)) return [value, pos];
    }
  };
  const fields = function* (start, end) {
    let pos = start;
    while (pos < end) {
      let tag;
      [tag, pos] = varint(pos);
      const wire = tag % 8;
      if (wire === 0) [, pos] = varint(pos);
      else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else if (wire === 2) {
        let size;
        [size, pos] = varint(pos);
        if (pos + size > end) throw bad();
        yield [Math.floor(tag / 8), pos, pos + size];
        pos += size;
      } else throw bad();
    }
  };
  const text = (a, b) => new TextDecoder().decode(bytes.subarray(a, b));
  const props = {};
  for (const [number, a, b] of fields(0, bytes.length)) {
    if (number !== 14) continue;
    const entry = {};
    for (const [n, c, d] of fields(a, b)) entry[n] = text(c, d);
    props[entry[1] ?? ""] = entry[2] ?? "";
  }
  return props;
}
