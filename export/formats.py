"""What export can write, named once for the command line and ``ExportOptions``."""

FORMATS = ("onnx", "tflite")  # file formats converted from Keras (ORT files come from ONNX)
QUANTIZE = ("int8", "fp16")  # variants besides fp32: int8 on both formats, fp16 on TFLite
