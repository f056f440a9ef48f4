"""Names that autocomp's ONNX files carry, shared by what writes them and what reads them.

A leaf module: export and quantization stamp nodes, the latency layer reads the stamps, and neither
imports the other for it.
"""

MODULE_KEY = "autocomp.module"
"""Node metadata key holding the module path whose weights the node computes."""


def module_path(scopes: list[str]) -> str:
    """The PyTorch module path of the exporter's name scopes, outermost first: ``[layer1, layer1.0, conv1]`` ->
    ``layer1.0.conv1``. A scope is either an attribute name under the one before it (``conv1``) or, for a child
    of a Sequential or ModuleList, that parent's own segment with the index (``layer1.0``, ``expand.0``)."""
    path, previous = "", ""
    for part in scopes:
        path = path + part[len(previous):] if previous and part.startswith(previous + ".") else (f"{path}.{part}" if path else part)
        previous = part
    return path
