"""Record-level threads change nothing but the wall time."""

from __future__ import annotations

import numpy as np
import pytest

from nnupdate import parallel
from nnupdate.update import decode, diff


def test_ordered_map_keeps_order_and_raises_the_first_error_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNUPDATE_THREADS", "2")
    big = [parallel.MIN_PARALLEL_ELEMENTS] * 5
    assert parallel.ordered_map(lambda x: x * x, [1, 2, 3, 4, 5], big) == [1, 4, 9, 16, 25]

    def fail(x: int) -> int:
        if x in (2, 4):
            raise ValueError(f"item {x}")
        return x

    with pytest.raises(ValueError, match="item 2"):
        parallel.ordered_map(fail, [1, 2, 3, 4, 5], big)


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("0", 1), ("junk", 1)])
def test_thread_count_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: int) -> None:
    monkeypatch.setenv("NNUPDATE_THREADS", value)
    assert parallel.threads() == expected


def test_bytes_and_decoded_values_do_not_depend_on_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    base = {f"l{i}.weight": rng.normal(size=(64, 32, 3, 3)).astype(np.float32) for i in range(3)}
    base.update({f"fc{i}.weight": rng.normal(size=(128, 256)).astype(np.float32) for i in range(2)})
    base["fc0.bias"] = rng.normal(size=128).astype(np.float32)
    new = {k: (v + 0.01 * rng.normal(size=v.shape)).astype(np.float32) for k, v in base.items()}
    out = {}
    for n in ("1", "2"):
        monkeypatch.setenv("NNUPDATE_THREADS", n)
        data = diff(base, new).encode("ctx:step=0.003")
        out[n] = (data, decode(data))
    assert out["1"][0] == out["2"][0]
    for k in new:
        assert np.array_equal(np.asarray(out["1"][1].changes[k].data), np.asarray(out["2"][1].changes[k].data))


def test_blas_runs_on_one_thread_inside_the_record_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records on every core and a multi-threaded BLAS inside each would oversubscribe them:
    while ordered_map runs its threads, BLAS is limited to one, and restored afterwards."""
    from threadpoolctl import threadpool_info

    def blas_threads(_: int) -> list[int]:  # numpy's BLAS: the one numpy.linalg in the records calls
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas" and "numpy" in lib["filepath"]]

    monkeypatch.setenv("NNUPDATE_THREADS", "2")
    before = blas_threads(0)
    assert before  # numpy links a BLAS
    inside = parallel.ordered_map(blas_threads, [0, 1, 2], [1 << 20] * 3)
    assert all(n == 1 for threads in inside for n in threads)
    assert blas_threads(0) == before
