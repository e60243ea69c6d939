"""Backbones by name (case-insensitive). One file per model; all share ``SequentialRecommender``."""

from __future__ import annotations

from dataclasses import fields

from mltfrkit.models.base import BackboneConfig, SequentialRecommender
from mltfrkit.models.sasrec import SASRec, SASRecConfig

BACKBONES: dict[str, type[SequentialRecommender]] = {
    "sasrec": SASRec,
}


def backbone_names() -> list[str]:
    return sorted(BACKBONES)


def backbone_class(name: str) -> type[SequentialRecommender]:
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}. Valid backbones: {', '.join(backbone_names())}") from None


def make_config(name: str, **overrides) -> BackboneConfig:
    """The backbone's dataclass config with its defaults, overridden by known fields only."""
    config_class = backbone_class(name).config_class
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{name} has no option(s) {unknown}; its options are {sorted(known)}")
    return config_class(**overrides)


def build_backbone(name: str, n_items: int, **overrides) -> SequentialRecommender:
    return backbone_class(name)(n_items, make_config(name, **overrides))


__all__ = ["BACKBONES", "BackboneConfig", "SASRec", "SASRecConfig", "SequentialRecommender", "backbone_class",
           "backbone_names", "build_backbone", "make_config"]
