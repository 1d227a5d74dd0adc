// A JavaScript runtime for seq2seq-edge artifacts: the browser (onnxruntime-web,
// WASM) and Node (onnxruntime-node). It reads artifact.json, checks each model
// file's sha256 (WebCrypto) and the contract digest inside it, encodes text by the
// recorded vocabulary rules and
// decodes as the Python runtime does: greedy (the step loop, or the fused graph in
// one call) and beam search. The ONNX Runtime module is passed in, so one file
// serves both hosts.
//
//   const model = await loadArtifact(ort, readFile, {greedy: "auto"});
//   const outputs = await model.translate(["15 janv. 2023"]);

export class Seq2SeqError extends Error {
  constructor(message) {
    super(message);
    this.name = "Seq2SeqError";
  }
}

const READABLE_VERSIONS = [1, 2, 3];
const PUNCTUATION = new Set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");
const FLOOR = Math.fround(1e-30);

async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// The ONNX file's metadata_props (ModelProto field 14: key 1, value 2), read from
// the protobuf's top-level fields, as runtime/embedded.py does.
function onnxMetadata(bytes) {
  const varint = (pos) => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (pos >= bytes.length) throw new Seq2SeqError("truncated ONNX file");
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
        if (pos + size > end) throw new Seq2SeqError("malformed ONNX file");
        yield [Math.floor(tag / 8), pos, pos + size];
        pos += size;
      } else throw new Seq2SeqError("malformed ONNX file");
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

// JSON as Python's json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":")).
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

// runtime.metadata.contract_digest: what a graph file must agree on with artifact.json.
async function contractDigest(meta, g) {
  const a = meta.attention;
  const contract = {
    vocabulary: meta.vocabulary, graph: g.name, inputs: g.inputs, outputs: g.outputs,
    state: meta.state.map((s) => [s.name, s.units]),
    attention: a ? [a.kind, a.memory_units, a.masked] : null,
  };
  return sha256Hex(new TextEncoder().encode(canonical(contract)));
}

// The vocabulary's encoding rule (runtime/vocab.py): standardise, split into
// characters or words, map to ids, pad to max_input_length on the recorded side.
export class Vocabulary {
  constructor(d) {
    this.inputTokens = d.input_tokens;
    this.targetTokens = d.target_tokens;
    this.unit = d.unit || "char";
    this.targetUnit = d.target_unit || "char";
    this.standardize = d.standardize ?? null;
    this.unknownToken = d.unknown_token ?? null;
    this.maxInputLength = d.max_input_length;
    this.maxOutputLength = d.max_output_length;
    this.padding = d.padding || { side: "left", token: null };
    this.inputIndex = new Map(this.inputTokens.map((t, i) => [t, i]));
    const targetIndex = new Map(this.targetTokens.map((t, i) => [t, i]));
    this.startId = targetIndex.get(d.start_token);
    this.endId = targetIndex.get(d.end_token);
    this.padId = this.padding.token === null ? this.inputTokens.length
      : this.inputIndex.get(this.padding.token);
    this.separator = this.targetUnit === "word" ? " " : "";
  }

  split(text) {
    if (this.standardize === "lower" || this.standardize === "lower_and_strip_punctuation") {
      text = text.replace(/[A-Z]/g, (c) => c.toLowerCase()); // ASCII only, as TextVectorization
    }
    if (this.standardize === "strip_punctuation"
        || this.standardize === "lower_and_strip_punctuation") {
      text = Array.from(text).filter((c) => !PUNCTUATION.has(c)).join("");
    }
    if (this.unit === "word") return text.split(/[ \t\n\r\f\v]+/).filter((w) => w);
    return Array.from(text); // code points, as Python's list(text)
  }

  // Int32Array [texts.length * maxInputLength], row-major.
  encode(texts, { unknown = "error", tooLong = "error" } = {}) {
    const L = this.maxInputLength;
    const out = new Int32Array(texts.length * L).fill(this.padId);
    const units = this.unit === "char" ? "characters" : "words";
    texts.forEach((text, row) => {
      if (typeof text !== "string") throw new Seq2SeqError(`input ${row} is not a string`);
      const pieces = this.split(text);
      let ids = pieces.map((p) => (p !== "" && this.inputIndex.has(p) ? this.inputIndex.get(p) : -1));
      if (ids.includes(-1)) {
        if (unknown === "error") {
          const bad = [...new Set(pieces.filter((p, i) => ids[i] < 0))].sort();
          throw new Seq2SeqError(`input ${row} has ${units} outside the vocabulary: `
            + bad.slice(0, 20).map((c) => `'${c}'`).join(", "));
        }
        const fill = unknown === "unk" ? this.inputIndex.get(this.unknownToken) : -1;
        ids = ids.map((i) => (i >= 0 ? i : fill)).filter((i) => i >= 0);
      }
      if (ids.length === 0) throw new Seq2SeqError(`input ${row} is empty`);
      if (ids.length > L) {
        if (tooLong === "error") {
          throw new Seq2SeqError(`input ${row} has ${ids.length} ${units}; the model takes at most ${L}`);
        }
        ids = ids.slice(0, L);
      }
      const start = row * L + (this.padding.side === "left" ? L - ids.length : 0);
      out.set(ids, start);
    });
    return out;
  }

