"""The JavaScript runtime in headless Chromium: serve the demo page with an
artifact from 127.0.0.1 and drive it with Selenium. Used by the browser test and
by the benchmark's browser row (per token, batch 1)."""
from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
MODULES = WEB / "node_modules"
# onnxruntime-web's files the page needs (its WASM build, single-threaded here).
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (the project's [dev] extra has it)"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which(
            "chromedriver"):
        return ("Chromium not found: `make web-check` installs it (as root: apt-get install "
                "chromium chromium-driver)")
    if not (MODULES / "onnxruntime-web" / "dist").is_dir():
        return "web/node_modules missing: run `make web-setup`"
    return None


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args):  # no line per request on the console
        pass


@contextlib.contextmanager
def site(artifact: Path, others: dict[str, Path] | None = None):
    """The page, the runtime, onnxruntime-web and the artifact's ONNX files, served
    over http (``file://`` cannot import the .mjs). Yields the page's URL; the page
    opens ``artifact/``, and each of ``others`` is served at ``NAME/``."""
    with tempfile.TemporaryDirectory(prefix="seq2seq-web-") as tmp:
        root = Path(tmp)
        shutil.copy(WEB / "index.html", root / "index.html")
        for module in WEB.glob("*.mjs"):
            if not module.name.startswith("node_") and module.name != "golden.mjs":
                shutil.copy(module, root / module.name)
        (root / "ort").mkdir()
        for name in ORT_WEB_FILES:
            shutil.copy(MODULES / "onnxruntime-web" / "dist" / name, root / "ort" / name)
        for name, source in {"artifact": artifact, **(others or {})}.items():
            (root / name).mkdir()
            for f in Path(source).iterdir():
                if f.suffix in (".json", ".onnx"):
                    shutil.copy(f, root / name / f.name)
        server = ThreadingHTTPServer(("127.0.0.1", 0),
                                     functools.partial(_Handler, directory=str(root)))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
        finally:
            server.shutdown()


def chromium(width: int = 760, height: int = 640):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options,
                            service=webdriver.ChromeService(shutil.which("chromedriver")))


def open_page(browser, url: str, timeout: float = 60) -> None:
    """Load the page and wait until its model is loaded; raise with its status."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, timeout).until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    if browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") != "yes":
        raise RuntimeError(browser.find_element(By.ID, "status").text)
    browser.set_script_timeout(300)


TRANSLATE = ("const done = arguments[arguments.length - 1];"
             "window.seq2seqTranslate(arguments[0], arguments[1])"
             ".then(done, (e) => done('error: ' + e.message));")

# Each text alone (batch 1), timed inside the page; returns [milliseconds, outputs].
TIMED = ("const done = arguments[arguments.length - 1];"
         "(async () => { const times = [], outs = [];"
         " for (let r = 0; r < arguments[1]; r++) for (const t of arguments[0]) {"
         "  const s = performance.now(); const [o] = await window.seq2seqTranslate([t]);"
         "  times.push(performance.now() - s); outs.push(o); }"
         " return [times, outs]; })().then(done, (e) => done('error: ' + e.message));")


def per_token(artifact: Path, texts: list[str], rounds: int = 3) -> dict:
    """Greedy decodes one text at a time in the page: p50 per sentence and per token."""
    import numpy as np

    with site(artifact) as url:
        browser = chromium()
        try:
            open_page(browser, url)
            browser.execute_async_script(TIMED, texts[:3], 1)  # warm up
            result = browser.execute_async_script(TIMED, texts, rounds)
            version = browser.capabilities.get("browserVersion", "?")
        finally:
            browser.quit()
    if isinstance(result, str):
        raise RuntimeError(result)
    times, outputs = result
    tokens = [len(o) + 1 for o in outputs]
    return {"browser": f"Chromium {version}, onnxruntime-web (WASM, 1 thread)",
            "sentence_p50_us": float(np.percentile(times, 50) * 1e3),
            "per_token_us": float(sum(times) / sum(tokens) * 1e3), "n": len(times)}
