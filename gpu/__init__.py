"""Numerics: arrays in, arrays and numbers out.

Preprocessing, motion correction, layer surfaces, the en-face spectrum, cone detection and
quantification are written once against ``gpu.xp`` (NumPy, or CuPy on a GPU; NumPy is the
reference). The networks are MONAI models run by PyTorch, or by TensorRT from their ONNX export
(``gpu.predictor``). The phantom generators and the training code that fits the bundled models
live here too, beside the numerics they exercise.

Rule: no DICOM, no database, no queue.
"""
