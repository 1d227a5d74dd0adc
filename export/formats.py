"""What export can write, named once for the command line and ``ExportOptions``."""

FORMATS = ("onnx", "tflite")  # file formats converted from Keras (ORT files come from ONNX)
# Variants besides fp32: "int8" is dynamic-range (int8 weights, float activations) on
# both formats; "fp16" float16 weights on TFLite; "int8-full" full-integer TFLite
# (int8 weights and activations, calibrated, float only where a graph or loop hands
# data over), the form NPU and DSP delegates run.
QUANTIZE = ("int8", "fp16", "int8-full")
TFLITE_ONLY = ("fp16", "int8-full")
