// A JavaScript runtime for seq2seq-edge artifacts: the browser (onnxruntime-web,
// WASM) and Node (onnxruntime-node). It reads artifact.json as the Python runtime
// does (web/artifact.mjs), encodes text by the recorded vocabulary rules
// (web/vocab.mjs) and decodes as runtime/decoding.py does: greedy (the step loop,
// or the fused graph in one call), beam search with its n-best list, teacher-forced
// scores, and the attention map of an attention model. The ONNX Runtime module and
// the file reader are passed in, so one file serves both hosts.
//
//   const model = await loadArtifact(ort, readFile, {greedy: "auto"});
//   const outputs = await model.translate(["15 janv. 2023"]);
import { parseMetadata, readGraph } from "./artifact.mjs";
import { Seq2SeqError } from "./errors.mjs";
import { LONG_POLICIES, UNKNOWN_POLICIES, Vocabulary } from "./vocab.mjs";

export { Seq2SeqError, Vocabulary };

export const MAX_BEAM = 256;  // runtime.decoding.MAX_BEAM
const PRECISIONS = ["fp32", "int8", "fp16", "int8-full"];
// TFLite-only variants: this runtime runs the ONNX files.
const TFLITE_ONLY = { fp16: "float16 weights", "int8-io": "int8 inputs and outputs",
  int16x8: "int16 activations" };
const GREEDY = ["auto", "step", "fused"];
const FLOOR = Math.fround(1e-30);

const check = (ok, message) => {
  if (!ok) throw new Seq2SeqError(message);
};
const show = (v) => (typeof v === "string" ? JSON.stringify(v) : String(v));

// An artifact loaded on ONNX Runtime. readFile(name) -> Promise<Uint8Array>; it is
// only ever given plain file names that artifact.json lists and that were checked.
export async function loadArtifact(ort, readFile, { precision = "fp32", greedy = "auto",
  verify = true } = {}) {
  check(!Object.hasOwn(TFLITE_ONLY, precision), `precision ${show(precision)} (${TFLITE_ONLY[precision]}) `
    + "is a TFLite variant, and this runtime runs the ONNX files: choose fp32, int8 or int8-full");
  check(PRECISIONS.includes(precision), `unknown precision ${show(precision)}; choose one of ${PRECISIONS.join(", ")}`);
  check(GREEDY.includes(greedy), `greedy must be auto, step or fused, got ${show(greedy)}`);
  check(typeof verify === "boolean", `verify must be true or false, got ${show(verify)}`);
  const fileFormat = "onnx";  // the .onnx files (ORT files would need their own reader)
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(await readFile("artifact.json"));
  } catch (e) {
    if (e instanceof Seq2SeqError) throw e;
    throw new Seq2SeqError(`artifact.json: metadata file missing or unreadable (${e.message}); `
      + "is this an export directory?");
  }
  const meta = parseMetadata(text);
  const graph = (name) => meta.graphs.find((g) => g.format === fileFormat
    && g.precision === precision && g.name === name);
  const hasFused = Boolean(graph("greedy"));
  check(greedy !== "fused" || hasFused, `no fused ${fileFormat} ${precision} greedy graph; use greedy "step"`);
  const fused = greedy === "fused" || (greedy === "auto" && hasFused
    && meta.greedyPath[`${fileFormat}/${precision}`] === "fused");
  const sessions = {};
  for (const name of ["encoder", "decoder_step"].concat(fused ? ["greedy"] : [])) {
    const g = graph(name);
    if (!g) {
      const have = [...new Set(meta.graphs.map((x) => `${x.format}/${x.precision}`))].sort();
      throw new Seq2SeqError(`no ${fileFormat} ${precision} ${name} graph in the artifact (it has: `
        + `${have.join(", ") || "none"})`);
    }
    const bytes = await readGraph(meta, g, readFile, verify);
    let session;
    try {
      session = await ort.InferenceSession.create(bytes);
    } catch (e) {
      throw new Seq2SeqError(`${g.file}: onnxruntime cannot load it: ${String(e.message).split("\n")[0]}`);
    }
    const names = [[...session.inputNames].sort(), session.outputNames];
    check(JSON.stringify(names[0]) === JSON.stringify([...g.inputs].sort())
      && g.outputs.every((o) => names[1].includes(o)),
    `${g.file}: has inputs ${JSON.stringify(session.inputNames)} and outputs `
      + `${JSON.stringify(session.outputNames)}; expected ${JSON.stringify(g.inputs)} and `
      + `${JSON.stringify(g.outputs)} (wrong file in this place?)`);
    sessions[name] = { session, inputs: g.inputs, outputs: g.outputs };
  }
  // ONNX int8 graphs quantize activations per batch: one row per call, as Python
  // does, so a text's answer never depends on what shares its batch.
  return new Seq2SeqModel(ort, meta, sessions, fused, precision === "int8");
}

