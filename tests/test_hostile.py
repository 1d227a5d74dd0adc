"""The corpus tool and the CLIs under concurrent runs, damaged files and hostile
options: nothing lost, nothing mixed, no file touched that the tool did not
write, and every refusal a one-line ``error:`` with exit code 2."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from conftest import ROOT, run_module
from test_corpus import _start, _wait_for_shards


@pytest.fixture(scope="module")
def lines(heldout) -> list[str]:
    return [heldout[i % len(heldout)] for i in range(1000)]


@pytest.fixture(scope="module")
def source(lines, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "in.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _corpus(*args, **kw) -> subprocess.CompletedProcess:
    return run_module("runtime.corpus", *map(str, args), timeout=300, **kw)


def _refused(done, message: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: ")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_a_second_run_on_the_same_output_is_refused_at_once(tiny_artifact, source, lines,
                                                            tmp_path):
    """While a run writes OUT, another one (other options, --force) fails at once
    naming the first run's pid, and deletes nothing: the first run's output is
    whole and has its own options' answers."""
    out = tmp_path / "out.txt"
    first = _start([str(tiny_artifact), str(source), "--out", str(out), "--shard-size", "50",
                    "--beam", "3", "--batch-size", "4"])
    _wait_for_shards(tmp_path / "out.txt.parts", first, 1)
    # Paused while the second starts: on a fast machine the first run would
    # otherwise finish (and free the lock) before the second one got to it.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = _corpus(tiny_artifact, source, "--out", out, "--force", "--quiet")
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _refused(second, f"another run (pid {first.pid}) is writing this output")
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert _lines(out) == runtime.load(tiny_artifact, greedy="step").translate(lines, beam_size=3)
    assert not (tmp_path / "out.txt.parts").exists()
    assert not (tmp_path / "out.txt.lock").exists()


