"""Backbones by name (case-insensitive). One file per model; all share ``SequentialRecommender``."""

from __future__ import annotations

from dataclasses import fields

from mltfrkit.models.base import BackboneConfig, SequentialRecommender
from mltfrkit.models.bert4rec import BERT4Rec, BERT4RecConfig
from mltfrkit.models.bsarec import BSARec, BSARecConfig
from mltfrkit.models.cl4srec import CL4SRec, CL4SRecConfig
from mltfrkit.models.fmlprec import FMLPRec, FMLPRecConfig
from mltfrkit.models.linrec import LinRec, LinRecConfig
from mltfrkit.models.sasrec import SASRec, SASRecConfig

BACKBONES: dict[str, type[SequentialRecommender]] = {
    "sasrec": SASRec,
    "bert4rec": BERT4Rec,
    "fmlprec": FMLPRec,
    "linrec": LinRec,
    "cl4srec": CL4SRec,
    "bsarec": BSARec,
}


# Models that read item text and train with their own entry point (an LLM does not fit the ID backbones'
# interface: it needs the user, the item text and its own checkpoints). Registered by module path, so
# importing the backbones never imports transformers. Each entry point writes runs the result store reads.
TEXT_MODELS: dict[str, str] = {
    "mixrec": "mltfrkit.mixrec.train:run_mixrec",
}


def backbone_names() -> list[str]:
    return sorted(BACKBONES)


def model_names() -> list[str]:
    """Every registered model: the ID backbones and the text models."""
    return sorted({*BACKBONES, *TEXT_MODELS})


def text_model_entry(name: str):
    """The training entry point of a text model (``mixrec``: :func:`mltfrkit.mixrec.train.run_mixrec`)."""
    from importlib import import_module

    try:
        module, function = TEXT_MODELS[name.lower()].split(":")
    except KeyError:
        raise KeyError(f"unknown text model {name!r}. Valid: {', '.join(sorted(TEXT_MODELS))}") from None
    return getattr(import_module(module), function)


def backbone_class(name: str) -> type[SequentialRecommender]:
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        if name.lower() in TEXT_MODELS:
            raise KeyError(f"{name!r} is a text model with its own trainer, not an ID backbone: train it with "
                           f"{TEXT_MODELS[name.lower()].replace(':', '.')} (see mltfrkit.models.text_model_entry)") \
                from None
        raise KeyError(f"unknown backbone {name!r}. Valid backbones: {', '.join(backbone_names())}") from None


def make_config(name: str, **overrides) -> BackboneConfig:
    """The backbone's dataclass config with its defaults, overridden by known fields only."""
    config_class = backbone_class(name).config_class
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{name} has no option(s) {unknown}; its options are {sorted(known)}")
    defaults = config_class()
    for key, value in overrides.items():  # a wrong type fails here with its name, not deep inside torch
        default = getattr(defaults, key)
        expected = (bool,) if isinstance(default, bool) else (int,) if isinstance(default, int) else \
            (int, float) if isinstance(default, float) else (type(default),) if default is not None else None
        if expected and (not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)):
            raise TypeError(f"{name} option {key}={value!r} should be {' or '.join(t.__name__ for t in expected)} "
                            f"(default {default!r})")
    return config_class(**overrides)


def build_backbone(name: str, n_items: int, **overrides) -> SequentialRecommender:
    return backbone_class(name)(n_items, make_config(name, **overrides))


__all__ = ["BACKBONES", "BERT4Rec", "BERT4RecConfig", "BSARec", "BSARecConfig", "BackboneConfig", "CL4SRec",
           "CL4SRecConfig", "FMLPRec", "FMLPRecConfig", "LinRec", "LinRecConfig", "SASRec", "SASRecConfig",
           "SequentialRecommender", "TEXT_MODELS", "backbone_class", "backbone_names", "build_backbone",
           "make_config", "model_names", "text_model_entry"]
