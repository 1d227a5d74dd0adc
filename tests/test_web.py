"""The JavaScript runtime (web/seq2seq.mjs): in Node with onnxruntime-node, and in
headless Chromium with onnxruntime-web (WASM) through the demo page, it decodes
exactly as the Python runtime does."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import runtime
from conftest import ROOT, need_node, replay_in_node

WEB = ROOT / "web"
MODULES = WEB / "node_modules"


@pytest.fixture(scope="module")
def texts(tiny_artifact, heldout) -> list[str]:
    """120 held-out inputs: the tiny model's 40 and 80 more dates it never trained
    on (the built-in generator with another seed, minus its training set)."""
    from conftest import TINY_TRAIN
    from export.pipeline import _encodable
    from train.data import date_pairs

    vocab = runtime.load_config(tiny_artifact).vocabulary
    samples = int(TINY_TRAIN[TINY_TRAIN.index("--samples") + 1])
    seed = int(TINY_TRAIN[TINY_TRAIN.index("--seed") + 1])
    seen = {a for a, _ in date_pairs(samples, seed=seed)}
    fresh = [a for a, _ in date_pairs(600, seed=77) if a not in seen and _encodable(vocab, a)]
    assert len(fresh) >= 80
    return heldout + fresh[:120 - len(heldout)]


def _need_node():
    need_node()


def _node(*args: str, stdin: str | None = None, timeout: int = 120):
    return subprocess.run(["node", str(WEB / "node_decode.mjs"), *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("greedy, beam", [("step", 1), ("fused", 1), ("step", 3)])
def test_node_decodes_as_python(tiny_artifact, texts, tmp_path, greedy, beam):
    _need_node()
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(texts) + "\n", encoding="utf-8")
    done = _node(str(tiny_artifact), str(lines), "--greedy", greedy, "--beam", str(beam),
                 "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    want = runtime.load(tiny_artifact, greedy=greedy).translate(texts, beam_size=beam)
    assert [json.loads(ln) for ln in done.stdout.splitlines()] == [
        {"input": t, "output": w} for t, w in zip(texts, want)]


def test_node_errors_are_clear(tiny_artifact, tmp_path):
    _need_node()
    (tmp_path / "bad.txt").write_text("abc€\n", encoding="utf-8")
    done = _node(str(tiny_artifact), str(tmp_path / "bad.txt"))
    assert done.returncode == 2 and "outside the vocabulary: '€'" in done.stderr
    assert "line 1 of" in done.stderr
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    data = bytearray((art / "decoder_step.onnx").read_bytes())
    data[-10] ^= 0xFF
    (art / "decoder_step.onnx").write_bytes(bytes(data))
    (tmp_path / "ok.txt").write_text("1 mai 2000\n", encoding="utf-8")
    done = _node(str(art), str(tmp_path / "ok.txt"))
    assert done.returncode == 2 and "decoder_step.onnx: sha256 differs" in done.stderr
    # artifact.json edited after export (hashes intact): the digest inside each model
    # file, recomputed in JavaScript as Python computes it, refuses it.
    edited = tmp_path / "edited"
    shutil.copytree(tiny_artifact, edited)
    meta = json.loads((edited / "artifact.json").read_text(encoding="utf-8"))
    meta["vocabulary"]["target_tokens"] = meta["vocabulary"]["target_tokens"][::-1]
    (edited / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
    done = _node(str(edited), str(tmp_path / "ok.txt"))
    assert done.returncode == 2 and "does not match this model file" in done.stderr


REPLAY = ("const done = arguments[arguments.length - 1];"
          "window.seq2seqReplay(arguments[0], arguments[1])"
          ".then(done, (e) => done({failures: ['error: ' + e.message], strings: 0}));")


def test_browser_demo_page_decodes_the_family_as_python(tiny_artifact, texts, family, learned,
                                                        tmp_path):
    """Headless Chromium, the demo page served from 127.0.0.1, onnxruntime-web (WASM):
    - the page's runtime decodes 120 inputs as Python does (greedy, and beam-3 on 20);
    - it replays the golden cases of the character LSTM, a word-level model (with
      standardisation and [UNK]) and an attention model (maps included);
    - typing shows the output and its time, an unknown character an error;
    - on the attention model with beam 4 chosen, the n-best list is Python's beam
      answer first and the attention map is drawn (the screenshot in the README);
    - an artifact opened from the user's files (the file picker) decodes too."""
    from benchmarks import browser as web
    from checks.golden import write_cases

    reason = web.missing()
    if reason:
        pytest.skip(reason)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    words_run, _, words_texts = family("word-inputs")
    attention_art, attention_pairs = learned("attention")
    others = {"words": words_run / "artifact", "attention": attention_art}
    cases = {"artifact": write_cases(tiny_artifact, texts[:40], tmp_path / "tiny.json"),
             "words": write_cases(others["words"], words_texts, tmp_path / "words.json"),
             "attention": write_cases(attention_art, [a for a, _ in attention_pairs[:30]],
                                      tmp_path / "attention.json")}
    python = runtime.load(tiny_artifact, greedy="step")  # the page follows greedy_path: auto
    with web.site(tiny_artifact, others) as url:
        browser = web.chromium(900, 1000)
        try:
            web.open_page(browser, url)
            assert browser.execute_async_script(web.TRANSLATE, texts, {}) == \
                python.translate(texts)
            assert browser.execute_async_script(web.TRANSLATE, texts[:20], {"beamSize": 3}) == \
                python.translate(texts[:20], beam_size=3)
            for base, want in cases.items():
                result = browser.execute_async_script(REPLAY, f"{base}/", want)
                assert result["failures"] == [] and result["strings"] > 100, (base, result)
            box = browser.find_element(By.ID, "text")
            box.send_keys(texts[0])
            want = python.translate([texts[0]])[0]
            WebDriverWait(browser, 30).until(
                lambda b: b.find_element(By.ID, "output").text == want)
            assert browser.find_element(By.ID, "timing").text.endswith(" ms")
            box.clear()
            box.send_keys("abc€")
            WebDriverWait(browser, 30).until(
                lambda b: "outside the vocabulary" in b.find_element(By.ID, "output").text)

            _open_by_url(browser, "attention/")
            Select(browser.find_element(By.ID, "beam")).select_by_value("4")
            text = attention_pairs[0][0]
            beam = runtime.load(attention_art, greedy="step").translate([text], beam_size=4)[0]
            box = browser.find_element(By.ID, "text")
            box.clear()
            box.send_keys(text)
            WebDriverWait(browser, 30).until(
                lambda b: b.find_element(By.ID, "output").text == beam)
            items = browser.find_elements(By.CSS_SELECTOR, "#nbest li")
            assert 1 < len(items) <= 4 and items[0].text.startswith(beam)
            canvas = browser.find_element(By.ID, "attention")
            assert int(canvas.get_attribute("width")) > 100
            assert int(canvas.get_attribute("height")) > 18 * len(beam)
            shot = tmp_path / "demo-page.png"
            browser.save_screenshot(str(shot))
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            keep = os.environ.get("SEQ2SEQ_KEEP_SCREENSHOT")
            if keep:  # how the README's picture was made
                shutil.copy(shot, keep)

            files = sorted(str(f) for f in others["words"].iterdir()
                           if f.suffix in (".json", ".onnx"))
            browser.find_element(By.ID, "files").send_keys("\n".join(files))
            WebDriverWait(browser, 60).until(
                lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
                and "chosen files" in b.find_element(By.ID, "status").text)
            Select(browser.find_element(By.ID, "beam")).select_by_value("1")
            box = browser.find_element(By.ID, "text")
            box.clear()
            box.send_keys(words_texts[0])
            want = runtime.load(others["words"], greedy="step").translate([words_texts[0]])[0]
            WebDriverWait(browser, 30).until(
                lambda b: b.find_element(By.ID, "output").text == want)
        finally:
            browser.quit()