def test_two_runs_started_together_never_mix_or_lose_lines(tiny_artifact, source, lines,
                                                            tmp_path):
    out = tmp_path / "out.txt"
    args = [str(tiny_artifact), str(source), "--out", str(out), "--shard-size", "100",
            "--force", "--quiet"]
    runs = [_start(args), _start(args)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, stderr in results:
        if code == 2:
            assert "is writing this output" in stderr and "Traceback" not in stderr
    assert _lines(out) == runtime.load(tiny_artifact, greedy="step").translate(lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "out.txt.rejects.tsv"]


def test_files_the_tool_did_not_write_are_never_touched(tiny_artifact, source, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("my notes\n")
    parts = tmp_path / "out.txt.parts"
    parts.mkdir()
    (parts / "mine.txt").write_text("keep me")
    for extra in ([], ["--force"]):
        _refused(_corpus(tiny_artifact, source, "--out", out, "--quiet", *extra),
                 "a folder this tool did not write")
    assert out.read_text() == "my notes\n" and (parts / "mine.txt").read_text() == "keep me"
    # A rejects file of an earlier run is replaced only with --force.
    other = tmp_path / "o.txt"
    (tmp_path / "o.txt.rejects.tsv").write_text("old\n")
    _refused(_corpus(tiny_artifact, source, "--out", other, "--quiet"), "pass --force")
    assert (tmp_path / "o.txt.rejects.tsv").read_text() == "old\n" and not other.exists()
    # A directory where the output goes, or a file where the parts go.
    (tmp_path / "d.txt").mkdir()
    _refused(_corpus(tiny_artifact, source, "--out", tmp_path / "d.txt", "--force", "--quiet"),
             "is a directory")
    (tmp_path / "p.txt.parts").write_text("a file")
    _refused(_corpus(tiny_artifact, source, "--out", tmp_path / "p.txt", "--quiet"),
             "is not a folder of this tool's parts")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["d.txt", "o.txt.rejects.tsv", "out.txt", "out.txt.parts", "p.txt.parts"]


def test_a_damaged_shard_is_translated_again(tiny_artifact, source, lines, tmp_path):
    out = tmp_path / "out.txt"
    args = [str(tiny_artifact), str(source), "--out", str(out), "--shard-size", "50",
            "--beam", "3", "--batch-size", "4"]
    proc = _start(args)
    parts = tmp_path / "out.txt.parts"
    _wait_for_shards(parts, proc, 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    shard = sorted(parts.glob("shard-*.jsonl"))[0]
    shard.write_bytes(shard.read_bytes()[:-40])  # truncated mid-line
    done = _corpus(*args, "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{shard}: damaged; translating its lines again" in done.stderr
    assert _lines(out) == runtime.load(tiny_artifact, greedy="step").translate(lines, beam_size=3)


def test_a_damaged_manifest_is_refused_until_force(tiny_artifact, source, lines, tmp_path):
    parts = tmp_path / "out.txt.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text('{"inputs": 10')
    args = [tiny_artifact, source, "--out", tmp_path / "out.txt", "--quiet"]
    _refused(_corpus(*args), "manifest.json: damaged")
    assert _corpus(*args, "--force").returncode == 0
    assert _lines(tmp_path / "out.txt") == runtime.load(tiny_artifact, greedy="step").translate(lines)


def _broken_artifacts(tiny_artifact, root: Path):
    def copy(name):
        art = root / name
        shutil.copytree(tiny_artifact, art)
        return art

    flipped = copy("flipped")
    data = bytearray((flipped / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (flipped / "encoder.onnx").write_bytes(bytes(data))
    truncated = copy("truncated")
    meta = truncated / "artifact.json"
    meta.write_text(meta.read_text()[:200])
    deep = copy("deep")
    (deep / "artifact.json").write_text("[" * 100_000 + "]" * 100_000)
    return {"flipped": (flipped, "sha256"), "truncated": (truncated, "artifact.json"),
            "deep": (deep, "artifact.json")}


def test_a_model_that_cannot_load_fails_once_before_any_worker(tiny_artifact, source,
                                                               tmp_path):
    for name, (art, message) in _broken_artifacts(tiny_artifact, tmp_path).items():
        out = tmp_path / f"{name}.txt"
        done = _corpus(art, source, "--out", out, "--workers", "2", "--quiet")
        _refused(done, message)
        assert done.stderr.count("error:") == 1 and "lost a worker" not in done.stderr
        assert not list(tmp_path.glob(f"{name}.txt*")), name
    _refused(_corpus(tiny_artifact, source, "--out", tmp_path / "x.txt", "--precision",
                     "fp16", "--quiet"), "no onnx fp16 encoder graph")


def test_bad_options_leave_nothing_that_blocks_the_corrected_rerun(tiny_artifact, source,
                                                                   lines, tmp_path):
    out = tmp_path / "out.txt"
    for bad, message in ((["--beam", "100000"], "beam_size"),
                         (["--max-length", "0"], "max_length"),
                         (["--unk"], "needs a vocabulary with an unknown token")):
        _refused(_corpus(tiny_artifact, source, "--out", out, "--quiet", *bad), message)
        assert list(tmp_path.iterdir()) == []
    assert _corpus(tiny_artifact, source, "--out", out, "--quiet").returncode == 0
    assert _lines(out) == runtime.load(tiny_artifact, greedy="step").translate(lines)


def test_csv_quoting_and_rejects_stay_one_line_each(tiny_artifact, heldout, tmp_path):
    rows = [heldout[0], "line one\nline two€", heldout[1], "tab\there€"]
    import csv

    with open(tmp_path / "in.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(rows))
    out = tmp_path / "out.txt"
    done = _corpus(tiny_artifact, tmp_path / "in.csv", "--column", "text", "--out", out,
                   "--quiet")
    assert done.returncode == 0, done.stderr
    got = _lines(out)
    assert len(got) == 4 and got[1] == got[3] == ""
    rejects = (tmp_path / "out.txt.rejects.tsv").read_text(encoding="utf-8").splitlines()
    assert [r.split("\t")[0] for r in rejects] == ["2", "4"]
    assert rejects[0].endswith("\tline one\\nline two€")
    assert rejects[1].split("\t")[2] == "tab\\there€" and rejects[1].count("\t") == 2
    # An unterminated quote does not swallow the rows after it.
    (tmp_path / "bad.csv").write_text('id,text\n1,"open\n2,closed\n3,fine\n')
    _refused(_corpus(tiny_artifact, tmp_path / "bad.csv", "--column", "text", "--out",
                     tmp_path / "b.txt", "--quiet"), "unexpected end of data")


def test_a_folder_input_says_what_it_skips(tiny_artifact, heldout, tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "more.txt").write_text(heldout[2] + "\n")
    (folder / "a.txt").write_text(heldout[0] + "\n")
    (folder / "notes.md").write_text("x\n")
    done = _corpus(tiny_artifact, folder, "--out", tmp_path / "out.txt", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "reading 1 .txt file(s); skipping notes.md, sub/" in done.stderr


# -- the other CLIs ------------------------------------------------------------

def test_runtime_cli_with_stdin_closed_blank_lines_and_whitespace(tiny_artifact, heldout):
    done = subprocess.run([sys.executable, "-m", "runtime", str(tiny_artifact)], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          preexec_fn=lambda: os.close(0))
    _refused(done, "no texts")
    _refused(run_module("runtime", str(tiny_artifact), "   "), "input 0 is empty (only whitespace)")
    done = run_module("runtime", str(tiny_artifact), input=f"{heldout[0]}\n\n{heldout[1]}\n")
    _refused(done, "line 2 of standard input")
    assert "python -m runtime.corpus" in done.stderr
    _refused(run_module("runtime", str(tiny_artifact), "--temperature", "1", "--seed", "-1",
                        heldout[0]), "seed must be an integer >= 0")


def test_heatmap_refuses_unwritable_and_directory_outputs(learned, tmp_path):
    art, pairs = learned("attention")
    text = pairs[0][0]
    _refused(run_module("heatmap", str(art), text, "--out", "/proc/x.png"), "cannot write")
    (tmp_path / "d.png").mkdir()
    done = run_module("heatmap", str(art), text, "--out", str(tmp_path / "d.png"), "--force")
    assert done.returncode == 2 and "is a directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_export_names_a_file_that_is_not_a_keras_archive(tiny_run, tmp_path):
    junk = tmp_path / "model.keras"
    for content in (os.urandom(2000), (tiny_run / "model.keras").read_bytes()[:3000]):
        junk.write_bytes(content)
        done = run_module("export", str(junk), "--vocab", str(tiny_run / "vocab.json"),
                          "--out", str(tmp_path / "art"))
        _refused(done, "not a Keras archive")
        assert not (tmp_path / "art").exists()