// Decode options, checked as runtime.decoding.DecodeOptions.validate does.
function decodeOptions(vocab, { beamSize = 1, lengthPenalty = 1.0, maxLength = null,
  unknown = "error", tooLong = "error", ...rest } = {}) {
  const extra = Object.keys(rest);
  check(extra.length === 0, `unknown option ${extra.join(", ")}; the options are beamSize, `
    + "lengthPenalty, maxLength, unknown, tooLong");
  check(Number.isInteger(beamSize) && beamSize >= 1 && beamSize <= MAX_BEAM,
    `beamSize must be an integer from 1 to ${MAX_BEAM}, got ${show(beamSize)}`);
  check(maxLength === null || (Number.isInteger(maxLength) && maxLength >= 1
    && maxLength <= vocab.maxOutputLength),
  `maxLength must be an integer from 1 to ${vocab.maxOutputLength} (the model's maximum), got ${show(maxLength)}`);
  check(typeof lengthPenalty === "number" && Number.isFinite(lengthPenalty),
    `lengthPenalty must be a finite number, got ${show(lengthPenalty)}`);
  check(UNKNOWN_POLICIES.includes(unknown), `unknown must be one of ${UNKNOWN_POLICIES.join(", ")}, got ${show(unknown)}`);
  check(LONG_POLICIES.includes(tooLong), `tooLong must be one of ${LONG_POLICIES.join(", ")}, got ${show(tooLong)}`);
  return { beamSize, lengthPenalty, steps: maxLength ?? vocab.maxOutputLength, unknown, tooLong };
}

function finite(probs) {
  for (let i = 0; i < probs.length; i++) {
    if (!Number.isFinite(probs[i])) {
      throw new Seq2SeqError("the model produced NaN or infinite probabilities; the artifact is broken");
    }
  }
}

// Python's _log: float32 probabilities clipped to [1e-30, 1] (a float32 softmax may
// exceed 1 by an ulp, and beam search's stopping bound relies on log-probs never
// being positive), their log rounded to float32 as numpy computes it.
const logProb = (p) => Math.fround(Math.log(Math.min(Math.max(p, FLOOR), 1)));

export class Seq2SeqModel {
  constructor(ort, meta, sessions, fused, perRow) {
    Object.assign(this, { ort, meta, sessions, fused, perRow, vocab: meta.vocab,
      state: meta.state, hasAttention: meta.attention !== null });
  }

  // -- low level: the two graph calls (the backend interface) -------------------
  async run(name, feeds) {
    const { session } = this.sessions[name];
    const batch = Object.values(feeds)[0].dims[0];
    if (!this.perRow || batch === 1) return session.run(feeds);
    const rows = [];
    for (let b = 0; b < batch; b++) {
      const one = {};
      for (const [k, t] of Object.entries(feeds)) one[k] = this.rows(t, [b]);
      rows.push(await session.run(one));
    }
    const joined = {};
    for (const k of Object.keys(rows[0])) joined[k] = this.concat(rows.map((r) => r[k]));
    return joined;
  }

  // The decoder's initial state (and memory) for ids [batch, L]: an array of tensors.
  async encode(ids, batch) {
    const out = await this.run("encoder", {
      input_ids: new this.ort.Tensor("int32", ids, [batch, this.vocab.maxInputLength]) });
    return this.sessions.encoder.outputs.map((name) => out[name]);
  }

