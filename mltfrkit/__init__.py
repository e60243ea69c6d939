"""mltfrkit: a study toolkit for MLTFR (Multi-LLM Token Filtering and Routing, arXiv 2604.18200).

The package flows one way: ``data`` (readers, leave-one-out splits) -> ``models``
(ID-based backbones with a plug-in hook) -> ``train`` (loop, metrics, checkpoints) -> results.
"""

__version__ = "0.1.0"