def _open_by_url(browser, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    field = browser.find_element(By.ID, "artifact")
    field.clear()
    field.send_keys(base)
    browser.execute_script("document.getElementById('artifact')"
                           ".dispatchEvent(new Event('change'))")
    WebDriverWait(browser, 60).until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes"
        and base in b.find_element(By.ID, "status").text)


@pytest.mark.parametrize("kind", ["plain", "attention"])
def test_node_beam_search_equals_python_on_learned_models(learned, kind, tmp_path):
    """On models that learned their task (where a wrong beam rule shows: it once cut
    answers short in both runtimes), Node's greedy and beam 2, 4 and 8 give the
    Python runtime's strings on all 300 held-out inputs, and beam's exact match is
    not below greedy's."""
    _need_node()
    art, pairs = learned(kind)
    texts, truth = [a for a, _ in pairs], [b for _, b in pairs]
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(texts) + "\n", encoding="utf-8")
    python = runtime.load(art, greedy="step")
    hits = {}
    for beam in (1, 2, 4, 8):
        done = _node(str(art), str(lines), "--greedy", "step", "--beam", str(beam),
                     timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        got = done.stdout.splitlines()
        assert got == python.translate(texts, beam_size=beam), beam
        hits[beam] = sum(g == t for g, t in zip(got, truth))
    assert all(hits[b] >= hits[1] for b in (2, 4, 8)), hits


def _edit_meta(change):
    def apply(art, outside):
        meta = json.loads((art / "artifact.json").read_text(encoding="utf-8"))
        change(meta, outside)
        (art / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
    return apply


def _graph_file(name):
    def change(meta, outside):
        for g in meta["graphs"]:
            if g["name"] == "encoder" and g["format"] == "onnx" and g["precision"] == "fp32":
                g["file"] = name.replace("OUTSIDE", str(outside))
    return change


def _unlink(art, outside):
    (art / "decoder_step.onnx").unlink()


def _symlink(art, outside):
    (art / "encoder.onnx").unlink()
    (art / "encoder.onnx").symlink_to(outside / "encoder.onnx")


# The table of hostile inputs, and more: (edit of a copy of the artifact,
# options, stdin), each to get the same verdict from Node as from `python -m runtime`.
HOSTILE = {
    "file-outside-the-artifact": (_edit_meta(_graph_file("../../other/encoder.onnx")), [], None),
    "file-traversing-to-etc": (_edit_meta(_graph_file("../../../../etc/hostname")), [], None),
    "absolute-file": (_edit_meta(_graph_file("OUTSIDE/encoder.onnx")), [], None),
    "missing-model-file": (_unlink, [], None),
    "symlinked-model-file": (_symlink, [], None),
    "no-vocabulary": (_edit_meta(lambda m, o: m.pop("vocabulary")), [], None),
    "no-graphs": (_edit_meta(lambda m, o: m.pop("graphs")), [], None),
    "unknown-token-not-in-vocabulary": (
        _edit_meta(lambda m, o: m["vocabulary"].update(unknown_token="unk")), [], None),
    "misspelt-standardisation": (
        _edit_meta(lambda m, o: m["vocabulary"].update(standardize="lowercase")), [], None),
    "parity-not-passed": (_edit_meta(lambda m, o: m["parity"].update(passed=False)), [], None),
    "blank-line-in-the-middle": (None, [], "TEXT0\n\nTEXT1\n"),
    "crlf-lines": (None, [], "TEXT0\r\nTEXT1\r\n"),
    "beam-0": (None, ["--beam", "0"], None),
    "beam-negative": (None, ["--beam", "-1"], None),
    "beam-not-a-number": (None, ["--beam", "abc"], None),
    "beam-300": (None, ["--beam", "300"], None),
    "greedy-bogus": (None, ["--greedy", "bogus"], None),
    "unk-without-an-unknown-token": (None, ["--unk"], "TEXT0§\n"),
    "length-penalty-not-a-number": (None, ["--beam", "2", "--length-penalty", "x"], None),
    "max-length-0": (None, ["--max-length", "0"], None),
    "unknown-option": (None, ["--bogus"], None),
}


def _python_cli(*argv: str, stdin: str) -> subprocess.CompletedProcess:
    """`python -m runtime ARGV < stdin`, its main() run in this process (the same code
    as the command, without a second start-up of Python and its imports)."""
    import contextlib
    import io
    import sys

    from runtime.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as e:  # argparse's usage errors
                code = e.code
    finally:
        sys.stdin = saved
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("case", list(HOSTILE))
def test_node_cli_gives_python_cli_verdicts_on_hostile_input(tiny_artifact, heldout, tmp_path,
                                                            case):
    """Every row of the table: Node accepts exactly what `python -m runtime` accepts
    (then with the same outputs), and refuses the rest with exit 2 and a one-line
    error, never a stack trace; a file outside the artifact is never read."""
    _need_node()
    edit, options, stdin = HOSTILE[case]
    art = tmp_path / "a" / "artifact"
    shutil.copytree(tiny_artifact, art)
    outside = tmp_path / "other"
    outside.mkdir()
    shutil.copy(tiny_artifact / "encoder.onnx", outside / "encoder.onnx")  # readable, valid
    if edit:
        edit(art, outside)
    stdin = (stdin or "TEXT0\nTEXT1\n").replace("TEXT0", heldout[0]).replace("TEXT1", heldout[1])
    python = _python_cli(str(art), *options, stdin=stdin)
    node = _node(str(art), *options, stdin=stdin)
    assert (node.returncode == 0) == (python.returncode == 0), (python.stderr, node.stderr)
    if python.returncode == 0:
        assert node.stdout == python.stdout
        return
    assert python.returncode == node.returncode == 2, (python.stderr, node.stderr)
    assert "Traceback" not in python.stderr
    assert node.stderr.startswith(("error: ", "usage: ")) and "    at " not in node.stderr, \
        node.stderr
    assert "bytes" not in node.stderr  # it never opened a file it should not


def test_node_refuses_the_tflite_only_variants_by_name(tiny_artifact):
    """fp16, int8-io and int16x8 are TFLite files; the JavaScript runtime runs the ONNX ones,
    and says so rather than failing on a missing graph."""
    _need_node()
    for precision in ("int8-io", "int16x8", "fp16"):
        done = _node(str(tiny_artifact), "--precision", precision, stdin="x\n")
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and "is a TFLite variant" in done.stderr


def test_node_help_names_every_option():
    _need_node()
    done = _node("--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: node web/node_decode.mjs")
    for option in ("--greedy", "--precision", "--beam", "--length-penalty", "--max-length",
                   "--n-best", "--skip-unknown", "--unk", "--truncate", "--json",
                   "--no-verify"):
        assert option in done.stdout


def test_node_n_best_lists_scores_python_gives(tiny_artifact, heldout, tmp_path):
    """`--n-best` prints beam search's finished outputs best first, each with the
    score Python's Seq2SeqModel.score gives that output, the first being the beam
    answer."""
    _need_node()
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(heldout[:8]) + "\n", encoding="utf-8")
    done = _node(str(tiny_artifact), str(lines), "--beam", "4", "--n-best",
                 "--length-penalty", "0.5")
    assert done.returncode == 0, done.stderr
    python = runtime.load(tiny_artifact, greedy="step")
    answers = python.translate(heldout[:8], beam_size=4, length_penalty=0.5)
    for text, answer, line in zip(heldout[:8], answers, done.stdout.splitlines()):
        row = json.loads(line)
        outs = [b["output"] for b in row["n_best"]]
        scores = [b["score"] for b in row["n_best"]]
        assert row["input"] == text and outs[0] == answer and 1 <= len(outs) <= 4
        assert scores == sorted(scores, reverse=True) and len(set(outs)) == len(outs)
        want = python.score([text] * len(outs), outs, length_penalty=0.5)
        assert max(abs(a - b) for a, b in zip(scores, want)) < 1e-5


def test_golden_cases_of_the_int8_and_plain_artifacts_replay_in_node(quantized_artifact, heldout,
                                                                    tmp_path):
    """The left-padded character LSTM, fp32, int8 (which Python runs a row at a
    time: so must JavaScript, or batched answers change) and the static int8-full
    (batched as it is)."""
    summary = replay_in_node(quantized_artifact, heldout, tmp_path / "cases.json")
    cases = json.loads((tmp_path / "cases.json").read_text(encoding="utf-8"))
    assert {c["precision"] for c in cases["decode"]} == {"fp32", "int8", "int8-full"}, summary


def test_version_1_artifact_replays_in_node(tiny_artifact, heldout, tmp_path):
    """A version-1 artifact (a one-layer LSTM whose state is h and c of latent_dim,
    no contract digest inside its files), as the first exports wrote it: made from
    the tiny one by renaming its tensors. Both runtimes still read it, and agree."""
    import hashlib

    import onnx

    art = tmp_path / "v1"
    art.mkdir()
    meta = json.loads((tiny_artifact / "artifact.json").read_text(encoding="utf-8"))
    rename = {"h0": "h", "c0": "c", "h0_out": "h_out", "c0_out": "c_out"}
    graphs = []
    for g in meta["graphs"]:
        if (g["format"], g["precision"]) != ("onnx", "fp32") or g["name"] == "greedy":
            continue
        model = onnx.load(str(tiny_artifact / g["file"]))
        for node in model.graph.node:
            node.input[:] = [rename.get(n, n) for n in node.input]
            node.output[:] = [rename.get(n, n) for n in node.output]
        for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
            value.name = rename.get(value.name, value.name)
        del model.metadata_props[:]
        data = model.SerializeToString()
        (art / g["file"]).write_bytes(data)
        graphs.append({**g, "inputs": [rename.get(n, n) for n in g["inputs"]],
                       "outputs": [rename.get(n, n) for n in g["outputs"]],
                       "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    (art / "artifact.json").write_text(json.dumps({
        "format": "seq2seq-artifact", "version": 1, "vocabulary": meta["vocabulary"],
        "latent_dim": meta["state"][0]["units"], "graphs": graphs,
        "parity": meta["parity"]}), encoding="utf-8")
    assert runtime.load(art).translate(heldout[:20]) == \
        runtime.load(tiny_artifact, greedy="step").translate(heldout[:20])
    replay_in_node(art, heldout, tmp_path / "cases.json")


