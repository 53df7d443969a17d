"""Runs INSIDE the NNCodec venv (numpy<2, torch 2.14.1): codes tensors with NNCodec, times it.

Invoked by ``tools/nncodec_runner.py`` as ``python nncodec_worker.py IN.npz OUT.npz JOB.json``;
it must not import nnupdate (whose numpy/torch pins differ). Data travels in npz files
(read with ``allow_pickle=False``): ``IN.npz`` holds tensor ``i`` of item ``k`` as ``t{k}_{i}``
(float32); ``JOB.json`` per item its tensor names and a list of configurations; ``OUT.npz``
receives, per item ``k`` and configuration ``j``, the bitstream ``bs{k}_{j}`` (uint8), the
reconstruction ``rec{k}_{j}_{i}`` and the encode / decode wall times ``enc{k}_{j}`` /
``dec{k}_{j}`` of every repeat, measured around
``nnc.compress`` / ``nnc.decompress`` only (interpreter start-up and imports excluded).

NNCodec is driven through ``nncodec.nnc.compress`` on a plain ``{name: float32}`` dict --
the path its own ``nncodec.nn.encode(..., incremental=True)`` and federated client use for
model *updates*. With ``incremental`` the bitstream is marked as a differential update
(``compress_differences`` with an empty parent state, as NNCodec's FL client does on its
first round); temporal context adaptation needs a previous update and stays off.
By default NNCodec codes every tensor of fewer than 2 dimensions at ``nonweight_qp=-75``
(a step ~2^-19, i.e. practically lossless and expensive); ``qp_1d_offset`` instead gives
them ``qp + offset`` through ``qp_per_tensor`` (``null`` keeps NNCodec's default).
"""

import json
import sys
import time

import numpy as np


def _parent_state():
    return {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}


def code_one(nnc, tensors, cfg):
    """(bitstream, reconstruction, encode times, decode times) of one configuration."""
    shapes = {name: t.shape for name, t in tensors.items()}
    # NNCodec's row-skip coder indexes shape[0]: code 0-d scalars as 1-element vectors
    tensors = {name: t.reshape(1) if t.ndim == 0 else t for name, t in tensors.items()}
    qp = int(cfg["qp"])
    qp_per_tensor = None
    if cfg.get("qp_1d_offset") is not None:
        qp_per_tensor = {n: qp + int(cfg["qp_1d_offset"]) for n, t in tensors.items() if t.ndim < 2}
    incremental = bool(cfg.get("incremental", True))
    enc_times, dec_times = [], []
    bitstream = None
    rec = None
    for _ in range(max(1, int(cfg.get("repeats", 1)))):
        started = time.perf_counter()
        bs = nnc.compress(
            dict(tensors),
            bitstream_path=None,
            qp=qp,
            qp_per_tensor=qp_per_tensor,
            use_dq=bool(cfg["dq"]),
            lambda_scale=float(cfg.get("lambda_scale", 0.0)),
            row_skipping=bool(cfg.get("row_skipping", True)),
            compress_differences=incremental,
            approx_param_base=_parent_state() if incremental else None,
            return_bitstream=True,
            verbose=False,
        )
        encoded = time.perf_counter()
        rec = nnc.decompress(bytearray(bs), approx_param_base=_parent_state() if incremental else None)
        decoded = time.perf_counter()
        enc_times.append(encoded - started)
        dec_times.append(decoded - encoded)
        if bitstream is not None and bytes(bs) != bitstream:
            raise RuntimeError("NNCodec produced different bitstreams for the same input")
        bitstream = bytes(bs)
    out = {}
    for name, shape in shapes.items():
        # an incremental bitstream skips tensors whose levels are all zero: they decode to zeros
        value = rec[name] if name in rec else np.zeros(shape, np.float32)
        out[name] = np.asarray(value, dtype=np.float32).reshape(shape)
    return bitstream, out, enc_times, dec_times


def run(in_path, out_path, job_path):
    from nncodec import nnc  # imported here so a bad venv fails with a clear traceback

    with open(job_path) as f:
        job = json.load(f)
    out = {}
    with np.load(in_path, allow_pickle=False) as z:
        for k, item in enumerate(job["items"]):
            tensors = {name: np.array(z[f"t{k}_{i}"], dtype=np.float32) for i, name in enumerate(item["names"])}
            for j, cfg in enumerate(item["configs"]):
                bitstream, rec, enc_times, dec_times = code_one(nnc, tensors, cfg)
                out[f"bs{k}_{j}"] = np.frombuffer(bitstream, dtype=np.uint8)
                out[f"enc{k}_{j}"] = np.asarray(enc_times, dtype=np.float64)
                out[f"dec{k}_{j}"] = np.asarray(dec_times, dtype=np.float64)
                for i, name in enumerate(item["names"]):
                    out[f"rec{k}_{j}_{i}"] = rec[name]
    np.savez(out_path, **out)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.stderr.write("usage: nncodec_worker.py IN.npz OUT.npz JOB.json\n")
        sys.exit(2)
    run(*sys.argv[1:])
