"""MixRec (Liu et al., "Beyond Inter-Item Relations: Dynamic Adaptive Mixture-of-Experts for LLM-Based
Sequential Recommendation"): a decoder-only LLM reading item text, with adapters, fine-tuned for
next-item prediction; and its baselines LLMRec and MixRec_base.

Its own package: no backbone and nothing of MLTFR imports it, and it imports neither. It is
registered as the model ``mixrec`` in :data:`mltfrkit.models.TEXT_MODELS` (by module path, so the
backbones never load transformers). Modules, in the order of the paper:

* :mod:`~mltfrkit.mixrec.sentences`: item sentences (2.2.1) and the alignment prompt (2.2.2)
* :mod:`~mltfrkit.mixrec.llm`: the frozen LLM taken apart into its layers (Appendix C)
* :mod:`~mltfrkit.mixrec.masks`: the two inputs and the causal / context masks (2.2.2, 2.2.3, 2.3.1)
* :mod:`~mltfrkit.mixrec.cf`: NCF and BPR-MF, and their injection (2.3.2)
* :mod:`~mltfrkit.mixrec.model`: adapters, DAMoE layers, the gate, the losses (2.2.2-2.2.5, 2.3.3, 2.4)
* :mod:`~mltfrkit.mixrec.hard`: hard samples for L_cl (Appendix A)
* :mod:`~mltfrkit.mixrec.train`: training, evaluation and the result store
* :mod:`~mltfrkit.mixrec.search`: the DAMoE architecture search (2.3.3, Appendix E)

Needs the ``mixrec`` extra: ``pip install 'mltfrkit[mixrec]'`` (transformers, accelerate, botorch).
"""

from mltfrkit.mixrec.model import VARIANTS, MixRec, MixRecConfig

__all__ = ["VARIANTS", "MixRec", "MixRecConfig"]
