"""Compressors: each takes a model (or an ONNX file) and a plan and returns a new one, leaving its input untouched.

``prune`` (structured channel pruning), ``sparsity`` (unstructured magnitude
sparsity), ``distill`` (student construction and knowledge distillation) act on
PyTorch modules; ``quantize`` acts on the exported ONNX graph. Import the
submodule you need; this package re-exports nothing so that importing one
compressor never pulls in the others' dependencies.
"""
