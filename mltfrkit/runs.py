"""A run = dataset + backbone + model options + training options. Its key hashes all of that
plus the data's content hash, so the same run always lands in the same directory (and an
interrupted one resumes there)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mltfrkit.data import load_dataset
from mltfrkit.models import build_backbone, make_config
from mltfrkit.paths import cache_dir
from mltfrkit.train import TrainConfig, fit, write_result


@dataclass
class RunSpec:
    dataset: str
    backbone: str = "sasrec"
    model: dict = field(default_factory=dict)  # backbone config overrides
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self, data_sha256: str = "") -> dict:
        out = asdict(self)
        out["train"] = self.train.to_dict()
        out["model"] = make_config(self.backbone, **self.model).to_dict()  # resolved defaults, not just overrides
        out["backbone"] = self.backbone.lower()
        out["data_sha256"] = data_sha256
        return out

    def key(self, data_sha256: str) -> str:
        payload = json.dumps(self.to_dict(data_sha256), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def runs_root(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("MLTFR_RUNS_DIR") or cache_dir("runs"))


def run_training(spec: RunSpec, data_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                 root: str | os.PathLike | None = None, progress: bool = True, log=print) -> dict:
    split = load_dataset(spec.dataset, data_dir)
    model = build_backbone(spec.backbone, split.n_items, **spec.model)
    run_dir = runs_root(root) / f"{split.name}-{spec.backbone.lower()}-{spec.key(split.source_sha256)}"
    if log:
        stats = split.stats()
        log(f"{split.name}: {stats['users']} users, {stats['items']} items, avg length {stats['avg_length']:.2f}; "
            f"{spec.backbone} on {sum(p.numel() for p in model.parameters()):,} parameters; run dir {run_dir}")
    result = fit(model, split, spec.train, run_dir=run_dir, run_config=spec.to_dict(split.source_sha256),
                 progress=progress, log=log)
    result["run_dir"] = str(run_dir)
    write_result(run_dir / "result.json", result)
    if out:
        write_result(out, result)
    return result
