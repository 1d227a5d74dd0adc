"""``python -m runtime.corpus``: whole corpora on the local pool and on Ray Data,
identical to ``translate``, resumable after a kill, a dead worker retried, and
nothing dropped silently."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runtime
from conftest import ROOT, run_module

LINES = 3000


@pytest.fixture(scope="module")
def corpus(heldout, tmp_path_factory) -> tuple[Path, list[str]]:
    """3,000 lines drawn from the held-out inputs, with three that cannot be
    translated (an unknown character, an empty line, a line too long)."""
    rng = random.Random(0)
    lines = [rng.choice(heldout) for _ in range(LINES)]
    lines[5], lines[17], lines[100] = "abc€", "", "1" * 500
    path = tmp_path_factory.mktemp("corpus") / "inputs.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, lines


@pytest.fixture(scope="module")
def expected(tiny_artifact, corpus) -> list[str]:
    """What translate() gives each line; rejected lines are empty."""
    model = runtime.load(tiny_artifact, greedy="step")  # the reference path, named
    _, lines = corpus
    bad = {5, 17, 100}
    good = model.translate([t for i, t in enumerate(lines) if i not in bad])
    it = iter(good)
    return ["" if i in bad else next(it) for i in range(len(lines))]


def _check(out: Path, expected: list[str]) -> None:
    assert out.read_text(encoding="utf-8").split("\n")[:-1] == expected
    rejects = [ln.split("\t") for ln in
               out.with_name(out.name + ".rejects.tsv").read_text().splitlines()]
    assert [(r[0], r[1].split(" ")[2]) for r in rejects] == [
        ("6", "has"), ("18", "is"), ("101", "has")]
    assert "outside the vocabulary: '€'" in rejects[0][1]
    assert not out.with_name(out.name + ".parts").exists()


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_both_engines_equal_translate_with_rejects_listed(tiny_artifact, corpus, expected,
                                                          engine, tmp_path):
    if engine == "ray":
        pytest.importorskip("ray", reason="the ray engine needs the [ray] extra")
    path, _ = corpus
    out = tmp_path / "out.txt"
    done = run_module("runtime.corpus", str(tiny_artifact), str(path), "--out", str(out),
                      "--engine", engine, "--workers", "2", "--shard-size", "200",
                      "--batch-size", "4", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _check(out, expected)
    assert "3 rejected in all" in done.stdout and "15 shard(s)" in done.stdout
    assert done.stdout.count("lines/s of its own time") == 2  # both workers did work
    again = run_module("runtime.corpus", str(tiny_artifact), str(path), "--out", str(out))
    assert again.returncode == 2 and "--force" in again.stderr


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "runtime.corpus", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for_shards(parts: Path, proc: subprocess.Popen, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(list(parts.glob("shard-*.jsonl"))) < count and time.monotonic() < deadline:
        assert proc.poll() is None, f"finished before the kill: {proc.communicate()}"
        time.sleep(0.005)


def test_a_killed_run_resumes_with_no_line_lost_or_duplicated(tiny_artifact, corpus,
                                                              expected, tmp_path):
    """SIGKILL to the whole run (coordinator and workers) part way; the rerun keeps
    every finished shard untouched and redoes only what was in flight."""
    path, _ = corpus
    out = tmp_path / "out.txt"
    args = [str(tiny_artifact), str(path), "--out", str(out), "--workers", "2",
            "--shard-size", "100", "--beam", "3"]  # beams: slow enough to stop part way
    proc = _start(args)
    parts = tmp_path / "out.txt.parts"
    _wait_for_shards(parts, proc, 3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("shard-*.jsonl")}
    assert 3 <= len(kept) < 30 and not out.exists()
    done = subprocess.run([sys.executable, "-m", "runtime.corpus", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming: {len(kept)} of 30 shards already done" in done.stderr
    assert f"{len(kept)} from an earlier run" in done.stdout
    assert f"{LINES - 100 * len(kept):,} lines translated now" in done.stdout
    _, lines = corpus
    good = [i for i in range(LINES) if i not in (5, 17, 100)]
    beams = runtime.load(tiny_artifact).translate([lines[i] for i in good], beam_size=3,
                                                  batch_size=256)
    got = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(got) == LINES and [got[i] for i in good] == beams
    assert [got[i] for i in (5, 17, 100)] == ["", "", ""]


def test_a_worker_killed_mid_run_is_replaced(tiny_artifact, corpus, expected, tmp_path):
    path, _ = corpus
    out = tmp_path / "out.txt"
    proc = _start([str(tiny_artifact), str(path), "--out", str(out), "--workers", "2",
                   "--shard-size", "100", "--batch-size", "1"])
    _wait_for_shards(tmp_path / "out.txt.parts", proc, 1)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    workers = [int(c) for c in children
               if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert workers, "no pool worker found"
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "a worker died; restarting the pool" in stderr
    _check(out, expected)


def test_csv_and_folder_inputs_and_clear_errors(tiny_artifact, heldout, tmp_path):
    (tmp_path / "in.csv").write_text("id,text\n" + "".join(
        f"{i},\"{t}\"\n" for i, t in enumerate(heldout[:10])), encoding="utf-8")
    done = run_module("runtime.corpus", str(tiny_artifact), str(tmp_path / "in.csv"),
                      "--column", "text", "--out", str(tmp_path / "csv.out"))
    assert done.returncode == 0, done.stderr
    want = runtime.load(tiny_artifact).translate(heldout[:10])
    assert (tmp_path / "csv.out").read_text().split("\n")[:-1] == want
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text("\n".join(heldout[5:10]) + "\n")
    (folder / "a.txt").write_text("\n".join(heldout[:5]) + "\n")
    done = run_module("runtime.corpus", str(tiny_artifact), str(folder),
                      "--out", str(tmp_path / "folder.out"))
    assert done.returncode == 0 and (tmp_path / "folder.out").read_text().split(
        "\n")[:-1] == want
    for args, message in (
            ([str(tmp_path / "in.csv"), "--column", "nope"], "no column 'nope'"),
            ([str(tmp_path / "in.csv")], "--column"),
            ([str(tmp_path / "missing.txt")], "input not found")):
        done = run_module("runtime.corpus", str(tiny_artifact), *args,
                          "--out", str(tmp_path / "x.out"))
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    # Parts of another run (other options) are not mixed into this one.
    parts = tmp_path / "y.out.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text("{}")
    done = run_module("runtime.corpus", str(tiny_artifact), str(folder),
                      "--out", str(tmp_path / "y.out"))
    assert done.returncode == 2 and "other inputs, artifact or options" in done.stderr


def test_the_core_runtime_never_imports_ray(tiny_artifact, heldout):
    script = ("import sys, runtime, runtime.corpus\n"
              f"runtime.load({str(tiny_artifact)!r}).translate({heldout[:2]!r})\n"
              "assert 'ray' not in sys.modules, 'ray imported'\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_options_reach_every_line(tiny_artifact, quantized_artifact, heldout, tmp_path):
    """--skip-unknown, --truncate, --max-length, --beam, the tflite backend, int8,
    TSV and Parquet inputs and --force each give what translate() gives with the
    same options."""
    lines = heldout[:12] + [heldout[0] + "€", heldout[1] * 30]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cases = [
        (tiny_artifact, ["--skip-unknown", "--truncate"],
         dict(unknown="skip", too_long="truncate")),
        (tiny_artifact, ["--skip-unknown", "--truncate", "--max-length", "4", "--beam", "2"],
         dict(unknown="skip", too_long="truncate", max_length=4, beam_size=2)),
        (quantized_artifact, ["--skip-unknown", "--truncate", "--backend", "tflite",
                              "--precision", "int8"],
         dict(unknown="skip", too_long="truncate")),
    ]
    out = tmp_path / "out.txt"
    for art, flags, kw in cases:  # the same OUT each time: --force replaces it
        done = run_module("runtime.corpus", str(art), str(src), "--out", str(out), "--force",
                          "--quiet", *flags)
        assert done.returncode == 0, done.stderr[-2000:]
        backend = "tflite" if "tflite" in flags else "onnx"
        precision = "int8" if "int8" in flags else "fp32"
        model = runtime.load(art, backend=backend, precision=precision)
        beam = kw.pop("beam_size", 1)
        assert out.read_text().split("\n")[:-1] == model.translate(lines, beam, **kw), flags
    # Columns of TSV and Parquet files.
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in.tsv").write_text("id\ttext\n" + "".join(
        f"{i}\t{t}\n" for i, t in enumerate(heldout[:6])), encoding="utf-8")
    pq.write_table(pa.table({"text": heldout[:6], "n": list(range(6))}), tmp_path / "in.parquet")
    want = runtime.load(tiny_artifact).translate(heldout[:6])
    for name in ("in.tsv", "in.parquet"):
        target = tmp_path / f"{name}.out"
        done = run_module("runtime.corpus", str(tiny_artifact), str(tmp_path / name),
                          "--column", "text", "--out", str(target), "--quiet")
        assert done.returncode == 0, done.stderr[-2000:]
        assert target.read_text().split("\n")[:-1] == want, name


def test_a_pool_that_keeps_losing_workers_gives_up_clearly(tiny_artifact, corpus, tmp_path):
    """Every pool worker killed as soon as it appears: after the restart limit the
    run stops with a clear error, keeping the finished shards for a resume."""
    from runtime.corpus.engines import MAX_RESTARTS

    path, _ = corpus
    proc = _start([str(tiny_artifact), str(path), "--out", str(tmp_path / "out.txt"),
                   "--shard-size", "100", "--batch-size", "1"])
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        for c in children:
            try:
                if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                    os.kill(int(c), signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr[-2000:]
    assert f"lost a worker {MAX_RESTARTS + 1} times" in stderr and "Traceback" not in stderr
    assert f"restarting the pool ({MAX_RESTARTS} of {MAX_RESTARTS})" in stderr
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "out.txt.lock").exists()
