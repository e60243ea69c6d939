"""``torch.compile`` (inductor) for the two hot calls of a run: the training step's forward + loss
(``model.loss``; its backward comes compiled with it, through AOTAutograd) and full-ranking scoring
(``model.score_all``). ``TrainConfig.compile`` picks them: False (eager, the default), True (both),
``"train"`` or ``"score"``.

Choices, and why:

- The model's *methods* are compiled, not the module (``torch.compile(model)`` would wrap it in an
  ``OptimizedModule`` whose ``state_dict`` keys carry an ``_orig_mod.`` prefix): checkpoints,
  best-weights copies and resume see the plain module, so a compiled run's checkpoint loads into an
  eager model and back.
- Dynamic shapes: the batch dimension is marked dynamic (``maybe_mark_dynamic``) on every call, so the
  last, smaller batch of an epoch and the last evaluation chunk reuse the graph compiled for the first.
  Shapes that depend on the data (the targets a batch scores, FMLP-Rec/BSARec's prefix windows) sit
  behind graph breaks and become dynamic at their first change (dynamo's automatic dynamic shapes):
  a run compiles a small, fixed number of graphs in its first epoch and none per batch afterwards
  (``benchmarks/compile_speed.py`` counts them; ``graphs_compiled`` reads the counter).
- On CPU, random numbers (dropout) come from ATen's generator (inductor's ``fallback_random``): inductor's
  own CPU random kernels were slower here than eager dropout (90 ms against 60 ms for SASRec's seven
  dropouts of a B 128 step), and with ATen's stream a compiled step draws exactly the dropout masks of
  an eager one, so the two can be compared to 1e-4 with dropout on. On CUDA inductor's Philox RNG is kept
  (fast there; masks then differ from eager's, the distribution does not).
- ``torch.compiler.reset()`` before compiling a run: dynamo keeps compiled code per Python code
  object, shared by every model in the process, so a process that trains many runs (the local executor,
  MLTFR's two rounds) would otherwise reach ``recompile_limit`` and fall back to eager silently.
  Inductor's on-disk graph cache makes the second compile of an identical graph cheap.
"""

from __future__ import annotations

from typing import Callable

import torch

COMPILE_MODES = (False, True, "train", "score")


def normalise_mode(mode) -> bool | str:
    """``TrainConfig.compile`` as one of COMPILE_MODES ("all"/"none" and the strings "true"/"false" accepted)."""
    aliases = {"all": True, "true": True, "none": False, "false": False, "eager": False}
    if isinstance(mode, str) and mode.lower() in aliases:
        mode = aliases[mode.lower()]
    if mode not in COMPILE_MODES or (not isinstance(mode, (bool, str))):
        raise ValueError(f"compile must be one of False, True (training step and scoring), 'train' or 'score', "
                         f"not {mode!r}")
    return mode


def compiles_training(mode) -> bool:
    return mode is True or mode == "train"


def compiles_scoring(mode) -> bool:
    return mode is True or mode == "score"


def graphs_compiled() -> int:
    """How many graphs dynamo has compiled in this process so far (recompilations included)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


_checked: set[str] = set()


def check_inductor(device: torch.device) -> None:
    """Compile and run a two-operation function on ``device`` once per process, so that a machine where
    inductor cannot work (no C++ compiler for its CPU backend, no Triton for CUDA) fails before training
    starts, with what to do, rather than deep inside the first step."""
    if device.type in _checked:
        return
    try:
        probe = torch.compile(lambda x: torch.relu(x) * 2.0 + 1.0, backend="inductor", dynamic=False)
        out = probe(torch.arange(4.0, device=device))
        if out.tolist() != [1.0, 3.0, 5.0, 7.0]:
            raise RuntimeError(f"a compiled probe computed {out.tolist()} instead of [1, 3, 5, 7]")
    except Exception as error:  # inductor raises many kinds (BackendCompilerFailed, CppCompileError, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = ("its CPU backend needs a C++ compiler (g++ or clang++ on PATH, or CXX=...)" if device.type == "cpu"
                else "its CUDA backend needs Triton (pip install triton, matching this torch)")
        raise RuntimeError(f"torch.compile (inductor) does not work on {device} with torch {torch.__version__}: "
                           f"{first}. {hint[0].upper() + hint[1:]}; or train without compile (drop --compile)") from error
    _checked.add(device.type)


def _batch_dynamic(fn: Callable) -> Callable:
    """``fn`` with dimension 0 of every tensor argument marked dynamic before the call."""
    def call(*args, **kwargs):
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and value.dim():
                torch._dynamo.maybe_mark_dynamic(value, 0)
        return fn(*args, **kwargs)

    call.__wrapped__ = fn
    return call


def compile_function(fn: Callable, device: torch.device) -> Callable:
    options = {"fallback_random": device.type == "cpu"}  # see the module docstring
    return _batch_dynamic(torch.compile(fn, backend="inductor", options=options))


class Steps:
    """The training step's loss and the scoring function of ``model``, compiled where ``mode`` says.

    ``loss(seqs, generator, scored=None)`` and ``score(history)`` behave as ``model.loss`` and
    ``model.score_all``; the model itself is not wrapped or changed."""

    def __init__(self, model: torch.nn.Module, mode, device: torch.device | str = "cpu"):
        self.mode = normalise_mode(mode)
        device = torch.device(device)
        self.loss, self.score = model.loss, model.score_all
        if self.mode is False:
            return
        check_inductor(device)
        torch.compiler.reset()
        if compiles_training(self.mode):
            self.loss = compile_function(model.loss, device)
        if compiles_scoring(self.mode):
            self.score = compile_function(model.score_all, device)
