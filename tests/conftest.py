"""Shared fixtures; also makes sure an installed, compiled package is under test."""

from __future__ import annotations

import importlib.util
import os
import struct
import tempfile
import warnings
import zlib

import pytest

import sat_fast

# The test models run their float32 matmuls and convolutions at full precision on every backend, as the
# float64 references do. XLA's default on GPUs is TF32 (a 10-bit mantissa, picked per compilation by
# autotuning), which would make the models, not sat_fast, differ from the references and between two
# compilations of the same model. sat_fast's own contractions ask for full precision themselves
# (test_every_contraction_of_the_methods_runs_at_full_precision). The sanitizer build tests the kernels in a
# venv without JAX.
if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")

if importlib.util.find_spec("sat_fast._core") is None:
    raise RuntimeError(
        f"sat_fast at {sat_fast.__file__} has no compiled _core: install the package "
        "(pip install '.[test]', or pip install -e . for development) and run the tests with the venv's pytest"
    )


def _header_only_png(path, height, width, idat=b""):
    """A PNG that declares (height, width) 8-bit greyscale but holds next to no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def header_only_png():
    """Writes a PNG header declaring any size (a decompression bomb, or a PNG whose pixels are garbage)."""
    return _header_only_png


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session (starting one takes about 16 s here); its address."""
    import ray

    # Ray's workers start in the driver's working directory and import from it: from the repository root they
    # would find the source tree (without the compiled _core) before the installed package.
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as elsewhere:
        os.chdir(elsewhere)
        try:
            with warnings.catch_warnings():
                # ray.init forks its helper processes; JAX (already imported by earlier tests) warns at any fork of
                # a process that has started its threads. The forked children exec Ray's own binaries at once.
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                context = ray.init(
                    num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False
                )
        finally:
            os.chdir(here)
        try:
            yield context.address_info["address"]
        finally:
            ray.shutdown()
