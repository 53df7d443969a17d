"""NNCodec (Fraunhofer's MPEG NNC implementation) as a measured peer, run in its own venv.

NNCodec pins numpy<2 and a torch/torchvision pair that conflict with our environment, so
it lives in a separate venv (``NNCODEC_PYTHON`` or ``/work/nncodec-venv/bin/python``) and
is driven through ``tools/nncodec_worker.py`` in a subprocess. Tensors go in and
reconstructions come back as npz files (never pickled). Encode and decode times are
measured inside the worker around NNCodec's own calls, so interpreter start-up and
imports do not count against it.

Set up the venv once::

    python3 -m venv /work/nncodec-venv
    /work/nncodec-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 nncodec

Example::

    from tools.nncodec_runner import encode_tensors
    bitstream, rec, enc_s, dec_s = encode_tensors({"w": w}, qp=-40, dq=True, lambda_scale=0.0)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

WORKER = Path(__file__).resolve().parent / "nncodec_worker.py"
DEFAULT_PYTHON = Path("/work/nncodec-venv/bin/python")


class NNCodecUnavailable(RuntimeError):
    """No NNCodec venv was found (set NNCODEC_PYTHON or create /work/nncodec-venv)."""


class NNCodecFailed(RuntimeError):
    """The worker exited with an error; the message carries its stderr tail."""


def nncodec_python() -> Path | None:
    """The NNCodec venv's interpreter, or None if there is none."""
    candidate = os.environ.get("NNCODEC_PYTHON")
    path = Path(candidate) if candidate else DEFAULT_PYTHON
    return path if path.is_file() and os.access(path, os.X_OK) else None


def available() -> bool:
    return nncodec_python() is not None


@dataclass(frozen=True)
class NNCodecConfig:
    """One NNCodec operating point.

    ``qp``: NNCodec's quantization parameter (step = 2^(qp/4) at its default qp_density 2;
    more negative is finer). ``dq``: dependent (trellis-coded) quantization.
    ``lambda_scale``: rate-aware rounding (0 = plain nearest levels). ``qp_1d_offset``:
    tensors with fewer than 2 dimensions are coded at ``qp + offset`` (None keeps
    NNCodec's default of a fixed QP -75 for them). ``incremental``: mark the bitstream
    as a differential update, as NNCodec's federated client does.
    """

    qp: int
    dq: bool = True
    lambda_scale: float = 0.0
    qp_1d_offset: int | None = 0
    row_skipping: bool = True
    incremental: bool = True
    repeats: int = 1

    def label(self) -> str:
        one_d = "default" if self.qp_1d_offset is None else f"{self.qp_1d_offset:+d}"
        return f"qp={self.qp},dq={int(self.dq)},lambda={self.lambda_scale:g},qp1d={one_d}"


@dataclass
class NNCodecResult:
    config: NNCodecConfig
    bitstream: bytes
    reconstructed: dict[str, np.ndarray]
    encode_seconds: list[float]
    decode_seconds: list[float]

    @property
    def encode_s(self) -> float:
        return statistics.median(self.encode_seconds)

    @property
    def decode_s(self) -> float:
        return statistics.median(self.decode_seconds)


def encode_items(
    jobs: Sequence[tuple[Mapping[str, np.ndarray], Sequence[NNCodecConfig]]], *, timeout: float = 3600.0
) -> list[list[NNCodecResult]]:
    """Code several tensor dicts, each at its own configurations, in ONE worker process.

    NNCodec's imports (torch) take seconds, so the benchmark batches everything here.
    Returns, per job, one result per configuration.
    """
    python = nncodec_python()
    if python is None:
        raise NNCodecUnavailable("NNCodec not available (set NNCODEC_PYTHON or create /work/nncodec-venv)")
    items = []
    arrays: dict[str, np.ndarray] = {}
    all_names = []
    for k, (tensors, configs) in enumerate(jobs):
        names = list(tensors)
        all_names.append(names)
        for i, name in enumerate(names):
            arrays[f"t{k}_{i}"] = np.array(tensors[name], dtype=np.float32, order="C")
        items.append({"names": names, "configs": [asdict(c) for c in configs]})
    with tempfile.TemporaryDirectory(prefix="nncodec-") as tmp:
        in_path, out_path, job_path = Path(tmp, "in.npz"), Path(tmp, "out.npz"), Path(tmp, "job.json")
        np.savez(in_path, **arrays)  # type: ignore[arg-type]
        job_path.write_text(json.dumps({"items": items}))
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        env.pop("PYTHONPATH", None)
        proc = subprocess.run(
            [str(python), str(WORKER), str(in_path), str(out_path), str(job_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=tmp,  # NNCodec may drop files in the working directory
        )
        if proc.returncode != 0:
            raise NNCodecFailed(f"NNCodec worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
        results: list[list[NNCodecResult]] = []
        with np.load(out_path, allow_pickle=False) as z:
            for k, (tensors, configs) in enumerate(jobs):
                row = []
                for j, config in enumerate(configs):
                    rec = {
                        name: z[f"rec{k}_{j}_{i}"].reshape(np.shape(tensors[name]))
                        for i, name in enumerate(all_names[k])
                    }
                    row.append(
                        NNCodecResult(
                            config, z[f"bs{k}_{j}"].tobytes(), rec, z[f"enc{k}_{j}"].tolist(), z[f"dec{k}_{j}"].tolist()
                        )
                    )
                results.append(row)
    return results


def encode_many(
    tensors: Mapping[str, np.ndarray], configs: Sequence[NNCodecConfig], *, timeout: float = 1800.0
) -> list[NNCodecResult]:
    """Code ``tensors`` at every configuration in one worker process (imports paid once)."""
    return encode_items([(tensors, configs)], timeout=timeout)[0]


def encode_tensors(
    tensors: Mapping[str, np.ndarray],
    qp: int,
    dq: bool = True,
    lambda_scale: float = 0.0,
    *,
    qp_1d_offset: int | None = 0,
    row_skipping: bool = True,
    incremental: bool = True,
    repeats: int = 1,
) -> tuple[bytes, dict[str, np.ndarray], float, float]:
    """(bitstream, reconstructed tensors, median encode seconds, median decode seconds)."""
    config = NNCodecConfig(qp, dq, lambda_scale, qp_1d_offset, row_skipping, incremental, repeats)
    (result,) = encode_many(tensors, [config])
    return result.bitstream, result.reconstructed, result.encode_s, result.decode_s


__all__ = [
    "NNCodecConfig",
    "NNCodecFailed",
    "NNCodecResult",
    "NNCodecUnavailable",
    "available",
    "encode_items",
    "encode_many",
    "encode_tensors",
    "nncodec_python",
]