  // One step: {probs (Float32Array [batch*V]), state, next (Int32Array), weights}.
  async step(tokens, state) {
    const { inputs, outputs } = this.sessions.decoder_step;
    const feeds = { token: new this.ort.Tensor("int32", Int32Array.from(tokens), [tokens.length]) };
    inputs.slice(1).forEach((name, i) => { feeds[name] = state[i]; });
    const out = await this.run("decoder_step", feeds);
    const carried = this.state.length;
    const next = outputs.slice(1, 1 + carried).map((name) => out[name]).concat(state.slice(carried));
    return { probs: out.probs.data, state: next, next: out.next_token.data,
      weights: this.hasAttention ? out.attention.data : null };
  }

  // -- high level -----------------------------------------------------------------
  async translate(texts, options = {}) {
    const o = decodeOptions(this.vocab, options);
    const ids = this.vocab.encode(texts, o);
    if (texts.length === 0) return [];
    let results;
    if (o.beamSize > 1) {
      results = [];
      const L = this.vocab.maxInputLength;
      for (let i = 0; i < texts.length; i++) {
        const [best] = await this.beam(ids.subarray(i * L, (i + 1) * L), o.steps, o.beamSize, o.lengthPenalty);
        results.push(best ? best.ids : []);
      }
    } else if (this.fused) {
      results = await this.fusedGreedy(ids, texts.length, o.steps);
    } else {
      results = await this.greedy(ids, texts.length, o.steps);
    }
    return results.map((seq) => this.vocab.join(seq));
  }

  // Beam search's finished hypotheses for one text, best first: [{output, score}]
  // (score: sum(log p) / length ** lengthPenalty). The first is translate's answer.
  async nBest(text, options = {}) {
    const o = decodeOptions(this.vocab, options);
    const list = await this.beam(this.vocab.encode([text], o), o.steps, o.beamSize, o.lengthPenalty);
    return list.map(({ ids, score }) => ({ output: this.vocab.join(ids), score }));
  }

  // The score beam search ranks by, of each outputs[i] as the answer to texts[i]
  // (Python's Seq2SeqModel.score): teacher-forced through the step graph.
  async score(texts, outputs, { lengthPenalty = 1.0, ...options } = {}) {
    check(Array.isArray(texts) && Array.isArray(outputs) && texts.length === outputs.length,
      "score() takes two arrays of strings of the same length");
    const o = decodeOptions(this.vocab, { lengthPenalty, ...options });
    const results = [];
    for (let i = 0; i < texts.length; i++) {
      const { sum, length } = await this.teacherForce(texts[i], outputs[i], o);
      results.push(sum / length ** o.lengthPenalty);
    }
    return results;
  }

  // The attention map of output as the answer to text (attention models): the
  // input's tokens, the output's tokens and, per output token, the weights of the
  // step that produced it over the input tokens (padding left out), as Python's
  // translate(..., return_attention=True) gives them for its own output.
  async attention(text, output, options = {}) {
    check(this.hasAttention, "this model has no attention, so there are no attention weights");
    const o = decodeOptions(this.vocab, options);
    const { row, target, weights } = await this.teacherForce(text, output, o);
    const real = Array.from(row.keys()).filter((j) => row[j] !== this.vocab.padId);
    return {
      output, inputTokens: this.vocab.inputPieces(row),
      outputTokens: target.map((i) => this.vocab.targetTokens[i]),
      weights: weights.slice(0, target.length).map((w) => real.map((j) => w[j])),
    };
  }

  async teacherForce(text, output, o) {
    check(typeof output === "string", `outputs must be strings, got ${typeof output}`);
    const row = this.vocab.encode([text], o);
    const target = this.vocab.encodeTarget(output);
    const steps = this.vocab.maxOutputLength;
    check(target.length <= steps, `output ${JSON.stringify(output.slice(0, 40))} is longer than the `
      + `model's maximum of ${steps} tokens`);
    // The end token is scored and counted unless the output fills the maximum.
    const full = target.length < steps ? target.concat([this.vocab.endId]) : target;
    let state = await this.encode(row, 1);
    let token = this.vocab.startId;
    let sum = 0;
    const weights = [];
    for (const next of full) {
      const step = await this.step([token], state);
      finite(step.probs);
      sum += logProb(step.probs[next]);
      if (step.weights) weights.push(Array.from(step.weights));
      state = step.state;
      token = next;
    }
    return { row, target, sum, length: full.length, weights };
  }

