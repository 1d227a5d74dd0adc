"""The JavaScript runtime (web/seq2seq.mjs): in Node with onnxruntime-node, and in
headless Chromium with onnxruntime-web (WASM) through the demo page, it decodes
exactly as the Python runtime does."""
from __future__ import annotations

import functools
import json
import random
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import runtime
from conftest import ROOT

WEB = ROOT / "web"
MODULES = WEB / "node_modules"
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


@pytest.fixture(scope="module")
def texts(tiny_artifact, heldout) -> list[str]:
    """120 inputs: the held-out ones and random strings of the vocabulary's tokens."""
    vocab = runtime.load_config(tiny_artifact).vocabulary
    rng = random.Random(5)
    tokens = vocab.text_tokens()
    extra = ["".join(rng.choice(tokens) for _ in range(rng.randint(1, vocab.max_input_length)))
             for _ in range(120 - len(heldout))]
    return heldout + extra


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


def _browser():
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium not installed (the project's [dev] extra has it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Chromium not found: `make web-check` installs it (as root: apt-get "
                    "install chromium chromium-driver)")
    if not (MODULES / "onnxruntime-web" / "dist").is_dir():
        pytest.skip("web/node_modules missing: run `make web-setup`")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=900,600"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver)
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture(scope="module")
def site(tiny_artifact, tmp_path_factory):
    """The demo page, the runtime, onnxruntime-web's three files and the artifact,
    served from 127.0.0.1 on a free port (file:// cannot import the .mjs)."""
    root = tmp_path_factory.mktemp("site")
    for name in ("index.html", "seq2seq.mjs"):
        shutil.copy(WEB / name, root / name)
    (root / "ort").mkdir()
    for name in ORT_WEB_FILES:
        source = MODULES / "onnxruntime-web" / "dist" / name
        if source.is_file():
            shutil.copy(source, root / "ort" / name)
    shutil.copytree(tiny_artifact, root / "artifact")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                              ".mjs": "text/javascript", ".wasm": "application/wasm"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()


def test_browser_demo_page_decodes_as_python(site, tiny_artifact, texts, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(site)
        WebDriverWait(browser, 60).until(
            lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        body = browser.find_element(By.TAG_NAME, "body")
        assert body.get_attribute("data-ready") == "yes", browser.find_element(
            By.ID, "status").text
        browser.set_script_timeout(120)
        run = ("const done = arguments[arguments.length - 1];"
               "window.seq2seqTranslate(arguments[0], arguments[1])"
               ".then(done, (e) => done('error: ' + e.message));")
        got = browser.execute_async_script(run, texts, {})
        assert got == runtime.load(tiny_artifact).translate(texts)
        beams = browser.execute_async_script(run, texts[:20], {"beamSize": 3})
        assert beams == runtime.load(tiny_artifact).translate(texts[:20], beam_size=3)
        # As a user does: type, and the output appears with its time.
        box = browser.find_element(By.ID, "text")
        box.send_keys(texts[0])
        want = runtime.load(tiny_artifact).translate([texts[0]])[0]
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
