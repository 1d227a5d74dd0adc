// Golden cases (written by `python -m checks.golden write`) replayed on the
// JavaScript runtime, in Node (web/golden.mjs) or in the browser page. open(precision,
// greedy) loads the artifact; every difference from Python's answers is returned,
// described, so a caller fails on any.
import { Seq2SeqError } from "./errors.mjs";

const OPTION_NAMES = { beam_size: "beamSize", length_penalty: "lengthPenalty",
  max_length: "maxLength", unknown: "unknown", too_long: "tooLong" };
const SCORE_ATOL = 1e-5;  // checks/golden.py's tolerances
const WEIGHT_ATOL = 1e-5;

const jsOptions = (options) => Object.fromEntries(
  Object.entries(options).map(([k, v]) => [OPTION_NAMES[k] ?? k, v]));

async function sha256Hex(text) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// sha256 of the outputs as Python's json.dumps(ensure_ascii=False, separators=(",", ":")).
export const digest = (outputs) => sha256Hex(JSON.stringify(outputs));

export async function replay(cases, open, metadataBytes) {
  const failures = [];
  const fail = (what) => failures.push(what);
  if (metadataBytes && await sha256Hex(new TextDecoder().decode(metadataBytes)) !== cases.artifact_sha256) {
    return { failures: ["artifact.json is not the one the cases were written for"], strings: 0 };
  }
  const models = new Map();
  const model = async (precision, greedy) => {
    const key = `${precision}/${greedy}`;
    if (!models.has(key)) models.set(key, await open(precision, greedy));
    return models.get(key);
  };
  const first = await model("fp32", "step");
  for (const c of cases.encode) {
    const ids = first.vocab.encode(c.texts, { unknown: c.unknown, tooLong: c.too_long });
    if (JSON.stringify(Array.from(ids)) !== JSON.stringify(c.ids.flat())) {
      fail(`encode ${c.unknown}/${c.too_long}: token ids differ from Python's`);
    }
  }
  let strings = 0;
  for (const c of cases.decode) {
    const m = await model(c.precision, c.greedy);
    const got = await m.translate(c.texts, jsOptions(c.options));
    strings += got.length;
    if (await digest(got) !== c.sha256) {
      const bad = got.map((g, i) => [i, g, c.outputs[i]]).filter(([, g, w]) => g !== w);
      fail(`decode ${c.precision}/${c.greedy} ${JSON.stringify(c.options)}: ${bad.length} of `
        + `${got.length} differ, first: input ${JSON.stringify(c.texts[bad[0]?.[0]])} gave `
        + `${JSON.stringify(bad[0]?.[1])}, Python ${JSON.stringify(bad[0]?.[2])}`);
    }
  }
  for (const c of cases.scores) {
    const m = await model(c.precision, "step");
    const got = await m.score(c.texts, c.outputs, { lengthPenalty: c.length_penalty });
    const worst = Math.max(...got.map((s, i) => Math.abs(s - c.scores[i])));
    if (!(worst <= SCORE_ATOL)) fail(`scores ${c.precision} beam ${c.beam_size}: off by ${worst}`);
    // The n-best list's head is the beam answer, with the score Python gives it.
    for (const [i, text] of c.texts.entries()) {
      const [best] = await m.nBest(text, { beamSize: c.beam_size, lengthPenalty: c.length_penalty });
      if (best.output !== c.outputs[i] || !(Math.abs(best.score - c.scores[i]) <= SCORE_ATOL)) {
        fail(`n-best ${c.precision} beam ${c.beam_size} of ${JSON.stringify(text)}: head `
          + `${JSON.stringify(best)}, Python ${JSON.stringify(c.outputs[i])} at ${c.scores[i]}`);
      }
    }
  }
  for (const c of cases.attention) {
    const m = await model(c.precision, "step");
    for (const [i, want] of c.maps.entries()) {
      const got = await m.attention(c.texts[i], want.output);
      const same = JSON.stringify([got.inputTokens, got.outputTokens])
        === JSON.stringify([want.input_tokens, want.output_tokens]);
      const worst = Math.max(0, ...want.weights.flatMap((row, t) => row.map((w, j) => Math.abs(w - (got.weights[t]?.[j] ?? Infinity)))));
      if (!same || !(worst <= WEIGHT_ATOL) || got.weights.length !== want.weights.length) {
        fail(`attention of ${JSON.stringify(c.texts[i])}: tokens ${same ? "equal" : "differ"}, weights off by ${worst}`);
      }
    }
  }
  for (const c of cases.refusals) {
    try {
      await first.translate(c.texts, jsOptions(c.options));
      fail(`accepted what Python refuses (${c.python}): ${JSON.stringify(c.texts)} ${JSON.stringify(c.options)}`);
    } catch (e) {
      if (!(e instanceof Seq2SeqError) || !e.message.toLowerCase().includes(c.phrase)) {
        fail(`refused ${JSON.stringify(c.texts)} ${JSON.stringify(c.options)} with ${e.name}: `
          + `${e.message} (Python: ${c.python})`);
      }
    }
  }
  return { failures, strings };
}
