"""Reference vectors for the ``elias`` stage, produced by tensorflow-compression's own op.

Run with a Python that has ``tensorflow-compression-ops`` (kept OUT of the dev venv, it
pulls in TensorFlow), e.g.::

    python3 -m venv /work/tfc-venv && /work/tfc-venv/bin/pip install tensorflow-compression-ops
    /work/tfc-venv/bin/python tools/make_tfc_elias_vectors.py tests/fixtures/tfc_run_length_gamma.npz

Writes ``x<i>`` (int32 input), ``code<i>`` (uint8 bytes of ``run_length_gamma_encode``)
and ``back<i>`` (``run_length_gamma_decode`` of that code) for a fixed set of arrays.
tests/test_codecs_entropy.py checks our coder against them in both directions.
"""

from __future__ import annotations

import sys

import numpy as np


def cases() -> list[np.ndarray]:
    rng = np.random.default_rng(20261123)
    out = [
        np.zeros(1, np.int32),
        np.zeros(37, np.int32),
        np.array([1], np.int32),
        np.array([-1], np.int32),
        np.array([0, 0, 1, -2, 0, 0, 0], np.int32),
        np.array([2**31 - 1, -(2**31 - 1), 0, 5, 0], np.int32),
        np.array([3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -9], np.int32),
        rng.integers(-2, 3, 1000).astype(np.int32),
        (rng.integers(-40, 41, 5000) * (rng.random(5000) < 0.05)).astype(np.int32),
        np.rint(rng.laplace(0, 3, 4096)).astype(np.int32),
        (rng.integers(1, 2**20, 300) * rng.choice([-1, 1], 300)).astype(np.int32),
    ]
    sparse = np.zeros(70000, np.int32)
    sparse[rng.choice(70000, 50, replace=False)] = rng.integers(-100, 100, 50)
    out.append(sparse)
    return out


def main(path: str) -> None:
    import tensorflow as tf
    import tensorflow_compression_ops as tfc_ops

    arrays: dict[str, np.ndarray] = {}
    for i, x in enumerate(cases()):
        code = tfc_ops.run_length_gamma_encode(tf.constant(x)).numpy()
        back = tfc_ops.run_length_gamma_decode(tf.constant(code), tf.constant(x.shape, tf.int32)).numpy()
        assert np.array_equal(back, x)
        arrays[f"x{i}"] = x
        arrays[f"code{i}"] = np.frombuffer(code, dtype=np.uint8)
        arrays[f"back{i}"] = back
    np.savez_compressed(path, **arrays)
    print(f"wrote {len(arrays) // 3} vectors to {path} (tensorflow {tf.__version__})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/tfc_run_length_gamma.npz")