  async fusedGreedy(ids, batch, steps) {
    const L = this.vocab.maxInputLength;
    const out = await this.run("greedy", { input_ids: new this.ort.Tensor("int32", ids, [batch, L]) });
    const width = out.output_ids.dims[1];
    const rows = [];
    for (let b = 0; b < batch; b++) {
      // Greedy is prefix-stable, so a shorter maxLength is the same decode cut short.
      const n = Math.min(Number(out.lengths.data[b]), steps);
      rows.push(Array.from(out.output_ids.data.subarray(b * width, b * width + n), Number));
    }
    return rows;
  }

  // Batched greedy: each row stops at its own end token.
  async greedy(ids, batch, steps) {
    const { startId, endId } = this.vocab;
    let state = await this.encode(ids, batch);
    let tokens = new Array(batch).fill(startId);
    const out = Array.from({ length: batch }, () => []);
    const active = new Array(batch).fill(true);
    let probs = null;
    for (let t = 0; t < steps && active.some(Boolean); t++) {
      const step = await this.step(tokens, state);
      ({ probs, state } = step);
      tokens = Array.from(step.next, Number);
      tokens.forEach((tok, b) => {
        if (!active[b]) return;
        if (tok === endId) active[b] = false;
        else out[b].push(tok);
      });
    }
    finite(probs);  // NaN in the state reaches every later output, so the last step tells
    return out;
  }

  // Beam search for one input, the rule of runtime/decoding.py's beam_search (the
  // standard one): extensions ranked by sum(log p) (ties: lower beam, then lower
  // token); an ending one (end token, or the last step) is finished only within the
  // first width ranks, scored sum / length ** lengthPenalty (length counts the end
  // token); the first width others live on. The search stops when no live
  // hypothesis could still score above the best finished one, so the answer is
  // that of a search run to the maximum length. Returns the finished hypotheses
  // [{ids, score}], best first (the earliest found among equals).
  async beam(ids, steps, width, lengthPenalty) {
    const { startId, endId } = this.vocab;
    let state = await this.encode(ids, 1);
    let seqs = [[]];
    let scores = [0];
    let tokens = [startId];
    let bestScore = -Infinity;
    const finished = [];
    for (let t = 0; t < steps; t++) {
      const step = await this.step(tokens, state);
      finite(step.probs);
      const V = step.probs.length / tokens.length;
      const flat = [];
      for (let r = 0; r < tokens.length; r++) {
        for (let v = 0; v < V; v++) flat.push([scores[r] + logProb(step.probs[r * V + v]), r * V + v]);
      }
      flat.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      const keep = [];
      const denominator = (t + 1) ** lengthPenalty;
      flat.slice(0, 2 * width).forEach(([score, index], rank) => {
        const row = Math.floor(index / V);
        const tok = index % V;
        if (tok === endId || t === steps - 1) {
          if (rank < width) {
            const seq = tok === endId ? seqs[row] : seqs[row].concat([tok]);
            finished.push({ ids: seq, score: score / denominator });
            bestScore = Math.max(bestScore, score / denominator);
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
      state = step.state.map((s) => this.rows(s, rows));
      seqs = keep.map(([row, tok]) => seqs[row].concat([tok]));
      scores = keep.map((k) => k[2]);
      tokens = keep.map((k) => k[1]);
    }
    // A stable sort: among equal scores the one found first stays first.
    return finished.sort((a, b) => b.score - a.score).slice(0, width);
  }

  rows(tensor, rows) {
    const per = tensor.data.length / tensor.dims[0];
    const data = new tensor.data.constructor(rows.length * per);
    rows.forEach((r, i) => data.set(tensor.data.subarray(r * per, (r + 1) * per), i * per));
    return new this.ort.Tensor(tensor.type, data, [rows.length, ...tensor.dims.slice(1)]);
  }

  concat(tensors) {
    const data = new tensors[0].data.constructor(tensors.reduce((n, t) => n + t.data.length, 0));
    let at = 0;
    for (const t of tensors) {
      data.set(t.data, at);
      at += t.data.length;
    }
    const dims = tensors[0].dims.slice();
    dims[0] = tensors.reduce((n, t) => n + t.dims[0], 0);
    return new this.ort.Tensor(tensors[0].type, data, dims);
  }
}
