"""Check that a TFLite file runs on the plain LiteRT interpreter: builtin ops
only (no Flex / Select TF ops, no custom ops, no TensorList), weights stored as
constants rather than resource variables (those load and then return NaN).

The integer mode, for full-integer files, also reads every subgraph (a ``WHILE``
body too) and refuses any float arithmetic: a float tensor may exist only where a
graph or a loop hands data over (a subgraph's inputs and outputs, a control-flow
op's operands), and the only ops touching one are the ``QUANTIZE``,
``DEQUANTIZE`` and ``CAST`` (an attention mask) at that boundary and the
control-flow op itself; and a mask CAST from the ids that only a QUANTIZE reads. An int8-io file has no float input or output at all
(``integer_boundary``)."""
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


def check_tflite(path: Path, allow_while: bool, integer: bool = False,
                 argmax_in_float: bool = False) -> list[str]:
    """The file's op names; raise OpGuardError if any is not allowed (``integer``:
    also if any op computes in float, see ``float_ops``, which ``argmax_in_float``
    is passed to)."""
    ops = tflite_ops(path)
    bad = refused_ops(ops, allow_while)
    if bad:
        raise OpGuardError(f"{path.name} uses ops the plain LiteRT interpreter cannot run "
                           f"or that are not allowed here: {', '.join(bad)}")
    if integer:
        floating = float_ops(path.read_bytes(), argmax_in_float)
        if floating:
            raise OpGuardError(f"{path.name} is not full-integer: "
                               + "; ".join(floating[:8])
                               + (f" and {len(floating) - 8} more" if len(floating) > 8 else ""))
    return ops


CONTROL_FLOW = {"WHILE", "IF", "CALL"}
BOUNDARY = {"QUANTIZE", "DEQUANTIZE", "CAST"}  # CAST: a mask handed over as float