def _vocab_verdicts_in_node(records: list, texts: list) -> dict:
    """Node's verdict on each vocabulary record (accepted, or refused), and the ids
    (or a refusal) of each text under the first three records, unknown "skip" and "error"."""
    script = (
        "import { Vocabulary } from './vocab.mjs';"
        "import { readFileSync } from 'node:fs';"
        "const { records, texts } = JSON.parse(readFileSync(0, 'utf8'));"
        "const verdict = (f) => { try { return f(); } catch (e) {"
        "  if (e.name !== 'Seq2SeqError') throw e; return 'refused'; } };"
        "const vocabs = records.slice(0, 3).map((r) => new Vocabulary(r));"
        "console.log(JSON.stringify({"
        " records: records.map((r) => verdict(() => (new Vocabulary(r), 'accepted'))),"
        " texts: texts.map((t) => vocabs.flatMap((v) => ['error', 'skip'].map((u) =>"
        "   verdict(() => Array.from(v.encode([t], { unknown: u }))))))}));")
    done = subprocess.run(["node", "--input-type=module", "-e", script], cwd=WEB,
                          input=json.dumps({"records": records, "texts": texts}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_vocabulary_rules_match_python(family):
    """vocab.mjs accepts exactly the vocabulary records runtime/vocab.py accepts, and
    encodes (or refuses) awkward texts to the same ids: case, ASCII punctuation,
    Unicode whitespace Python's str.isspace() knows and JavaScript's trim() does
    not, characters outside the Basic Multilingual Plane, combining marks."""
    from runtime.vocab import Vocabulary

    _need_node()
    run, _, _ = family("word-inputs")
    words = json.loads((run / "artifact" / "artifact.json").read_text())["vocabulary"]
    chars = {**words, "unit": "char", "standardize": None, "unknown_token": None,
             "padding": {"side": "left", "token": None},
             "input_tokens": list("abcdeé😀 \u3000\ufeff\x1c-.,"), "max_input_length": 12}

    def edit(base, **change):
        return {**base, **change}

    # The third: a custom rule export.from_text_vectorization records (keras.io's kind).
    records = [words, chars, edit(words, standardize={"lower": True, "strip": "!?,.¿¡'"}),
               edit(chars, standardize="lower_and_strip_punctuation"),
               edit(chars, standardize={"lower": "yes", "strip": ""}),
               edit(chars, standardize={"lower": True}),
               edit(chars, target_standardize={"lower": True, "strip": "x"}),
               edit(chars, target_standardize="upper"),
               edit(chars, format="seq2seq-vocabulary"), edit(chars, version=3),
               edit(chars, input_tokens=[]), edit(chars, input_tokens=["ab", "c"]),
               edit(chars, input_tokens=["a", "", "b"]), edit(chars, input_tokens=["", "a"]),
               edit(chars, input_tokens=["a", "a"]), edit(chars, input_tokens=["a", 1]),
               edit(chars, unit="byte"), edit(chars, target_unit="word"),
               edit(chars, standardize="lowercase"), edit(chars, unknown_token="zz"),
               edit(chars, start_token="nope"), edit(chars, end_token=chars["start_token"]),
               edit(chars, max_input_length=0), edit(chars, max_input_length=True),
               edit(chars, max_input_length="12"), edit(chars, max_output_length=-1),
               edit(chars, padding={"side": "middle", "token": None}),
               edit(chars, padding={"side": "right", "token": "q"}),
               edit(chars, padding={"side": "right", "token": " "}),
               edit(words, input_tokens=["", "[UNK]", "two words"]),
               edit(words, unknown_token=None),
               {k: v for k, v in chars.items() if k != "end_token"}]
    python = []
    for r in records:
        try:
            Vocabulary.from_dict(r)
            python.append("accepted")
        except runtime.Seq2SeqError:
            python.append("refused")
    assert "accepted" in python and "refused" in python
    vocabs = [Vocabulary.from_dict(r) for r in records[:3]]
    vocab = vocabs[0]
    texts = ["¿Hello, World!", "HELLO   world\t", "it's [UNK]!", "\u3000", "\x1c\x1d", "\ufeff", "a\u00a0b",
             "ÉCOLE école", "x😀y", "e\u0301", "[UNK]", "it's-a test.", "   ", ""]
    texts += [" ".join(vocab.input_tokens[2:9]), vocab.input_tokens[3].upper()]
    texts += ["abc", "a😀b", "\ufeff", "\x1c", " \x1c", "\u3000a", "e\u0301", "ABC", "a.b,c"]
    want = []
    for t in texts:
        row = []
        for v in vocabs:
            for unknown in ("error", "skip"):
                try:
                    row.append(v.encode_inputs([t], unknown).ravel().tolist())
                except runtime.Seq2SeqError:
                    row.append("refused")
        want.append(row)
    got = _vocab_verdicts_in_node(records, texts)
    assert got["records"] == python
    assert got["texts"] == want
