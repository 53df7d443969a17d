"""``nnupdate demo``: the main job end to end on embedded data, nothing downloaded.

Pretrains a small CNN on part of the digits (the "base"), fine-tunes it (the "new"
model), encodes new - base, applies the decoded update to the base and compares the
reconstructed model with the exact one.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np


def run_demo(codec: str = "uniform", steps: int = 60, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    from .adapters.torch import from_state_dict, to_state_dict
    from .tasks import digits
    from .update import apply, decode, diff, encode_with_report

    x_train, y_train, x_test, y_test = digits.load_arrays(seed)
    model = digits.make_model(seed)
    # The base: trained on the first five classes only, so the fine-tuning update is real work.
    first = y_train < 5
    digits.train(model, x_train[first], y_train[first], steps=150, seed=seed)
    base_state = from_state_dict(model.state_dict())
    acc_base, _ = digits.evaluate(model, x_test, y_test)

    tuned = copy.deepcopy(model)
    digits.train(tuned, x_train, y_train, steps=steps, seed=seed + 1, lr=0.02)
    new_state = from_state_dict(tuned.state_dict())
    acc_exact, _ = digits.evaluate(tuned, x_test, y_test)

    update = diff(base_state, new_state, metadata={"task": "digits-cnn", "steps": str(steps)})
    report = encode_with_report(update, codec)
    rebuilt_state = apply(base_state, decode(report.data))
    rebuilt = copy.deepcopy(model)
    rebuilt.load_state_dict(to_state_dict(rebuilt_state))
    acc_rebuilt, _ = digits.evaluate(rebuilt, x_test, y_test)
    diff_logits = np.abs(digits.logits(rebuilt, x_test) - digits.logits(tuned, x_test)).max()
    parameters = sum(v.size for v in new_state.values())
    return {
        "codec": report.codec,
        "parameters": int(parameters),
        "bytes": len(report.data),
        "bits_per_parameter": report.bits_per_parameter,
        "ratio_vs_float32": 4 * report.coded_parameters / len(report.data),
        "relative_l2_error": report.relative_error,
        "accuracy_base": acc_base,
        "accuracy_exact": acc_exact,
        "accuracy_reconstructed": acc_rebuilt,
        "max_logit_diff": float(diff_logits),
    }