def float_ops(data: bytes, argmax_in_float: bool = False) -> list[str]:
    """Where a TFLite file computes in float, every subgraph read from the file's
    schema: "subgraph NAME: OP on float32 tensor T" for each op that touches a
    float tensor and is not a boundary op (``QUANTIZE`` from, or ``DEQUANTIZE`` to,
    a tensor the subgraph or a control-flow op hands over; the control-flow op
    itself). ``argmax_in_float`` (int16x8): an ``ARG_MAX`` may read probabilities a
    ``DEQUANTIZE`` made for it alone. An empty list means full-integer."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    floats = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16, schema.TensorType.FLOAT64}
    found = []
    for sg in model.subgraphs:
        code = [max(model.operatorCodes[op.opcodeIndex].builtinCode,
                    model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
                for op in sg.operators]
        handed = set(sg.inputs) | set(sg.outputs)
        for op, c in zip(sg.operators, code):
            if names.get(c) in CONTROL_FLOW:
                handed |= set(op.inputs) | set(op.outputs)
        label = (sg.name or b"").decode() or "main"
        handed |= _converted(sg, code, names, floats, "CAST", "QUANTIZE")
        argmax = _converted(sg, code, names, floats, "DEQUANTIZE", "ARG_MAX") \
            if argmax_in_float else set()
        for op, c in zip(sg.operators, code):
            name = names.get(c, str(c))
            touched = [i for i in list(op.inputs) + list(op.outputs)
                       if i >= 0 and sg.tensors[i].type in floats]
            if not touched or name in CONTROL_FLOW:
                continue
            if name in BOUNDARY and all(i in handed | argmax for i in touched):
                continue
            if name == "ARG_MAX" and all(i in argmax for i in touched):
                continue
            tensor = sg.tensors[touched[0]]
            found.append(f"subgraph {label}: {name} on float tensor "
                         f"{(tensor.name or b'').decode()!r}")
    return found


def _converted(sg, code, names, floats, maker: str, reader: str) -> set[int]:
    """Float tensors that a ``maker`` op makes from integer tensors and only
    ``reader`` ops read. CAST then QUANTIZE: a 0/1 mask made from the token ids and
    turned straight to int8 (an int8-io encoder's ``memory_mask``); DEQUANTIZE then
    ARG_MAX: int16x8's argmax. No float arithmetic touches them."""
    made_by, read_by = {}, {}
    for op, c in zip(sg.operators, code):
        for i in op.outputs:
            made_by[i] = (names.get(c), op)
        for i in op.inputs:
            read_by.setdefault(i, []).append(names.get(c))
    found = set()
    for i, (name, op) in made_by.items():
        if name == maker and i >= 0 and sg.tensors[i].type in floats and \
                all(sg.tensors[j].type not in floats for j in op.inputs if j >= 0) and \
                read_by.get(i) and set(read_by[i]) == {reader}:
            found.add(i)
    return found


def integer_boundary(path: Path) -> tuple[tuple[str, float, int], ...]:
    """An int8-io file's quantized inputs and outputs, by signature name: ``(name,
    scale, zero_point)`` each, read from the file's own tensors. Raises OpGuardError
    if any input or output is still float (the variant promises none)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    found, floating = [], []
    for details in (runner.get_input_details(), runner.get_output_details()):
        for name, d in sorted(details.items()):
            if np.issubdtype(d["dtype"], np.floating):
                floating.append(name)
            elif d["dtype"] == np.int8:
                scale, zero = d["quantization"]
                found.append((name, float(scale), int(zero)))
    if floating:
        raise OpGuardError(f"{path.name} has float inputs or outputs, not int8: "
                           f"{', '.join(floating)}")
    return tuple(found)


# TF's quantizer is not deterministic: converting the same graph on the same
# calibration left one gate SPLIT of the unrolled encoder in float in some runs and
# not in others (TF 2.21, the demo model: 2 of 4 runs). The cause found (the first
# step's shortcut, see GraphBuilder.first_step_shortcut) is avoided; a file the
# integer guard still refuses is converted again, a bounded number of times.
INTEGER_TRIES = 4


def convert_guarded(make_fn, path: Path, precision: str, metadata, calibration,
                    allow_while: bool, log=print) -> list[str]:
    """Convert ``make_fn()`` to TFLite at ``path`` and guard it (int8-full: in the
    integer mode, converting again up to ``INTEGER_TRIES`` times); returns its op
    names, raises OpGuardError with the last refusal."""
    from . import convert
    from .formats import STATIC

    tries = INTEGER_TRIES if precision in STATIC else 1
    for attempt in range(1, tries + 1):
        fn = make_fn()
        convert.to_tflite(fn, path, precision, metadata, calibration)
        try:
            ops = check_tflite(path, allow_while, integer=precision in STATIC,
                               argmax_in_float=precision == "int16x8")
            if precision == "int8-io":
                integer_boundary(path)
            return ops
        except OpGuardError as e:
            if attempt == tries:
                raise
            log(f"  {path.name}: conversion {attempt} of {tries} kept a float op "
                f"({str(e).split(': ', 2)[-1][:100]}...); converting again", flush=True)
    raise AssertionError("unreachable")


def xnnpack_refusal(path: Path) -> str | None:
    """Why LiteRT's default CPU delegate (XNNPACK, what the runtime uses) cannot run
    the file, or None when it runs it: one call on zeros at batch 1 and at batch 3.
    (Measured: XNNPACK claims the int8 SELECT of a masked encoder, then fails to
    prepare it; LiteRT's own kernels run it.)"""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    for batch in (1, 3):
        runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()
        args = {name: np.zeros([batch if d == -1 else d for d in spec["shape_signature"]],
                               spec["dtype"])
                for name, spec in runner.get_input_details().items()}
        try:
            runner(**args)
        except (RuntimeError, ValueError) as e:
            return str(e).splitlines()[0][:200]
    return None
