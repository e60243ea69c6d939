"""Peak memory of pulling one embedding tensor out of a larger safetensors checkpoint.

Writes a synthetic checkpoint (a ~1 GiB float32 embedding plus ``--others`` GiB of other
tensors), then, each in a fresh process, measures peak RSS (``ru_maxrss``) of:

- ``baseline``: importing mltfrkit.vocab and doing nothing;
- ``extract``: ``mltfrkit.vocab`` converting the embedding into a cached float16 table;
- ``full-load`` (only with ``--compare-full`` and the ``safetensors`` package): loading
  every tensor, which is what building the model would cost.

    python benchmarks/vocab_partial_read.py [--rows 65536 --dim 4096 --others 2] [--compare-full]

Prints a JSON summary. Needs about (1 + others) GiB of free disk in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GIB = 1 << 30


def write_checkpoint(path: Path, rows: int, dim: int, other_gib: float) -> dict:
    """Stream a safetensors file to disk without holding any tensor in memory.

    The embedding comes first on disk after a small tensor, the bulk ("layers") after it,
    so a reader that loaded everything would pay for all of it.
    """
    other_rows = int(other_gib * GIB) // (dim * 4)
    tensors = [
        ("model.norm.weight", (dim,)),
        ("model.embed_tokens.weight", (rows, dim)),
        ("model.layers.0.mlp.weight", (other_rows // 2, dim)),
        ("lm_head.weight", (other_rows - other_rows // 2, dim)),
    ]
    header, offset = {}, 0
    for name, shape in tensors:
        size = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    chunk_rows = max(1, (64 << 20) // (dim * 4))
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        for index, (_name, shape) in enumerate(tensors):
            n_rows = shape[0] if len(shape) == 2 else 1
            width = shape[-1]
            for start in range(0, n_rows, chunk_rows):
                n = min(chunk_rows, n_rows - start)
                # Deterministic, cheap values; row r of tensor i holds (i + 1) * 1e-3 * (r % 97).
                values = ((np.arange(start, start + n, dtype=np.float32) % 97) * (index + 1) * 1e-3)[:, None]
                handle.write(np.broadcast_to(values, (n, width)).astype("<f4").tobytes())
    return {"checkpoint_bytes": path.stat().st_size, "embedding_bytes": rows * dim * 4}


CHILD = {
    "baseline": "import mltfrkit.vocab",
    "extract": (
        "from mltfrkit.vocab import load_table; t = load_table({path!r}); "
        "assert t.matrix.shape == ({rows}, {dim}); assert abs(float(t.matrix[5, 0]) - 0.01) < 1e-4"
    ),
    "full-load": "from safetensors.numpy import load_file; tensors = load_file({path!r}); assert len(tensors) == 4",
}


PEAK_RSS = """
import resource
try:  # VmHWM belongs to this process image; ru_maxrss can carry the parent's peak across exec
    with open("/proc/self/status") as status:
        print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")))
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_of(code: str, env: dict) -> tuple[int, float]:
    """Run ``code`` in a fresh interpreter; return its peak RSS in bytes and wall time."""
    script = f"{code}\n{PEAK_RSS}"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--others", type=float, default=2.0, help="GiB of non-embedding tensors")
    parser.add_argument("--workdir", default=None, help="where to write the checkpoint (default: a temp dir)")
    parser.add_argument("--compare-full", action="store_true", help="also measure loading every tensor")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="mltfr-partial-read-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        folder = work / "synthetic-model"
        folder.mkdir(exist_ok=True)
        (folder / "tokens.txt").write_text("".join(f"tok{i}\n" for i in range(args.rows)))
        checkpoint = folder / "model.safetensors"
        started = time.perf_counter()
        sizes = write_checkpoint(checkpoint, args.rows, args.dim, args.others)
        write_seconds = time.perf_counter() - started

        env = dict(os.environ, MLTFR_CACHE_DIR=str(work / "cache"), OMP_NUM_THREADS="1")
        # load_table(<file>, tokens=...) is what `mltfrkit vocab fetch FILE --tokens` runs.
        extract_code = CHILD["extract"].replace("load_table({path!r})", "load_table({path!r}, tokens={tokens!r})")
        results = {}
        for label, code in (("baseline", CHILD["baseline"]), ("extract", extract_code)):
            rss, seconds = peak_rss_of(code.format(path=str(checkpoint), tokens=str(folder / "tokens.txt"),
                                                   rows=args.rows, dim=args.dim), env)
            results[label] = {"peak_rss_mb": round(rss / 1e6, 1), "seconds": round(seconds, 2)}
        if args.compare_full:
            try:
                import safetensors  # noqa: F401
            except ImportError:
                results["full-load"] = "skipped: safetensors not installed"
            else:
                rss, seconds = peak_rss_of(CHILD["full-load"].format(path=str(checkpoint)), env)
                results["full-load"] = {"peak_rss_mb": round(rss / 1e6, 1), "seconds": round(seconds, 2)}

        extra = results["extract"]["peak_rss_mb"] - results["baseline"]["peak_rss_mb"]
        summary = {
            "checkpoint_mb": round(sizes["checkpoint_bytes"] / 1e6, 1),
            "embedding_tensor_mb": round(sizes["embedding_bytes"] / 1e6, 1),
            "write_seconds": round(write_seconds, 1),
            **results,
            "extract_minus_baseline_mb": round(extra, 1),
            "extract_peak_over_tensor": round(results["extract"]["peak_rss_mb"] / (sizes["embedding_bytes"] / 1e6), 3),
        }
        print(json.dumps(summary, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
