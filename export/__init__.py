"""Export of the student's dense part to ONNX / TensorRT, parity checks."""
