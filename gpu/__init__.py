"""Numerics: arrays in, arrays and numbers out (NumPy now; CuPy, torch, MONAI, TensorRT later).

Rule: no DICOM, no database, no queue.
"""
