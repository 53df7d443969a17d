"""The ``nnupdate`` command: thin verbs over the library.

Sub-command groups live in their own modules and import heavy frameworks (torch, onnx,
flwr) only inside the commands that need them, so ``nnupdate --help`` starts fast.
"""

from __future__ import annotations

import sys

import typer

from ..errors import BaseMismatchError, NNUpdateError

app = typer.Typer(
    name="nnupdate",
    help="Compress neural-network updates into .nnu containers, and apply them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BASE_MISMATCH = 3


def _register() -> None:
    from . import core  # noqa: F401

    for module in ("labels", "fl"):
        try:
            __import__(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:  # a group whose module is not present yet
            if exc.name != f"{__name__}.{module}":
                raise


_register()


#: commands whose extra installs everything they import (PyTorch, scikit-learn, Flower...)
EXTRA_OF_COMMAND = {"demo": "demo", "fl": "fl"}
#: optional module -> the extra that installs it, for other commands run without it
EXTRA_OF_MODULE = {
    "torch": "torch",
    "sklearn": "demo",
    "safetensors": "safetensors",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "flwr": "fl",
    "ray": "fl",
    "matplotlib": "plot",
}


def _usage_error_types() -> tuple[type[Exception], ...]:
    """click's ``ClickException`` (usage errors, bad options): typer depended on click up to
    0.2x and vendors it as ``typer._click`` since, so either module (or both) may hold it."""
    import importlib

    found = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors become one line on stderr and a nonzero exit code."""
    try:
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:  # click returns typer.Exit's code when not standalone
            return code
    except BaseMismatchError as exc:
        print(f"nnupdate: error: {exc} (use --force to apply anyway)", file=sys.stderr)
        return EXIT_BASE_MISMATCH
    except NNUpdateError as exc:
        print(f"nnupdate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print("nnupdate: aborted", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as exc:
        root = (exc.name or "").partition(".")[0]
        if root not in EXTRA_OF_MODULE:
            raise
        args = sys.argv[1:] if argv is None else argv
        command = next((a for a in args if not a.startswith("-")), "")
        extra = EXTRA_OF_COMMAND.get(command, EXTRA_OF_MODULE[root])
        print(f"nnupdate: error: this command needs {root}: pip install 'nnupdate[{extra}]'", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if isinstance(exc, _usage_error_types()):
            exc.show()  # type: ignore[attr-defined]
            return EXIT_USAGE
        if isinstance(exc, OSError):
            print(f"nnupdate: error: {exc.strerror or exc}: {getattr(exc, 'filename', '')}", file=sys.stderr)
            return EXIT_ERROR
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
