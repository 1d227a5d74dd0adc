// The vocabulary and its encoding rule, as runtime/vocab.py reads and applies them:
// the same checks on the record, the same standardisation, splitting, unknown and
// too-long policies and padding. Python is the reference; web/golden.mjs replays
// its answers.
import { Seq2SeqError } from "./errors.mjs";

const VOCAB_FORMAT = "seq2seq-vocab";
const READABLE_VERSIONS = [1, 2];
const UNITS = ["char", "word"];
const STANDARDIZE = [null, "lower", "strip_punctuation", "lower_and_strip_punctuation"];
const PAD_SIDES = ["left", "right"];
export const UNKNOWN_POLICIES = ["error", "skip", "unk"];
export const LONG_POLICIES = ["error", "truncate"];
// TextVectorization's punctuation (Python's string.punctuation) and whitespace.
const PUNCTUATION = new Set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");
const WORD_SPLIT = /[ \t\n\r\f\v]+/;
// Python's str.isspace(), which decides that an input is "only whitespace"
// (JavaScript's trim() differs: it strips U+FEFF and keeps U+001C-U+001F, U+0085).
const ONLY_SPACE = /^[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;

const check = (ok, message) => {
  if (!ok) throw new Seq2SeqError(message);
};
const codePoints = (s) => Array.from(s);
const splitWords = (text) => text.split(WORD_SPLIT).filter((w) => w);
const isPositiveInt = (v) => Number.isInteger(v) && v >= 1;
const show = (v) => JSON.stringify(v);
const lowerAscii = (text) => text.replace(/[A-Z]/g, (c) => c.toLowerCase()); // as TextVectorization

// runtime/vocab.py's standardized: a built-in rule, or a recorded {lower, strip}.
function standardized(text, rule) {
  if (rule === null) return text;
  if (typeof rule === "object") {
    const strip = new Set(codePoints(rule.strip));
    if (rule.lower) text = lowerAscii(text);
    return strip.size ? codePoints(text).filter((c) => !strip.has(c)).join("") : text;
  }
  if (rule === "lower" || rule === "lower_and_strip_punctuation") text = lowerAscii(text);
  if (rule === "strip_punctuation" || rule === "lower_and_strip_punctuation") {
    text = codePoints(text).filter((c) => !PUNCTUATION.has(c)).join("");
  }
  return text;
}

export class Vocabulary {
  // d: the "vocabulary" object of artifact.json (Vocabulary.to_dict in Python).
  constructor(d) {
    check(d !== null && typeof d === "object" && !Array.isArray(d), "vocabulary must be a JSON object");
    check(d.format === VOCAB_FORMAT, `'format' must be '${VOCAB_FORMAT}', got ${show(d.format)}`);
    check(READABLE_VERSIONS.includes(d.version),
      `unsupported vocabulary version ${show(d.version)} (this runtime reads versions 1, 2)`);
    for (const key of ["input_tokens", "target_tokens", "start_token", "end_token",
      "max_input_length", "max_output_length"]) {
      check(key in d, `vocabulary field missing or of the wrong type: '${key}'`);
    }
    check(Array.isArray(d.input_tokens) && Array.isArray(d.target_tokens),
      "vocabulary field missing or of the wrong type: input_tokens and target_tokens must be lists");
    const pad = d.padding ?? {};
    check(typeof pad === "object", "vocabulary field missing or of the wrong type: 'padding'");
    Object.assign(this, {
      inputTokens: d.input_tokens, targetTokens: d.target_tokens,
      startToken: d.start_token, endToken: d.end_token,
      maxInputLength: d.max_input_length, maxOutputLength: d.max_output_length,
      padding: { side: pad.side ?? "left", token: pad.token ?? null },
      unit: d.unit ?? "char", targetUnit: d.target_unit ?? "char",
      standardize: d.standardize ?? null, unknownToken: d.unknown_token ?? null,
      targetStandardize: d.target_standardize ?? null,
    });
    this.validate();
    this.inputIndex = new Map(this.inputTokens.map((t, i) => [t, i]));
    this.targetIndex = new Map(this.targetTokens.map((t, i) => [t, i]));
    this.startId = this.targetIndex.get(this.startToken);
    this.endId = this.targetIndex.get(this.endToken);
    this.padId = this.padding.token === null ? this.inputTokens.length
      : this.inputIndex.get(this.padding.token);
    this.separator = this.targetUnit === "word" ? " " : "";
  }

  // Vocabulary.__post_init__'s rules, in its order.
  validate() {
    check(this.inputTokens.length > 0, "input_tokens is empty");
    check(this.targetTokens.length > 0, "target_tokens is empty");
    check(UNITS.includes(this.unit) && UNITS.includes(this.targetUnit),
      `unit and target_unit must be one of char, word, got ${show(this.unit)}, ${show(this.targetUnit)}`);
    for (const [name, rule] of [["standardize", this.standardize], ["target_standardize", this.targetStandardize]]) {
      const recorded = rule !== null && typeof rule === "object" && !Array.isArray(rule)
        && Object.keys(rule).sort().join() === "lower,strip" && typeof rule.lower === "boolean"
        && typeof rule.strip === "string";
      check(STANDARDIZE.includes(rule) || recorded,
        `${name} must be one of ${STANDARDIZE.map(show).join(", ")} or {"lower": true|false, `
        + `"strip": "characters"}, got ${show(rule)}`);
    }
    for (const [name, unit] of [["input_tokens", this.unit], ["target_tokens", this.targetUnit]]) {
      const tokens = this[name === "input_tokens" ? "inputTokens" : "targetTokens"];
      // "" at id 0 is the reserved padding id an Embedding(mask_zero=True) needs.
      const ok = tokens.every((t, i) => typeof t === "string" && (unit === "char"
        ? codePoints(t).length === 1 || (t === "" && i === 0) || t === this.unknownToken
        : (t === "" && i === 0) || (t !== "" && splitWords(t).length === 1 && splitWords(t)[0] === t)));
      check(ok, `${name} must be ${unit === "char" ? "single characters" : "words without whitespace"} `
        + "(and \"\" only at id 0, the reserved padding id)");
      check(new Set(tokens).size === tokens.length, `${name} has duplicates`);
    }
    check(this.unknownToken === null || this.inputTokens.includes(this.unknownToken),
      `unknown token ${show(this.unknownToken)} is not in input_tokens`);
    check(this.targetTokens.includes(this.startToken), `start token ${show(this.startToken)} is not in target_tokens`);
    check(this.targetTokens.includes(this.endToken), `end token ${show(this.endToken)} is not in target_tokens`);
    check(this.startToken !== this.endToken, "start and end tokens are the same");
    for (const [name, v] of [["max_input_length", this.maxInputLength], ["max_output_length", this.maxOutputLength]]) {
      check(isPositiveInt(v), `${name} must be a positive integer, got ${show(v)}`);
    }
    check(PAD_SIDES.includes(this.padding.side), `padding.side must be one of left, right, got ${show(this.padding.side)}`);
    check(this.padding.token === null || this.inputTokens.includes(this.padding.token),
      `padding token ${show(this.padding.token)} is not in input_tokens`);
  }

  // The input's units after standardisation: characters (code points), or words.
  split(text) {
    text = standardized(text, this.standardize);
    return this.unit === "word" ? splitWords(text) : codePoints(text);
  }

  // Int32Array [texts.length * maxInputLength], row-major, padded by the recorded rule.
  encode(texts, { unknown = "error", tooLong = "error" } = {}) {
    check(UNKNOWN_POLICIES.includes(unknown), `unknown must be one of ${UNKNOWN_POLICIES.join(", ")}, got ${show(unknown)}`);
    check(unknown !== "unk" || this.unknownToken !== null,
      "unknown 'unk' needs a vocabulary with an unknown_token");
    check(LONG_POLICIES.includes(tooLong), `tooLong must be one of ${LONG_POLICIES.join(", ")}, got ${show(tooLong)}`);
    check(Array.isArray(texts), `expected an array of strings, got ${typeof texts}`);
    const L = this.maxInputLength;
    const out = new Int32Array(texts.length * L).fill(this.padId);
    texts.forEach((text, row) => {
      const ids = this.encodeOne(text, row, unknown, tooLong);
      out.set(ids, row * L + (this.padding.side === "left" ? L - ids.length : 0));
    });
    return out;
  }

  encodeOne(text, row, unknown, tooLong) {
    const units = this.unit === "char" ? "characters" : "words";
    check(typeof text === "string", `input ${row} is ${text === null ? "null" : typeof text}, not a string`);
    check(!ONLY_SPACE.test(text), `input ${row} is empty${text ? " (only whitespace)" : ""}`);
    const pieces = this.split(text);
    let ids = pieces.map((p) => (p !== "" && this.inputIndex.has(p) ? this.inputIndex.get(p) : -1));
    if (ids.includes(-1)) {
      if (unknown === "error") {
        const bad = [...new Set(pieces.filter((p, i) => ids[i] < 0))].sort(byCodePoint);
        throw new Seq2SeqError(`input ${row} has ${units} outside the vocabulary: `
          + bad.slice(0, 20).map(pyRepr).join(", "));
      }
      const fill = unknown === "unk" ? this.inputIndex.get(this.unknownToken) : -1;
      ids = ids.map((i) => (i >= 0 ? i : fill)).filter((i) => i >= 0);
    }
    check(ids.length > 0, `input ${row} is empty after dropping unknown ${units}`);
    if (ids.length > this.maxInputLength) {
      check(tooLong !== "error", `input ${row} has ${ids.length} ${units}; the model takes at most ${this.maxInputLength}`);
      ids = ids.slice(0, this.maxInputLength);
    }
    return ids;
  }

  // The input tokens a padded row holds (padding left out), as the encoder read them.
  inputPieces(row) {
    return Array.from(row).filter((i) => i !== this.padId).map((i) => this.inputTokens[i]);
  }

  // Ids of an output text (characters, or space-separated words), without the end token.
  encodeTarget(text) {
    text = standardized(text, this.targetStandardize);
    const pieces = this.targetUnit === "word" ? splitWords(text) : codePoints(text);
    const bad = [...new Set(pieces.filter((p) => !this.targetIndex.has(p)))].sort(byCodePoint);
    check(bad.length === 0, `target has tokens outside the vocabulary: ${bad.map(pyRepr).join(", ")}`);
    return pieces.map((p) => this.targetIndex.get(p));
  }

  join(ids) {
    return ids.map((i) => this.targetTokens[i]).join(this.separator);
  }
}

// Python's sorted() order on strings (code points, not UTF-16 units).
function byCodePoint(a, b) {
  const x = codePoints(a).map((c) => c.codePointAt(0));
  const y = codePoints(b).map((c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

// Python's repr() of a string, for messages that name a token as Python does.
function pyRepr(s) {
  const quote = s.includes("'") && !s.includes("\"") ? "\"" : "'";
  const named = { "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };
  const body = codePoints(s).map((c) => {
    if (named[c]) return named[c];
    if (c === quote) return `\\${c}`;
    const n = c.codePointAt(0);
    if (n < 0x20 || n === 0x7f) return `\\x${n.toString(16).padStart(2, "0")}`;
    return c;
  }).join("");
  return `${quote}${body}${quote}`;
}