  join(ids) {
    return ids.map((i) => this.targetTokens[i]).join(this.separator);
  }
}

// An artifact loaded on ONNX Runtime. readFile(name) -> Promise<Uint8Array>.
export async function loadArtifact(ort, readFile, { precision = "fp32", greedy = "auto",
  verify = true } = {}) {
  const fileFormat = "onnx";  // the .onnx files (ORT files would need their own reader)
  let meta;
  try {
    meta = JSON.parse(new TextDecoder().decode(await readFile("artifact.json")));
  } catch (e) {
    throw new Seq2SeqError(`artifact.json: missing or not JSON (${e.message})`);
  }
  if (meta.format !== "seq2seq-artifact" || !READABLE_VERSIONS.includes(meta.version)) {
    throw new Seq2SeqError(`artifact.json: not a seq2seq artifact of version ${READABLE_VERSIONS.join(", ")}`);
  }
  const vocab = new Vocabulary(meta.vocabulary);
  const state = meta.version === 1 ? ["h", "c"] : meta.state.map((s) => s.name);
  const attention = meta.attention ?? null;
  const memory = attention ? (attention.masked ? ["memory", "memory_mask"] : ["memory"]) : [];
  const graph = (name) => meta.graphs.find((g) => g.format === fileFormat
    && g.precision === precision && g.name === name);
  const hasFused = Boolean(graph("greedy"));
  const fused = greedy === "fused" || (greedy === "auto" && hasFused
    && (meta.greedy_path || {})[`${fileFormat}/${precision}`] === "fused");
  if (greedy === "fused" && !hasFused) throw new Seq2SeqError(`no fused ${fileFormat} ${precision} greedy graph`);
  const sessions = {};
  for (const name of ["encoder", "decoder_step"].concat(fused ? ["greedy"] : [])) {
    const g = graph(name);
    if (!g) throw new Seq2SeqError(`no ${fileFormat} ${precision} ${name} graph in the artifact`);
    const bytes = await readFile(g.file);
    if (verify) {
      if (bytes.length !== g.bytes) {
        throw new Seq2SeqError(`${g.file}: ${bytes.length} bytes, but the metadata records ${g.bytes}`);
      }
      if (await sha256Hex(bytes) !== g.sha256) {
        throw new Seq2SeqError(`${g.file}: sha256 differs from the metadata's (corrupt or tampered with)`);
      }
    }
    if (meta.version >= 3) {  // the digest export wrote inside the file (tamper evidence)
      const found = onnxMetadata(bytes)["seq2seq.contract_sha256"];
      if (found === undefined) throw new Seq2SeqError(`${g.file}: carries no contract digest; re-export it`);
      if (found !== await contractDigest(meta, g)) {
        throw new Seq2SeqError(`${g.file}: artifact.json does not match this model file: its vocabulary, `
          + "tensor names or decoder state were changed after export");
      }
    }
    sessions[name] = { session: await ort.InferenceSession.create(bytes), inputs: g.inputs, outputs: g.outputs };
  }
  return new Seq2SeqModel(ort, vocab, sessions, state, memory, fused);
}

export class Seq2SeqModel {
  constructor(ort, vocab, sessions, state, memory, fused) {
    Object.assign(this, { ort, vocab, sessions, state, memory, fused });
  }

  // The decoder's initial state (and memory) for ids [batch, L]: an array of tensors.
  async encode(ids, batch) {
    const L = this.vocab.maxInputLength;
    const { session, outputs } = this.sessions.encoder;
    const out = await session.run({ input_ids: new this.ort.Tensor("int32", ids, [batch, L]) });
    return outputs.map((name) => out[name]);
  }

  // One step: {probs (Float32Array [batch*V]), state, next (Int32Array)}.
  async step(tokens, state) {
    const { session, inputs, outputs } = this.sessions.decoder_step;
    const feeds = { token: new this.ort.Tensor("int32", Int32Array.from(tokens), [tokens.length]) };
    inputs.slice(1).forEach((name, i) => { feeds[name] = state[i]; });
    const out = await session.run(feeds);
    const carried = this.state.length;
    const next = outputs.slice(1, 1 + carried).map((name) => out[name]).concat(state.slice(carried));
    return { probs: out.probs.data, state: next, next: out.next_token.data };
  }

