"""README.md runs as written: every shell command and Python block is executed, at small sizes.

Rules (so that the README stays the user's text, not the test's):

- Python blocks run one after another, each in a fresh namespace that holds small stand-ins for the names the
  README leaves to the reader (``model``, ``variables``, ``images``, ``labels``, ``paths``, ...: see
  ``_reader_names``) and a working folder with the files it names (``names.csv``, ``instances_val2017.json``,
  ``sats/*.parquet``). Deprecation warnings are errors, so the README cannot show a deprecated spelling.
- Shell commands run in a folder that links ``examples/`` and ``benchmarks/``; ``.venv/bin/`` means the
  interpreter running the tests, whose package is already installed, so ``python3 -m venv`` and
  ``pip install`` steps are left out. Left out too: the Quick start's test command (this suite), the linters
  (``.ci/run`` runs them on every submission) and ``bash .ci/run`` itself. Small sizes: ``sat-fast demo`` gets
  ``--quick``, benchmark scripts ``--quick --no-torch``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent


def _blocks(lang: str) -> list[tuple[int, str]]:
    out, lines, i = [], README.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == f"```{lang}":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            out.append((start + 1, "\n".join(body)))
        i += 1
    return out


def _commands(block: str) -> list[str]:
    """One entry per command line, backslash continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    cmds = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            cmds.append(line)
    return cmds


_SKIP = (
    re.compile(r"(^|&& )\.venv/bin/pytest\b"),  # this suite
    re.compile(r"\b(ruff|mypy|pre-commit)\b"),  # .ci/run runs the linters
    re.compile(r"^bash \.ci/run\b"),
)


def _as_run_here(cmd: str) -> str | None:
    """The README command as the test runs it (see the module docstring), or None when left out."""
    if any(p.search(cmd) for p in _SKIP):
        return None
    parts = [p.strip() for p in cmd.split("&&")]
    parts = [p for p in parts if not p.startswith("python3 -m venv") and not re.match(r"(\.venv/bin/)?pip install", p)]
    if not parts:
        return None
    cmd = " && ".join(parts)
    cmd = cmd.replace(".venv/bin/", f"{BIN}/")
    if re.search(r"\bsat-fast demo\b", cmd):
        cmd += " --quick --no-progress --out demo_out"
    if re.search(r"benchmarks/bench_\w+\.py", cmd):
        cmd += " --quick --no-torch"
    return cmd


SHELL = [(line, cmd) for line, block in _blocks("bash") for cmd in _commands(block)]
RUN = [(line, cmd) for line, cmd in SHELL if _as_run_here(cmd) is not None]


def test_readme_has_commands_and_code():
    assert len(SHELL) >= 5 and len(_blocks("python")) >= 5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    for name in ("examples", "benchmarks"):
        (work / name).symlink_to(ROOT / name)
    return work


@pytest.mark.slow
@pytest.mark.parametrize(("line", "cmd"), RUN, ids=[f"README:{line}:{c[:40]}" for line, c in RUN])
def test_shell_command_runs(workdir, line, cmd):
    run = _as_run_here(cmd)
    assert run is not None
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(run, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"README line {line}: {cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _reader_names(work: Path) -> dict[str, Any]:
    """Small stand-ins for what the README leaves to the reader, and the files it names."""
    import functools

    import jax
    import jax.numpy as jnp
    import polars as pl
    from PIL import Image

    import sat_fast
    from sat_fast.demo.model import SmallCNN

    b, size = 4, 32
    rng = np.random.default_rng(0)
    model = SmallCNN(num_classes=4)  # the README explains classes=[0, 3]
    variables = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))
    images = rng.random((b, size, size, 3)).astype(np.float32)
    segments = np.zeros((b, size, size), np.uint8)
    segments[:, 8:24, 8:24] = 1
    segments[:, 12:16, 12:16] = 2
    names = ["background", "body", "eye"]
    labels = np.array([0, 1, 2, 0])
    paths = []
    for i in range(b):
        path = work / f"mask{i}.png"
        Image.fromarray(segments[i]).save(path)
        paths.append(str(path))
    (work / "names.csv").write_text("value,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    coco = {
        "images": [{"id": i, "height": size, "width": size, "file_name": f"{i}.png"} for i in range(b)],
        "categories": [{"id": 1, "name": "body"}, {"id": 2, "name": "eye"}],
        "annotations": [
            {"id": 10 * i + k, "image_id": i, "category_id": k, "segmentation": [[8, 8, 24, 8, 24, 24, 8, 24]]}
            for i in range(b)
            for k in (1, 2)
        ],
    }
    (work / "instances_val2017.json").write_text(json.dumps(coco))
    maps = sat_fast.saliency(functools.partial(model.apply, variables), images, steps=4)
    sat = sat_fast.segment_table(maps, segments, names=names, targets=labels, metadata={"label": labels})
    (work / "sats").mkdir(exist_ok=True)
    sat.with_columns(
        pl.Series("split", ["train", "ood"] * (sat.height // 2) + ["train"] * (sat.height % 2))
    ).write_parquet(work / "sats" / "part-0.parquet")

    def my_segmenter(batch: Any) -> list[dict[str, np.ndarray]]:
        return [{"bright": np.asarray(x).mean(-1) > 0.5, "dark": np.asarray(x).mean(-1) <= 0.5} for x in batch]

    return {
        "model": model,
        "variables": variables,
        "images": images,
        "labels": labels,
        "segments": segments,
        "names": names,
        "paths": paths,
        "label_maps": list(segments),
        "outputs": [{"eyes": segments[i] == 2, "left eye": segments[i] == 1} for i in range(b)],
        "my_segmenter": my_segmenter,
        "saliency_224": rng.standard_normal((b, 224, 224)).astype(np.float32),
        "model_fn": functools.partial(model.apply, variables),
        "label_map": segments,
        "targets": labels,
        "sat_table": sat,
    }


PYTHON = _blocks("python")


@pytest.fixture(scope="module")
def reader_names(workdir):
    return _reader_names(workdir)


@pytest.mark.slow
@pytest.mark.parametrize(("line", "code"), PYTHON, ids=[f"README:{line}" for line, _ in PYTHON])
def test_python_block_runs(workdir, reader_names, line, code, monkeypatch):
    monkeypatch.chdir(workdir)
    namespace = dict(reader_names)  # a fresh namespace per block; the stand-ins are not modified by the README
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(code, f"README.md:{line}", "exec"), namespace)


def test_rules_leave_out_only_what_they_say():
    kept = [c for _, c in RUN]
    assert any("sat-fast demo" in c for c in kept) and any("sat-fast run" in c for c in kept)
    left_out = [c for _, c in SHELL if _as_run_here(c) is None]
    for cmd in left_out:  # installs only, this suite, the linters or CI itself
        steps = [p.strip() for p in cmd.split("&&")]
        assert all(
            re.match(r"(python3 -m venv|(\.venv/bin/)?pip install|\.venv/bin/(pytest|ruff|mypy)|bash \.ci/run)", p)
            for p in steps
        ), cmd
    assert _as_run_here(".venv/bin/pytest") is None
    assert shlex.split(_as_run_here("python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/sat-fast demo"))[
        0
    ].endswith("sat-fast")
