"""MixRec's cost on this machine, and what it projects to on a GPU.

Measures, for a real LLM (default SmolLM2-135M-Instruct, offline) on a real dataset (default ml-100k)
at a stated reduced scale: training tokens/s and seconds per step (forward + backward of every loss
term), evaluation tokens/s (full ranking), the one-time cost of Appendix A's text embeddings, and from
those the seconds per epoch. FLOPs per training step and per evaluated user are counted by
``torch.utils.flop_counter.FlopCounterMode`` on the same batches (matmuls and attention, what a GPU
spends its time on), and the GPU projection is ``FLOPs / (peak x utilisation)``: both are arguments,
and the defaults (RTX 3090, the paper's GPU: 71 TFLOP/s dense bf16 tensor peak; 30% utilisation) are
assumptions stated in the output, not measurements.

    OMP_NUM_THREADS=1 python benchmarks/mixrec_speed.py --history-len 10 --max-tokens 16 --batch-size 4 \\
        --steps 3 --precision float32 bfloat16 --out figures/mixrec_speed.json

Reductions against the paper (section 3.1.4): the sentence length (``--max-tokens``, paper 30), the
history length (``--history-len``; the paper states none), the LLM (SmolLM2-135M, 30 layers x 576,
for the paper's OPT-125M, 12 x 768), batch size (paper 5-8 per GPU, Table 3).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def count_tokens(model):
    """Wrap ``model.hidden_states`` to count the real tokens of every batch it runs."""
    counter = {"tokens": 0}
    inner = model.hidden_states

    def counted(batch, slots):
        counter["tokens"] += int(batch.valid.sum())
        return inner(batch, slots)
    model.hidden_states = counted
    return counter


def measure(args, precision: str) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from mltfrkit.data import load_dataset
    from mltfrkit.mixrec.hard import llm_text_embeddings
    from mltfrkit.mixrec.model import MixRecConfig
    from mltfrkit.mixrec.train import MixRecSpec, MixRecTrainConfig, build_mixrec, training_windows

    split = load_dataset(args.dataset, args.data_dir)
    spec = MixRecSpec(args.dataset, llm=args.llm,
                      model=MixRecConfig(variant=args.variant, max_tokens=args.max_tokens, history_len=args.history_len,
                                         gradient_checkpointing=args.gradient_checkpointing),
                      train=MixRecTrainConfig(batch_size=args.batch_size, device="cpu", precision=precision))
    model = build_mixrec(spec, split, "cpu", args.data_dir)
    started = time.perf_counter()
    subset = min(args.embed_items, split.n_items)
    original = model.n_items
    model.n_items = subset  # time the text embeddings on a share of the items, then scale
    llm_text_embeddings(model)
    model.n_items = original
    embed_seconds = (time.perf_counter() - started) * split.n_items / subset
    users, windows = training_windows(split, np.arange(split.n_users), args.history_len)
    generator = torch.Generator().manual_seed(0)
    from mltfrkit.mixrec.hard import hard_negative_sets

    model.hard_negatives = hard_negative_sets(split.train_sequences(), split.n_items,
                                              torch.randn(split.n_items + 1, 8, generator=generator), 0.005)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5)
    counter = count_tokens(model)
    autocast = precision == "bfloat16"

    def step(rows):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            losses = model.losses(users[rows], windows[rows], generator)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()

    batches = [torch.arange(i * args.batch_size, (i + 1) * args.batch_size) for i in range(args.steps + 1)]
    model.train()
    step(batches[0])  # warm-up, not timed
    counter["tokens"] = 0
    started = time.perf_counter()
    for rows in batches[1:]:
        step(rows)
    train_seconds = (time.perf_counter() - started) / args.steps
    train_tokens = counter["tokens"] / args.steps
    with FlopCounterMode(display=False) as flops:
        step(batches[1])
    train_flops = flops.get_total_flops()

    model.eval()
    histories, _ = split.eval_pairs("valid")
    from mltfrkit.train.metrics import pad_left

    eval_rows = np.arange(args.eval_users)
    history = pad_left([histories[u] for u in eval_rows], args.history_len)
    counter["tokens"] = 0
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model.score_all(torch.as_tensor(eval_rows), history)
    eval_seconds = (time.perf_counter() - started) / args.eval_users
    eval_tokens = counter["tokens"] / args.eval_users
    with FlopCounterMode(display=False) as flops, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model.score_all(torch.as_tensor(eval_rows), history)
    eval_flops = flops.get_total_flops() / args.eval_users

    steps_per_epoch = math.ceil(len(windows) / args.batch_size)
    epoch_seconds = steps_per_epoch * train_seconds + split.n_users * eval_seconds  # + one validation pass
    epoch_flops = steps_per_epoch * train_flops + split.n_users * eval_flops
    gpu = args.gpu_tflops * 1e12 * args.utilisation
    return {"precision": precision, "train_seconds_per_step": train_seconds, "train_tokens_per_step": train_tokens,
            "train_tokens_per_second": train_tokens / train_seconds, "eval_tokens_per_second": eval_tokens / eval_seconds,
            "eval_seconds_per_user": eval_seconds, "train_flops_per_step": train_flops, "eval_flops_per_user": eval_flops,
            "steps_per_epoch": steps_per_epoch, "cpu_seconds_per_epoch": epoch_seconds,
            "text_embedding_seconds_once": embed_seconds, "flops_per_epoch": epoch_flops,
            "gpu_seconds_per_epoch_projected": epoch_flops / gpu,
            "cpu_hours_for_paper_epochs": args.paper_epochs * epoch_seconds / 3600,
            "gpu_hours_for_paper_epochs_projected": args.paper_epochs * epoch_flops / gpu / 3600,
            "trainable_parameters": sum(p.numel() for p in params)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--llm", default="SmolLM2-135M")
    parser.add_argument("--variant", default="mixrec", choices=["llmrec", "mixrec_base", "mixrec"])
    parser.add_argument("--history-len", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up step)")
    parser.add_argument("--eval-users", type=int, default=16)
    parser.add_argument("--embed-items", type=int, default=128, help="items timed for Appendix A's text embeddings")
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--gpu-tflops", type=float, default=71.0, help="GPU peak, TFLOP/s (RTX 3090 bf16 tensor)")
    parser.add_argument("--utilisation", type=float, default=0.3, help="assumed share of the peak reached")
    parser.add_argument("--paper-epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"settings": {k: v for k, v in vars(args).items() if k != "out"},
              "assumptions": f"GPU projection = FLOPs / ({args.gpu_tflops} TFLOP/s x {args.utilisation}); FLOPs counted "
                             f"by torch's FlopCounterMode (matmuls, attention)", "runs": []}
    for precision in args.precision:
        result = measure(args, precision)
        report["runs"].append(result)
        print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
