"""The JavaScript runtime (web/seq2seq.mjs): in Node with onnxruntime-node, and in
headless Chromium with onnxruntime-web (WASM) through the demo page, it decodes
exactly as the Python runtime does."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import runtime
from conftest import ROOT

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
    if shutil.which("node") is None:
        pytest.skip("Node.js not found (the JavaScript runtime's Node test needs it)")
    if not (MODULES / "onnxruntime-node").is_dir():
        pytest.skip("web/node_modules missing: run `make web-setup` (npm install --ignore-scripts)")


@pytest.mark.parametrize("greedy, beam", [("step", 1), ("fused", 1), ("step", 3)])
def test_node_decodes_as_python(tiny_artifact, texts, tmp_path, greedy, beam):
    _need_node()
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(texts) + "\n", encoding="utf-8")
    done = subprocess.run(["node", str(WEB / "node_decode.mjs"), str(tiny_artifact), str(lines),
                           "--greedy", greedy, "--beam", str(beam)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    want = runtime.load(tiny_artifact, greedy=greedy).translate(texts, beam_size=beam)
    assert json.loads(done.stdout) == want


def test_node_errors_are_clear(tiny_artifact, tmp_path):
    _need_node()
    (tmp_path / "bad.txt").write_text("abc€\n", encoding="utf-8")
    done = subprocess.run(["node", str(WEB / "node_decode.mjs"), str(tiny_artifact),
                           str(tmp_path / "bad.txt")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "outside the vocabulary: '€'" in done.stderr
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    data = bytearray((art / "decoder_step.onnx").read_bytes())
    data[-10] ^= 0xFF
    (art / "decoder_step.onnx").write_bytes(bytes(data))
    (tmp_path / "ok.txt").write_text("1 mai 2000\n", encoding="utf-8")
    done = subprocess.run(["node", str(WEB / "node_decode.mjs"), str(art),
                           str(tmp_path / "ok.txt")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "decoder_step.onnx: sha256 differs" in done.stderr
    # artifact.json edited after export (hashes intact): the digest inside each model
    # file, recomputed in JavaScript as Python computes it, refuses it.
    edited = tmp_path / "edited"
    shutil.copytree(tiny_artifact, edited)
    meta = json.loads((edited / "artifact.json").read_text(encoding="utf-8"))
    meta["vocabulary"]["target_tokens"] = meta["vocabulary"]["target_tokens"][::-1]
    (edited / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
    done = subprocess.run(["node", str(WEB / "node_decode.mjs"), str(edited),
                           str(tmp_path / "ok.txt")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "does not match this model file" in done.stderr


def test_browser_demo_page_decodes_as_python(tiny_artifact, texts, tmp_path):
    """Headless Chromium, the demo page served from 127.0.0.1: the page's runtime
    decodes 120 inputs as Python does (greedy, and beam-3 on 20); typing shows the
    output and its time; an unknown character shows an error. A screenshot is kept."""
    from benchmarks import browser as web

    reason = web.missing()
    if reason:
        pytest.skip(reason)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    python = runtime.load(tiny_artifact, greedy="step")  # the page follows greedy_path: auto
    with web.site(tiny_artifact) as url:
        browser = web.chromium()
        try:
            web.open_page(browser, url)
            assert browser.execute_async_script(web.TRANSLATE, texts, {}) == \
                python.translate(texts)
            assert browser.execute_async_script(web.TRANSLATE, texts[:20], {"beamSize": 3}) == \
                python.translate(texts[:20], beam_size=3)
            box = browser.find_element(By.ID, "text")
            box.send_keys(texts[0])
            want = python.translate([texts[0]])[0]
            WebDriverWait(browser, 30).until(
                lambda b: b.find_element(By.ID, "output").text == want)
            assert browser.find_element(By.ID, "timing").text.endswith(" ms")
            shot = tmp_path / "demo-page.png"
            browser.save_screenshot(str(shot))
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            box.clear()
            box.send_keys("abc€")
            WebDriverWait(browser, 30).until(
                lambda b: "outside the vocabulary" in b.find_element(By.ID, "output").text)
        finally:
            browser.quit()


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
        done = subprocess.run(["node", str(WEB / "node_decode.mjs"), str(art), str(lines),
                               "--greedy", "step", "--beam", str(beam)], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        got = json.loads(done.stdout)
        assert got == python.translate(texts, beam_size=beam), beam
        hits[beam] = sum(g == t for g, t in zip(got, truth))
    assert all(hits[b] >= hits[1] for b in (2, 4, 8)), hits
