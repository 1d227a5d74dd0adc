"""Check that a TFLite file runs on the plain LiteRT interpreter: builtin ops
only (no Flex / Select TF ops, no custom ops, no TensorList), weights stored as
constants rather than resource variables (those load and then return NaN)."""
from __future__ import annotations

from pathlib import Path

from .errors import OpGuardError

FORBIDDEN = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE", "CUSTOM"}


def tflite_ops(path: Path) -> list[str]:
    """The sorted op names of a TFLite file, as the standalone LiteRT interpreter loads it
    (no delegates); raises OpGuardError when the interpreter refuses the file."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        # Without XNNPACK, so the graph's own ops are listed, not the delegate's.
        interpreter = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise OpGuardError(f"{path.name}: the standalone LiteRT interpreter refuses it: "
                           f"{str(e).splitlines()[0]}") from None
    return sorted({d["op_name"] for d in interpreter._get_ops_details()})


def refused_ops(ops: list[str], allow_while: bool) -> list[str]:
    """The ops of ``ops`` that a builtin-only graph may not use; ``WHILE`` is allowed
    only where ``allow_while`` (the fused graph and the looped encoder)."""
    return [op for op in ops if op in FORBIDDEN or op.startswith("Flex")
            or "TensorList" in op or (op == "WHILE" and not allow_while)]


def check_tflite(path: Path, allow_while: bool) -> list[str]:
    """The file's op names; raise OpGuardError if any is not allowed."""
    ops = tflite_ops(path)
    bad = refused_ops(ops, allow_while)
    if bad:
        raise OpGuardError(f"{path.name} uses ops the plain LiteRT interpreter cannot run "
                           f"or that are not allowed here: {', '.join(bad)}")
    return ops
