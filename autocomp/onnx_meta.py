"""Names that autocomp's ONNX files carry, shared by what writes them and what reads them.

A leaf module: export and quantization stamp nodes, the latency layer reads the stamps, and neither
imports the other for it.
"""

MODULE_KEY = "autocomp.module"
"""Node metadata key holding the module path whose weights the node computes."""
