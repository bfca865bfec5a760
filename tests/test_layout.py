"""The package's shape: light to import, no import cycles, no submodule shadowing a public function."""

from __future__ import annotations

import importlib.util
import pkgutil
import subprocess
import sys
import tempfile
import types

import pytest

import sat_fast

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(sat_fast.__path__, "sat_fast.")
    if not m.name.startswith("sat_fast.demo") or m.name == "sat_fast.demo"
)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    # Outside the repository: `python -c` puts the working directory first on sys.path, and the source
    # tree has no compiled _core.
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir()
    )


def test_import_sat_fast_stays_light():
    done = _python(
        "import sys, sat_fast\n"
        "names = ('jax', 'jaxlib', 'matplotlib', 'scipy', 'flax', 'optax', 'pycocotools')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_modules_list_is_complete():
    # guards the test below against walking nothing
    assert {"sat_fast.stats", "sat_fast.table", "sat_fast.segments._coco", "sat_fast.cli"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module):
    """A fresh interpreter imports every module first: an import cycle fails here."""
    done = _python(f"import importlib; importlib.import_module({module!r})")
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_submodule_shadows_a_public_name():
    """`sat_fast.report` etc. stay the functions even after every submodule is imported."""
    done = _python(
        "import importlib, types, sat_fast\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        "bad = [n for n in sat_fast.__all__ if isinstance(getattr(sat_fast, n), types.ModuleType)"
        " and n not in ('segments', 'transforms')]\n"
        "print(','.join(bad))"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""


def test_public_api_resolves():
    for name in sat_fast.__all__:
        value = getattr(sat_fast, name)
        assert value is not None
        if name not in ("segments", "transforms"):
            assert not isinstance(value, types.ModuleType), name
    assert sat_fast.__version__ == sat_fast._version.__version__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sat_fast.nope  # noqa: B018


@pytest.mark.skipif(
    "site-packages" not in sat_fast.__file__,
    reason="an editable install's import hook finds the real package before any copy (CI installs normally)",
)
def test_source_tree_without_core_says_to_install(tmp_path):
    """Python started in a source checkout finds no _core: one clear line, not a circular-import message."""
    import shutil
    from pathlib import Path

    src = Path(sat_fast.__file__).parent
    shutil.copytree(src, tmp_path / "sat_fast", ignore=shutil.ignore_patterns("_core*.so", "_core*.pyd", "__pycache__"))
    done = subprocess.run(
        [sys.executable, "-c", "import sat_fast; sat_fast.segment_stats"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "compiled core" in done.stderr and "pip install" in done.stderr, done.stderr[-1500:]


def test_no_module_holds_many_ideas():
    """A module past about 800 lines has grown a second idea: split it (issue 9's rule)."""
    from pathlib import Path

    origins = {m: Path(str(importlib.util.find_spec(m).origin)) for m in MODULES}
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in origins.items() if p.suffix == ".py"}
    assert len(sizes) >= 40
    assert max(sizes.values()) <= 800, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_the_extension_formats_no_text_with_iostreams():
    """Messages are built with std::to_string and snprintf, never a stream.

    With libstdc++ linked statically into the module (GCC 13 at /opt/gcc on a build machine here), formatting a
    number through a stream's locale facets crashed the interpreter the moment a KernelInputError was raised
    from a kernel result; strings and snprintf carry no such state.
    """
    from pathlib import Path

    csrc = Path(__file__).resolve().parents[1] / "csrc"
    sources = sorted(csrc.rglob("*.[ch]pp"))
    assert sources, f"no C++ sources under {csrc}"
    streams = ("<sstream>", "<iostream>", "<ostream>", "<istream>", "<fstream>", "std::cout", "std::cerr")
    found = [f"{p.relative_to(csrc)}: {s}" for p in sources for s in streams if s in p.read_text()]
    assert not found, found
