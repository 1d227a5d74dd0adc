"""What export can write, named once for the command line and ``ExportOptions``."""

FORMATS = ("onnx", "tflite")  # file formats converted from Keras (ORT files come from ONNX)
# Variants besides fp32: "int8" is dynamic-range (int8 weights, float activations) on
# both formats; "fp16" float16 weights on TFLite; "int8-full" static int8 with
# calibrated activation scales: full-integer TFLite (float only where a graph or
# loop hands data over), the form NPU and DSP delegates run, and on ONNX Runtime
# int8 kernels with fixed scales, so answers never depend on the batch.
# "int8-io" is int8-full with integer inputs and outputs as well (TFLite only): the
# state, memory and probabilities cross the file's boundary as int8, their scales
# and zero points in artifact.json, and the runtime quantizes and dequantizes them
# there; token ids stay int32. It is for delegates that take no float tensors.
# "int16x8" (TFLite only): int16 activations and int8 weights, calibrated, for the
# DSPs and NPUs that run 16x8 kernels (an LSTM's cell state keeps 16 bits); the
# converter has no 16x8 ARG_MAX, so the step's argmax alone runs in float, on the
# dequantized probabilities.
QUANTIZE = ("int8", "fp16", "int8-full", "int8-io", "int16x8")
TFLITE_ONLY = ("fp16", "int8-io", "int16x8")
STATIC = ("int8-full", "int8-io", "int16x8")  # calibrated on the export's own inputs
