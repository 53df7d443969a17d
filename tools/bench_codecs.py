"""Rate-distortion and speed of every registered codec against NNCodec, zstd and fp16/bf16.

One command::

    python tools/bench_codecs.py              # full run (several minutes)
    python tools/bench_codecs.py --quick      # small run, under a minute or so

For every workload (see ``tools/workloads.py``) and every codec registered in
``nnupdate.codecs.registered_codecs()`` at several rates (the codec's rate knob is swept:
``max_rel_error`` / ``levels`` / ``s`` / ``fraction`` / ``level``), it measures, from the
bytes actually written and decoded:

* bits/param = 8 x container bytes (headers included) / parameters of the workload;
* relative L2 error ||d - d^|| / ||d|| of the decoded deltas, and the M-weighted relative
  distortion sum |d|^M (d - d^)^2 / sum |d|^M d^2 (M = 2);
* encode and decode MB/s of float32 input (median of ``--repeats`` runs in this process
  for the default codec and NNCodec's timing point, ``--sweep-repeats`` for the rest;
  encode is ``encode_with_report``, i.e. rate control + coding + the library's own
  verification decode, decode is ``nnupdate.decode``);
* the empirical order-0 entropy of each quantizer's symbols (obtained by re-running the
  codec's array stages with ``run_array_stages``) beside the entropy stage's measured
  payload, and the header overhead (container bytes minus payloads);

and the same for NNCodec (``tools/nncodec_runner.py``) over a QP grid x dependent
quantization on/off x lambda_scale 0/1, whose lower envelope is the peer's curve.
Outputs (``--out DIR``, default ``out/bench``): ``results.json``, ``results.csv``,
``rd.png`` (bits/param vs relative L2 error, one curve per codec, one panel per workload)
and ``summary.md`` (the README tables); a rich table goes to the terminal (``--json``
prints the JSON instead).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools import nncodec_runner, workloads  # noqa: E402

M_WEIGHT = 2.0
TARGETS = (0.05, 0.1, 0.3)
LARGE_TENSOR = 1 << 16
#: points below this relative error (lossless, fp16/bf16 casts) are drawn as level lines
LOSSLESS_ERR = 3e-3
DEFAULT_CODEC = "uniform"

#: the rate knob of a codec family and the values swept (full, quick)
KNOBS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "max_rel_error": ((0.03, 0.05, 0.1, 0.2, 0.3, 0.5), (0.05, 0.1, 0.3)),
    "levels": ((2, 4, 8, 16, 32), (3, 8, 32)),
    "s": ((1, 2, 4, 8, 16), (1, 4, 16)),
    "fraction": ((0.01, 0.03, 0.1, 0.3), (0.01, 0.1)),
}
#: fixed variants measured in addition to each family's default options
VARIANTS = {"zstd": ("zstd:level=3", "zstd:level=19"), "rd": ("rd", "rd:coder=rans"), "m22": ("m22", "m22:M=2")}


# ----------------------------------------------------------------------------- measurement


@dataclass
class Point:
    """One codec at one rate on one workload (figures summed over the workload's items)."""

    workload: str
    codec: str  # curve label (family or variant)
    spec: str  # the requested codec string
    resolved: str = ""  # the codec string after prepare() (e.g. the chosen step), first item
    bytes: int = 0
    payload_bytes: int = 0
    params: int = 0
    float_params: int = 0
    sq_err: float = 0.0
    sq_norm: float = 0.0
    m_err: float = 0.0
    m_norm: float = 0.0
    encode_s: float = 0.0
    decode_s: float = 0.0
    h0_bits: float = float("nan")  # order-0 entropy of the quantizer symbols (quantized tensors)
    coded_payload_bytes: int = 0  # payloads of the tensors h0_bits covers
    large_overhead_max: float = float("nan")  # worst payload/H0 - 1 over tensors >= 64K symbols
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bpp(self) -> float:
        return 8.0 * self.bytes / self.params if self.params else float("nan")

    @property
    def rel_err(self) -> float:
        return math.sqrt(self.sq_err / self.sq_norm) if self.sq_norm > 0 else 0.0

    @property
    def rel_dm(self) -> float:
        return self.m_err / self.m_norm if self.m_norm > 0 else 0.0

    @property
    def encode_mbs(self) -> float:
        return 4 * self.float_params / 1e6 / self.encode_s if self.encode_s > 0 else float("nan")

    @property
    def decode_mbs(self) -> float:
        return 4 * self.float_params / 1e6 / self.decode_s if self.decode_s > 0 else float("nan")

    @property
    def h0_bpp(self) -> float:
        return self.h0_bits / self.params if self.params else float("nan")

    @property
    def stage_overhead(self) -> float:
        """Entropy-stage payload over the symbols' order-0 entropy, minus 1."""
        if not (self.h0_bits > 0):
            return float("nan")
        return 8 * self.coded_payload_bytes / self.h0_bits - 1

    @property
    def header_overhead(self) -> float:
        return (self.bytes - self.payload_bytes) / self.payload_bytes if self.payload_bytes else float("nan")

    def row(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for name in ("bpp", "rel_err", "rel_dm", "encode_mbs", "decode_mbs", "h0_bpp", "stage_overhead", "header_overhead"):
            out[name] = getattr(self, name)
        out.update(self.extra)
        return out


def order0_bits(symbols: np.ndarray) -> float:
    """n * H(empirical distribution) of an integer array, in bits."""
    flat = np.asarray(symbols).reshape(-1)
    if flat.size == 0:
        return 0.0
    _, counts = np.unique(flat, return_counts=True)
    p = counts / flat.size
    return float(-(counts * np.log2(p)).sum())


def _accumulate_distortion(point: Point, truth: np.ndarray, decoded: np.ndarray) -> None:
    x = truth.astype(np.float64).reshape(-1)
    e = decoded.astype(np.float64).reshape(-1) - x
    w = np.abs(x) ** M_WEIGHT
    point.sq_err += float(e @ e)
    point.sq_norm += float(x @ x)
    point.m_err += float(w @ (e * e))
    point.m_norm += float(w @ (x * x))


def _decoded_delta(change: Any, dtypes: Any, Combine: Any, truth: np.ndarray) -> np.ndarray:
    if change.combine == Combine.ADD:
        return dtypes.to_float64(change.data, change.dtype)
    if change.combine in (Combine.XOR, Combine.ULP):
        return truth  # exact by construction (bit patterns XORed, or moved by whole ULPs)
    if change.combine == Combine.KEEP:
        return np.zeros_like(truth)
    raise RuntimeError(f"{change.name}: unexpected combine {change.combine.name} in a delta update")


_WARMED: set[str] = set()


def measure_ours(workload: workloads.Workload, label: str, spec: str, updates: Sequence[Any], repeats: int) -> Point:
    """Encode/decode every item of ``workload`` with ``spec``; everything measured from bytes."""
    from nnupdate import dtypes
    from nnupdate.codecs.base import ArraySpec
    from nnupdate.codecs.pipeline import run_array_stages
    from nnupdate.codecs.presets import parse_codec
    from nnupdate.format import Combine, Role
    from nnupdate.update import decode, encode_with_report, pipeline_dtype

    point = Point(workload.name, label, spec)
    h0_total = 0.0
    has_symbols = False
    large: list[float] = []
    for update in updates:
        enc_times, dec_times = [], []
        if spec not in _WARMED:
            # one untimed warm-up run first: numba kernels compile on first use
            _WARMED.add(spec)
            decoded = decode(encode_with_report(update, spec).data)
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            report = encode_with_report(update, spec)
            t1 = time.perf_counter()
            decoded = decode(report.data)
            t2 = time.perf_counter()
            enc_times.append(t1 - t0)
            dec_times.append(t2 - t1)
        point.encode_s += statistics.median(enc_times)
        point.decode_s += statistics.median(dec_times)
        point.bytes += len(report.data)
        point.payload_bytes += sum(t.payload_bytes for t in report.tensors)
        point.params += sum(c.size for c in update.changes.values())
        if not point.resolved:
            point.resolved = report.codec
        # distortion of the decoded float deltas
        # per tensor, from the decoded update: a TGRP group's payload is shared among its members
        payload_of = {n: c.payload_bytes for n, c in decoded.changes.items()}
        try:
            chosen = parse_codec(report.codec)
        except Exception:
            chosen = parse_codec(spec).prepare(update)
        for name, change in update.changes.items():
            if not dtypes.is_float(change.dtype):
                continue
            point.float_params += change.size
            truth = change.data if change.combine == Combine.ADD else np.zeros(change.shape)
            if change.combine not in (Combine.ADD, Combine.KEEP):
                continue
            if change.role == Role.STATISTIC:
                continue  # running statistics: coded apart, outside the error (EncodeReport.relative_error)
            _accumulate_distortion(point, truth, _decoded_delta(decoded.changes[name], dtypes, Combine, truth))
            # order-0 entropy of the quantizer's symbols (only for pipelines with array stages)
            if change.combine != Combine.ADD:
                continue
            plan = chosen.plan(change)
            if not plan.prefix:
                continue
            spec_in = ArraySpec(change.shape, pipeline_dtype(change.dtype, plan.combine))
            symbols, _, _ = run_array_stages(plan.prefix, change.values_for(plan.combine).reshape(change.shape), spec_in)
            bits = order0_bits(symbols)
            h0_total += bits
            has_symbols = True
            point.coded_payload_bytes += payload_of[name]
            if symbols.size >= LARGE_TENSOR and bits > 0:
                large.append(8 * payload_of[name] / bits - 1)
    if has_symbols:
        point.h0_bits = h0_total
    if large:
        point.large_overhead_max = max(large)
    return point


def measure_zstd_direct(workload: workloads.Workload, level: int, repeats: int) -> Point:
    """zstd on the raw float32 deltas themselves (no container, no codec policy): the general-purpose baseline."""
    import zstandard

    point = Point(workload.name, "zstd-f32", f"zstd-f32:level={level}")
    for item in workload.float_deltas():
        names = list(item)
        raw = b"".join(np.ascontiguousarray(item[n], dtype="<f4").tobytes() for n in names)
        enc_times, dec_times = [], []
        packed, restored = b"", b""
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            packed = zstandard.ZstdCompressor(level=level).compress(raw)
            t1 = time.perf_counter()
            restored = zstandard.ZstdDecompressor().decompress(packed)
            t2 = time.perf_counter()
            enc_times.append(t1 - t0)
            dec_times.append(t2 - t1)
        point.encode_s += statistics.median(enc_times)
        point.decode_s += statistics.median(dec_times)
        point.bytes += len(packed)
        point.payload_bytes += len(packed)
        decoded = np.frombuffer(restored, dtype="<f4")
        offset = 0
        for n in names:
            size = item[n].size
            _accumulate_distortion(point, item[n], decoded[offset : offset + size])
            offset += size
            point.params += size
            point.float_params += size
    return point


def codec_specs(quick: bool, only: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(curve label, codec spec) for every registered codec and rate."""
    import typing

    from nnupdate.codecs import registered_codecs
    from nnupdate.codecs.presets import parse_codec
    from nnupdate.errors import NNUpdateError

    wanted = set(only) if only else None
    out: list[tuple[str, str]] = []
    for name, cls in sorted(registered_codecs().items()):
        if wanted is not None and name not in wanted:
            continue
        fields = {f.name for f in dataclasses.fields(cls)}
        knob = next((k for k in KNOBS if k in fields), None)
        for variant in VARIANTS.get(name, (name,)):
            if knob is None:
                out.append((variant, variant))
                continue
            hints = typing.get_type_hints(cls)
            values = KNOBS[knob][1 if quick else 0]
            sep = "," if ":" in variant else ":"
            for v in values:
                value = hints[knob](v)
                out.append((variant, f"{variant}{sep}{knob}={value}"))
    valid = []
    for label, spec in out:
        try:
            parse_codec(spec)
        except NNUpdateError as exc:
            print(f"skipping {spec}: {exc}", file=sys.stderr)
            continue
        valid.append((label, spec))
    return valid


# ----------------------------------------------------------------------------- NNCodec


def nncodec_grid(workload: workloads.Workload, quick: bool) -> list[nncodec_runner.NNCodecConfig]:
    """QP grid around the workload's delta scale (step ~ 2^(qp/4)), x DQ x lambda_scale."""
    deltas = [d for item in workload.float_deltas() for d in item.values()]
    sq = sum(float(np.sum(d.astype(np.float64) ** 2)) for d in deltas)
    n = sum(d.size for d in deltas)
    rms = math.sqrt(sq / n) if n else 1.0
    lo = int(math.floor(4 * math.log2(rms * 0.03)))
    hi = int(math.ceil(4 * math.log2(rms * 6.0)))
    stride = 6 if quick else 3
    qps = list(range(lo, hi + 1, stride))
    configs = []
    for dq in (False, True):
        for lam in (0.0,) if quick else (0.0, 1.0):
            configs += [nncodec_runner.NNCodecConfig(qp, dq, lam) for qp in qps]
    return configs


def measure_nncodec(selected: Sequence[workloads.Workload], quick: bool, repeats: int) -> tuple[list[Point], dict[str, Point]]:
    """RD grid points per workload, and a timing point per workload (``repeats`` runs)."""
    jobs = []
    owners: list[tuple[str, int, list[nncodec_runner.NNCodecConfig]]] = []
    speed: dict[str, nncodec_runner.NNCodecConfig] = {}
    for w in selected:
        grid = nncodec_grid(w, quick)
        # timing point: the middle QP with DQ (NNCodec's default mode), repeated
        qps = sorted({c.qp for c in grid})
        speed_cfg = nncodec_runner.NNCodecConfig(qps[len(qps) // 2], dq=True, lambda_scale=0.0, repeats=repeats)
        speed[w.name] = speed_cfg
        for k, item in enumerate(w.float_deltas()):
            configs = [*grid, speed_cfg]
            jobs.append((item, configs))
            owners.append((w.name, k, configs))
    results = nncodec_runner.encode_items(jobs)
    by_key: dict[tuple[str, str], Point] = {}
    timing: dict[str, Point] = {}
    deltas = {w.name: w.float_deltas() for w in selected}
    for (wname, k, configs), row in zip(owners, results):
        item = deltas[wname][k]
        for j, (cfg, res) in enumerate(zip(configs, row)):
            is_speed = j == len(configs) - 1
            key = (wname, "speed" if is_speed else cfg.label())
            point = timing.setdefault(wname, Point(wname, "nncodec", cfg.label())) if is_speed else by_key.setdefault(
                key, Point(wname, "nncodec", cfg.label(), resolved=cfg.label(), extra={"qp": cfg.qp, "dq": cfg.dq, "lambda_scale": cfg.lambda_scale})
            )
            point.bytes += len(res.bitstream)
            point.payload_bytes += len(res.bitstream)
            n = sum(int(np.size(v)) for v in item.values())
            point.params += n
            point.float_params += n
            point.encode_s += res.encode_s
            point.decode_s += res.decode_s
            for name, value in item.items():
                _accumulate_distortion(point, value, res.reconstructed[name])
    return list(by_key.values()), timing


# ----------------------------------------------------------------------------- analysis


def pareto(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Lower-left envelope of (error, bpp): each kept point has fewer bits than every point with less error."""
    front: list[tuple[float, float]] = []
    for err, bpp in sorted(p for p in points if math.isfinite(p[0]) and math.isfinite(p[1]) and p[1] > 0):
        if not front or bpp < front[-1][1]:
            front.append((err, bpp))
    return front


def bpp_at(points: Iterable[tuple[float, float]], target: float) -> float:
    """Envelope bits/param at relative error ``target``: log-rate interpolated against log-error."""
    front = pareto(points)
    if not front or target < front[0][0] * (1 - 1e-9):
        return float("nan")
    best = float("nan")
    for (e0, b0), (e1, b1) in zip(front, front[1:]):
        if e0 <= target <= e1 and e0 > 0:
            t = (math.log(target) - math.log(e0)) / (math.log(e1) - math.log(e0)) if e1 > e0 else 0.0
            best = math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
            break
    if math.isnan(best) and front[-1][0] <= target:
        best = front[-1][1]  # the coarsest point already meets the target
    return best


def curves(points: Sequence[Point]) -> dict[tuple[str, str], list[Point]]:
    out: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        if not p.error:
            out.setdefault((p.workload, p.codec), []).append(p)
    return out


def rd_summary(points: Sequence[Point], names: Sequence[str]) -> list[dict[str, Any]]:
    """Per workload and target: our best codec vs NNCodec's envelope and the order-0 bound."""
    rows = []
    by_curve = curves(points)
    for w in names:
        for target in TARGETS:
            ours = {}
            for (wn, codec), pts in by_curve.items():
                if wn != w or codec == "nncodec" or len(pts) < 2:
                    continue
                ours[codec] = bpp_at([(p.rel_err, p.bpp) for p in pts], target)
            finite = {k: v for k, v in ours.items() if math.isfinite(v)}
            best_codec = min(finite, key=lambda k: finite[k]) if finite else ""
            nnc_pts = by_curve.get((w, "nncodec"), [])
            nnc = bpp_at([(p.rel_err, p.bpp) for p in nnc_pts], target) if nnc_pts else float("nan")
            uni = by_curve.get((w, DEFAULT_CODEC), [])
            h0 = bpp_at([(p.rel_err, p.h0_bpp) for p in uni], target) if uni else float("nan")
            best = finite.get(best_codec, float("nan"))
            # the same curve without container/tensor headers: how much of the gap is framing
            best_pts = by_curve.get((w, best_codec), [])
            payload_only = bpp_at([(p.rel_err, 8.0 * p.payload_bytes / p.params) for p in best_pts], target) if best_pts else float("nan")
            rows.append(
                {
                    "workload": w,
                    "target_rel_err": target,
                    "best_codec": best_codec,
                    "best_bpp": best,
                    "nncodec_bpp": nnc,
                    "ratio_vs_nncodec": best / nnc if nnc > 0 else float("nan"),
                    "best_payload_bpp": payload_only,
                    "payload_ratio_vs_nncodec": payload_only / nnc if nnc > 0 else float("nan"),
                    "uniform_h0_bpp": h0,
                    "ratio_vs_uniform_h0": best / h0 if h0 > 0 else float("nan"),
                    "per_codec": ours,
                }
            )
    return rows


def rate_control_summary(points: Sequence[Point]) -> list[dict[str, Any]]:
    """For codecs swept by ``max_rel_error``: the landed error as a fraction of the target (goal: 0.9..1)."""
    import re

    groups: dict[tuple[str, str], list[float]] = {}
    for p in points:
        m = re.search(r"max_rel_error=([0-9.eE+-]+)", p.spec)
        if p.error or not m or p.codec == "nncodec":
            continue
        groups.setdefault((p.codec, p.workload), []).append(p.rel_err / float(m.group(1)))
    rows = []
    for (codec, w), ratios in sorted(groups.items()):
        inside = sum(0.9 <= r <= 1.0 + 1e-9 for r in ratios)
        rows.append({"codec": codec, "workload": w, "min": min(ratios), "max": max(ratios), "inside": inside, "points": len(ratios)})
    return rows


def speed_summary(
    points: Sequence[Point], timing: dict[str, Point], names: Sequence[str], codecs: Sequence[str] = (DEFAULT_CODEC,)
) -> list[dict[str, Any]]:
    """Speed and entropy-stage figures of ``codecs`` (default codec first) against NNCodec's timing point."""
    rows = []
    for w in names:
        for codec in dict.fromkeys(codecs):
            mine = [p for p in points if p.workload == w and p.codec == codec and not p.error]
            if not mine:
                continue
            # the codec at max_rel_error=0.05 (the default operating point) if measured, else its middle rate
            ref = next((p for p in mine if p.spec.endswith("max_rel_error=0.05")), mine[len(mine) // 2])
            peer = timing.get(w)
            rows.append(
                {
                    "workload": w,
                    "codec": ref.spec,
                    "encode_mbs": ref.encode_mbs,
                    "decode_mbs": ref.decode_mbs,
                    "nncodec": peer.spec if peer else "",
                    "nncodec_encode_mbs": peer.encode_mbs if peer else float("nan"),
                    "nncodec_decode_mbs": peer.decode_mbs if peer else float("nan"),
                    "encode_speedup": ref.encode_mbs / peer.encode_mbs if peer else float("nan"),
                    "decode_speedup": ref.decode_mbs / peer.decode_mbs if peer else float("nan"),
                    "h0_bpp": ref.h0_bpp,
                    "bpp": ref.bpp,
                    "rel_err": ref.rel_err,
                    "stage_overhead": ref.stage_overhead,
                    "large_overhead_max": ref.large_overhead_max,
                    "header_overhead": ref.header_overhead,
                }
            )
    return rows


# ----------------------------------------------------------------------------- output


def _f(x: float, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _pct(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{100 * x:+.2f}%"


def markdown(
    rd_rows: Sequence[dict[str, Any]], speed_rows: Sequence[dict[str, Any]], command: str, rc_rows: Sequence[dict[str, Any]] = ()
) -> str:
    lines = [
        f"Regenerate: `{command}`",
        "",
        "Bits/param at equal relative L2 error (envelopes interpolated in log-rate; NNCodec: QP grid x DQ on/off x lambda_scale 0/1, 1-D tensors at the weights' QP):",
        "",
        "| workload | rel. L2 err | best nnupdate codec | bits/param | NNCodec bits/param | ratio | same codec, payloads only (ratio) | uniform order-0 bound | best / bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rd_rows:
        lines.append(
            f"| {r['workload']} | {r['target_rel_err']} | {r['best_codec'] or '-'} | {_f(r['best_bpp'])} | {_f(r['nncodec_bpp'])} | "
            f"{_f(r['ratio_vs_nncodec'], '.2f')} | {_f(r['best_payload_bpp'])} ({_f(r['payload_ratio_vs_nncodec'], '.2f')}) | "
            f"{_f(r['uniform_h0_bpp'])} | {_f(r['ratio_vs_uniform_h0'], '.2f')} |"
        )
    if any(r["workload"] == "resnet56-all" for r in rd_rows):
        lines += [
            "",
            "`resnet56-all` includes the BatchNorm running statistics, whose deltas dominate the norm (||d|| about 1162 against 9.4 "
            "for the weights): its relative error measures the statistics, not the weights, so that row is not a test of weight coding.",
        ]
    lines += [
        "",
        f"Speed (MB/s of float32 input, one process; the default codec `{DEFAULT_CODEC}` median of several runs, others one run) vs NNCodec's timing point in the same run, "
        "and each codec's entropy stage vs the order-0 entropy of its quantizer's symbols:",
        "",
        "| workload | codec | rel. L2 err | encode MB/s | decode MB/s | NNCodec enc / dec MB/s | speed-up enc / dec | payload vs H0 (all / worst >=64K tensor) | header / payload |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in speed_rows:
        lines.append(
            f"| {r['workload']} | `{r['codec']}` | {_f(r['rel_err'], '.3f')} | {_f(r['encode_mbs'], '.1f')} | {_f(r['decode_mbs'], '.1f')} | "
            f"{_f(r['nncodec_encode_mbs'], '.2f')} / {_f(r['nncodec_decode_mbs'], '.2f')} | "
            f"{_f(r['encode_speedup'], '.1f')}x / {_f(r['decode_speedup'], '.1f')}x | "
            f"{_pct(r['stage_overhead'])} / {_pct(r['large_overhead_max'])} | {_pct(r['header_overhead'])} |"
        )
    if rc_rows:
        lines += [
            "",
            "Rate control (`max_rel_error=e`): landed relative error / e over the swept targets (goal 0.9 to 1):",
            "",
            "| codec | workload | min | max | inside [0.9, 1] |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['codec']} | {r['workload']} | {r['min']:.3f} | {r['max']:.3f} | {r['inside']}/{r['points']} |" for r in rc_rows
        ]
    return "\n".join(lines) + "\n"


def plot(points: Sequence[Point], names: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.5 * rows), squeeze=False)
    by_curve = curves(points)
    labels = sorted({c for (_, c) in by_curve if c != "nncodec"})
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(labels)}
    styles = {c: ("-", "--", ":")[i // 10 % 3] for i, c in enumerate(labels)}
    for ax, w in zip(axes.flat, names):
        for (wn, codec), pts in sorted(by_curve.items()):
            if wn != w:
                continue
            near_lossless = [p.bpp for p in pts if p.rel_err < LOSSLESS_ERR]
            xy = sorted((p.rel_err, p.bpp) for p in pts if p.rel_err >= LOSSLESS_ERR and p.bpp > 0)
            if near_lossless and codec != "nncodec":  # lossless / cast baselines: a level line
                ax.axhline(min(near_lossless), color=colors[codec], ls=":", lw=1, label=f"{codec} (err<{LOSSLESS_ERR:g})")
            if not xy:
                continue
            if codec == "nncodec":
                ax.scatter(*zip(*xy), s=8, color="0.6", label="NNCodec grid")
                env = pareto(xy)
                ax.plot(*zip(*env), color="black", lw=2.2, label="NNCodec envelope")
            elif len(xy) == 1:
                ax.scatter(*zip(*xy), marker="x", color=colors[codec], label=codec)
            else:
                ax.plot(*zip(*xy), marker="o", ms=3, color=colors[codec], ls=styles[codec], label=codec)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(LOSSLESS_ERR, 5.0)
        ax.set_title(w)
        ax.set_xlabel("relative L2 error")
        ax.set_ylabel("bits / parameter")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, lbls = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                lbls.append(lab)
    fig.legend([handles[lab] for lab in lbls], lbls, loc="lower center", ncol=min(8, len(lbls)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_tables(points: Sequence[Point], rd_rows: Sequence[dict[str, Any]], speed_rows: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    table = Table(title="codec measurements (bits/param from bytes written, headers included)")
    for col in ("workload", "codec spec", "bits/param", "rel L2", "rel d_M", "enc MB/s", "dec MB/s", "H0 bpp", "stage vs H0", "worst>=64K", "header"):
        table.add_column(col, justify="left" if col in ("workload", "codec spec") else "right")
    for p in points:
        if p.error:
            table.add_row(p.workload, p.spec, f"[red]{p.error[:60]}[/red]", *[""] * 8)
            continue
        table.add_row(
            p.workload, p.spec, _f(p.bpp), _f(p.rel_err, ".4f"), _f(p.rel_dm, ".4f"), _f(p.encode_mbs, ".1f"),
            _f(p.decode_mbs, ".1f"), _f(p.h0_bpp), _pct(p.stage_overhead), _pct(p.large_overhead_max), _pct(p.header_overhead),
        )
    console.print(table)
    t2 = Table(title="bits/param at equal relative L2 error: best nnupdate codec vs NNCodec envelope")
    for col in ("workload", "target", "best codec", "bpp", "NNCodec bpp", "ratio", "uniform H0 bpp"):
        t2.add_column(col)
    for r in rd_rows:
        t2.add_row(r["workload"], str(r["target_rel_err"]), r["best_codec"] or "-", _f(r["best_bpp"]), _f(r["nncodec_bpp"]),
                   _f(r["ratio_vs_nncodec"], ".2f"), _f(r["uniform_h0_bpp"]))
    console.print(t2)
    t3 = Table(title="default codec speed vs NNCodec (MB/s float32)")
    for col in ("workload", "codec", "enc", "dec", "NNC enc", "NNC dec", "x enc", "x dec"):
        t3.add_column(col)
    for r in speed_rows:
        t3.add_row(r["workload"], r["codec"], _f(r["encode_mbs"], ".1f"), _f(r["decode_mbs"], ".1f"), _f(r["nncodec_encode_mbs"], ".2f"),
                   _f(r["nncodec_decode_mbs"], ".2f"), _f(r["encode_speedup"], ".1f"), _f(r["decode_speedup"], ".1f"))
    console.print(t3)


# ----------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    from nnupdate.update import diff

    names = [n for n in args.workloads.split(",") if n] if args.workloads else (
        ["fedavg-mid", "gennorm-b1"] if args.quick else list(workloads.NAMES)
    )
    selected = workloads.load(names, args.cache, log=lambda s: print(s, file=sys.stderr))
    if args.quick:
        # a quick run codes one item per workload
        selected = [dataclasses.replace(w, items=w.items[:1]) for w in selected]
    specs = codec_specs(args.quick, [c for c in args.codecs.split(",") if c] if args.codecs else None)
    repeats = args.repeats or (1 if args.quick else 3)
    points: list[Point] = []
    started = time.perf_counter()
    # smallest workloads first, so each codec's one-off warm-up (numba compilation) is cheap
    for w in sorted(selected, key=lambda w: w.num_parameters):
        updates = [diff(base, new) for base, new in w.items]
        for label, spec in specs:
            runs = repeats if label == DEFAULT_CODEC else args.sweep_repeats
            try:
                p = measure_ours(w, label, spec, updates, runs)
            except Exception as exc:  # a broken codec must not hide the others' figures
                p = Point(w.name, label, spec, error=f"{type(exc).__name__}: {exc}")
                if args.verbose:
                    traceback.print_exc()
            points.append(p)
            print(f"[{time.perf_counter() - started:6.1f}s] {w.name} {spec}: bpp={_f(p.bpp)} err={_f(p.rel_err, '.4f')} {p.error[:80]}",
                  file=sys.stderr)
        if not args.codecs or "zstd" in args.codecs.split(","):
            for level in (3, 19):
                points.append(measure_zstd_direct(w, level, args.sweep_repeats))
    timing: dict[str, Point] = {}
    nncodec_note = ""
    if args.no_nncodec:
        nncodec_note = "NNCodec skipped (--no-nncodec)"
    elif not nncodec_runner.available():
        nncodec_note = "NNCodec not available"
    else:
        try:
            nnc_points, timing = measure_nncodec(selected, args.quick, repeats)
            points += nnc_points
        except nncodec_runner.NNCodecFailed as exc:
            nncodec_note = f"NNCodec failed: {exc}"
    if nncodec_note:
        print(nncodec_note, file=sys.stderr)
    print(f"[{time.perf_counter() - started:6.1f}s] measurements done", file=sys.stderr)
    order = {w.name: i for i, w in enumerate(selected)}
    points.sort(key=lambda p: (order[p.workload], p.codec == "nncodec", p.spec))
    rd_rows = rd_summary(points, [w.name for w in selected])
    best = [r["best_codec"] for r in rd_rows if r["best_codec"]]
    speed_rows = speed_summary(points, timing, [w.name for w in selected], [DEFAULT_CODEC, *best])
    command = "python tools/bench_codecs.py" + (" --quick" if args.quick else "") + (f" --workloads {args.workloads}" if args.workloads else "")
    result = {
        "command": command,
        "nncodec": nncodec_note or "measured",
        "repeats": repeats,
        "sweep_repeats": args.sweep_repeats,
        "workloads": {w.name: {"description": w.description, "items": len(w.items), "params": w.num_parameters} for w in selected},
        "points": [p.row() for p in points],
        "nncodec_timing": {k: v.row() for k, v in timing.items()},
        "rd_summary": rd_rows,
        "speed_summary": speed_rows,
        "rate_control": rate_control_summary(points),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    rows = [p.row() for p in points]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.md").write_text(markdown(rd_rows, speed_rows, command, result["rate_control"]))
    plot(points, [w.name for w in selected], out / "rd.png")
    if args.json:
        print(json.dumps(result, indent=1, default=float))
    else:
        print_tables(points, rd_rows, speed_rows)
        if nncodec_note:
            print(nncodec_note)
        print(f"wrote {out}/results.json, results.csv, summary.md, rd.png")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="nnupdate codecs vs NNCodec: rate-distortion and speed")
    parser.add_argument("--workloads", default="", help=f"comma list from {', '.join(workloads.NAMES)} (default: all; --quick: 2)")
    parser.add_argument("--codecs", default="", help="comma list of registered codec names (default: all)")
    parser.add_argument("--quick", action="store_true", help="few workloads, rates and QPs (about a minute)")
    parser.add_argument("--out", default=str(REPO / "out" / "bench"))
    parser.add_argument("--cache", default=str(workloads.DEFAULT_CACHE))
    parser.add_argument("--repeats", type=int, default=0, help="timing runs of the default codec and NNCodec's speed point (default 3, quick 1)")
    parser.add_argument("--sweep-repeats", type=int, default=1, help="timing runs of every other point (default 1)")
    parser.add_argument("--no-nncodec", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the JSON results instead of tables")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