  async translate(texts, { beamSize = 1, lengthPenalty = 1.0, unknown = "error", tooLong = "error" } = {}) {
    if (texts.length === 0) return [];
    const ids = this.vocab.encode(texts, { unknown, tooLong });
    let results;
    if (beamSize > 1) {
      results = [];
      const L = this.vocab.maxInputLength;
      for (let i = 0; i < texts.length; i++) {
        results.push(await this.beam(ids.subarray(i * L, (i + 1) * L), beamSize, lengthPenalty));
      }
    } else if (this.fused) {
      results = await this.fusedGreedy(ids, texts.length);
    } else {
      results = await this.greedy(ids, texts.length);
    }
    return results.map((seq) => this.vocab.join(seq));
  }

  async fusedGreedy(ids, batch) {
    const L = this.vocab.maxInputLength;
    const out = await this.sessions.greedy.session.run({ input_ids: new this.ort.Tensor("int32", ids, [batch, L]) });
    const width = out.output_ids.dims[1];
    const rows = [];
    for (let b = 0; b < batch; b++) {
      const n = Number(out.lengths.data[b]);
      rows.push(Array.from(out.output_ids.data.subarray(b * width, b * width + n), Number));
    }
    return rows;
  }

  // Batched greedy: each row stops at its own end token.
  async greedy(ids, batch) {
    const { startId, endId, maxOutputLength } = this.vocab;
    let state = await this.encode(ids, batch);
    let tokens = new Array(batch).fill(startId);
    const out = Array.from({ length: batch }, () => []);
    const active = new Array(batch).fill(true);
    for (let t = 0; t < maxOutputLength && active.some(Boolean); t++) {
      const step = await this.step(tokens, state);
      state = step.state;
      tokens = Array.from(step.next, Number);
      tokens.forEach((tok, b) => {
        if (!active[b]) return;
        if (tok === endId) active[b] = false;
        else out[b].push(tok);
      });
    }
    return out;
  }

  // Beam search for one input, the rule of runtime/decoding.py's beam_search (the
  // standard one): extensions ranked by sum(log p) (ties: lower beam, then lower
  // token); an ending one (end token, or the last step) is finished only within the
  // first width ranks, scored sum / length ** lengthPenalty (length counts the end
  // token); the first width others live on. The search stops when no live
  // hypothesis could still score above the best finished one, so the answer is
  // that of a search run to the maximum length.
  async beam(ids, width, lengthPenalty) {
    const { startId, endId, maxOutputLength: steps } = this.vocab;
    let state = await this.encode(ids, 1);
    let seqs = [[]];
    let scores = [0];
    let tokens = [startId];
    let bestScore = -Infinity;
    let bestSeq = [];
    for (let t = 0; t < steps; t++) {
      const step = await this.step(tokens, state);
      const V = step.probs.length / tokens.length;
      const flat = [];
      for (let r = 0; r < tokens.length; r++) {
        for (let v = 0; v < V; v++) {
          const p = Math.min(Math.max(step.probs[r * V + v], FLOOR), 1);
          if (Number.isNaN(p)) throw new Seq2SeqError("the model produced NaN probabilities; the artifact is broken");
          flat.push([scores[r] + Math.fround(Math.log(p)), r * V + v]);
        }
      }
      flat.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      const keep = [];
      const denominator = (t + 1) ** lengthPenalty;
      flat.slice(0, 2 * width).forEach(([score, index], rank) => {
        const row = Math.floor(index / V);
        const tok = index % V;
        if (tok === endId || t === steps - 1) {
          if (rank < width && score / denominator > bestScore) {
            bestScore = score / denominator;
            bestSeq = tok === endId ? seqs[row] : seqs[row].concat([tok]);
          }
        } else if (keep.length < width) {
          keep.push([row, tok, score]);
        }
      });
      if (keep.length === 0) break;
      // The best a live hypothesis can still reach: its sum only falls as it grows.
      const ceiling = keep[0][2] / (lengthPenalty > 0 ? steps : t + 2) ** lengthPenalty;
      if (ceiling <= bestScore) break;
      const rows = keep.map((k) => k[0]);
      state = step.state.map((s) => this.gatherRows(s, rows));
      seqs = keep.map(([row, tok]) => seqs[row].concat([tok]));
      scores = keep.map((k) => k[2]);
      tokens = keep.map((k) => k[1]);
    }
    return bestSeq;
  }

  gatherRows(tensor, rows) {
    const per = tensor.data.length / tensor.dims[0];
    const data = new tensor.data.constructor(rows.length * per);
    rows.forEach((r, i) => data.set(tensor.data.subarray(r * per, (r + 1) * per), i * per));
    return new this.ort.Tensor(tensor.type, data, [rows.length, ...tensor.dims.slice(1)]);
  }
}
