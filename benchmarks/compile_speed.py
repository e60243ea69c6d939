"""What ``torch.compile`` (inductor, ``TrainConfig.compile``) buys per backbone, measured side by side.

For each backbone (and SASRec + MLTFR in the cheap setting: the offline preset's first 3 experts,
``max_vocab`` 2000), a fresh subprocess builds the model on the dataset (B 128, L 50, d 64: every
backbone at its defaults) and measures, for eager and compiled alike:

- equality: one training step (forward, loss, backward) from the same weights, RNG state and batch,
  eager and compiled: the largest absolute difference of the loss and of every gradient, and of the
  full-ranking scores of one evaluation chunk (must be <= 1e-4; dropout stays on: on CPU the compiled
  step draws ATen's dropout masks, mltfrkit/train/compiled.py);
- compile cost: the seconds of the first compiled training steps (the first batch, then one of the
  epoch's smaller last size) and of the first compiled scoring calls;
- recompilation: graphs dynamo compiled during a first and a second full epoch of compiled steps
  (every batch, the smaller last one included) followed by a full evaluation; the second epoch must
  compile none;
- speed: the median time of a step (forward + backward + Adam) and of a full-ranking evaluation of
  ``--eval-users`` users, eager and compiled, in ``--repeats`` interleaved blocks of ``--block``
  steps (eager, compiled, eager, ...), so both see the same machine load; ratio = eager / compiled.

    python benchmarks/compile_speed.py --data-dir ../shared/data [--dataset Pantry] [--backbones sasrec ...]
        [--threads 1] [--repeats 5] [--block 5]

The last line reads ``RATIOS sasrec=<x> ... sasrec+mltfr=<x>`` (training step, eager / compiled), preceded
by ``SCORE_RATIOS`` (scoring) and ``MAX_DIFF`` (the largest step or score difference per backbone).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time

CONFIGS = ["sasrec", "bert4rec", "fmlprec", "linrec", "cl4srec", "bsarec", "sasrec+mltfr"]
CHEAP_MLTFR = {"n_experts": 3, "max_vocab": 2000}


def spec_for(name: str, dataset: str):
    from mltfrkit.runs import RunSpec

    backbone, _, plugin = name.partition("+")
    return RunSpec(dataset, backbone, plugin=plugin or "none", plugin_options=CHEAP_MLTFR if plugin else {})


def one_step(model, loss_fn, batch, seed: int):
    """Loss and gradients of one training step from the global RNG state ``seed``."""
    import torch

    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = loss_fn(batch, torch.Generator().manual_seed(seed))
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def step_difference(model, batch, scoring_history, device) -> dict:
    """Largest |eager - compiled| of one step's loss and gradients, and of one chunk's scores."""
    import torch

    from mltfrkit.train.compiled import Steps

    twin = copy.deepcopy(model)
    model.train(), twin.train()
    eager_loss, eager_grads = one_step(model, model.loss, batch, seed=1)
    compiled = Steps(twin, True, device)
    loss, grads = one_step(twin, compiled.loss, batch, seed=1)
    if set(grads) != set(eager_grads):
        raise AssertionError(f"compiled step has gradients for {sorted(set(grads) ^ set(eager_grads))} that eager "
                             f"has not (or the reverse)")
    grad_diff = max(float((grads[n] - eager_grads[n]).abs().max()) for n in grads)
    model.eval(), twin.eval()
    eager_scores, scores = model.score_all(scoring_history), compiled.score(scoring_history)
    finite = torch.isfinite(eager_scores)
    if not torch.equal(finite, torch.isfinite(scores)):
        raise AssertionError("compiled scoring puts -inf (or NaN) where eager scoring does not")
    model.zero_grad(set_to_none=True)
    return {"loss_diff": float((loss - eager_loss).abs()), "grad_diff": grad_diff,
            "score_diff": float((scores[finite] - eager_scores[finite]).abs().max())}


def measure(name: str, dataset: str, data_dir: str | None, threads: int, repeats: int, block: int,
            eval_users: int) -> dict:
    import torch

    from mltfrkit.data import load_dataset
    from mltfrkit.runs import build_model
    from mltfrkit.train.compiled import Steps, graphs_compiled
    from mltfrkit.train.metrics import evaluate, pad_left
    from mltfrkit.train.trainer import training_sequences

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    split = load_dataset(dataset, data_dir)
    spec = spec_for(name, dataset)
    model, _ = build_model(spec, split.n_items)
    L = model.config.max_len
    data = training_sequences(split, L)
    hist, targets = split.eval_pairs("test")
    hist, targets = hist[:eval_users], targets[:eval_users]
    generator = torch.Generator().manual_seed(0)
    batches = [data[start:start + 128] for start in range(0, len(data), 128)]
    out = {"name": name, "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "batches": len(batches), "last_batch": len(batches[-1])}
    out.update(step_difference(model, batches[0], pad_left(hist[:256], L), device))

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step(loss_fn, batch):
        model.train()
        loss = loss_fn(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    eager = Steps(model, False)
    compiled = Steps(model, True, device)  # resets dynamo: every graph counted below is this run's
    began, graphs = time.perf_counter(), graphs_compiled()
    step(compiled.loss, batches[0])
    step(compiled.loss, batches[-1])
    out["train_compile_s"] = time.perf_counter() - began
    began = time.perf_counter()
    evaluate(model, hist, targets, score=compiled.score)
    out["score_compile_s"] = time.perf_counter() - began
    out["warmup_graphs"] = graphs_compiled() - graphs
    for epoch in (1, 2):  # every batch size of an epoch, then the evaluation, as the trainer calls them
        graphs = graphs_compiled()
        for batch in batches:
            step(compiled.loss, batch)
        evaluate(model, hist, targets, score=compiled.score)
        out[f"epoch{epoch}_graphs"] = graphs_compiled() - graphs

    times = {"eager": [], "compiled": [], "eager_score": [], "compiled_score": []}
    full = [b for b in batches if len(b) == 128][:block]
    for _ in range(repeats):
        for kind, steps in (("eager", eager), ("compiled", compiled)):
            began = time.perf_counter()
            for batch in full:
                step(steps.loss, batch)
            times[kind].append((time.perf_counter() - began) / len(full))
            began = time.perf_counter()
            evaluate(model, hist, targets, score=steps.score)
            times[f"{kind}_score"].append(time.perf_counter() - began)
    for kind, values in times.items():
        out[f"{kind}_ms"] = 1000 * statistics.median(values)
    out["step_ratio"] = out["eager_ms"] / out["compiled_ms"]
    out["score_ratio"] = out["eager_score_ms"] / out["compiled_score_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--dataset", default="Pantry")
    parser.add_argument("--backbones", nargs="+", default=CONFIGS, help=f"of {CONFIGS}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved eager/compiled blocks")
    parser.add_argument("--block", type=int, default=5, help="training steps per block")
    parser.add_argument("--eval-users", type=int, default=2048, help="users per timed full-ranking evaluation")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted eager/compiled difference")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return
    unknown = sorted(set(args.backbones) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; valid: {CONFIGS}")

    import torch

    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.dataset}, B 128, L 50, d 64; medians of "
          f"{args.repeats} interleaved blocks of {args.block} steps; ratio = eager / compiled")
    print(f"{'model':13s} {'params':>9s} {'step ms':>8s} {'compiled':>8s} {'x step':>7s} {'score ms':>9s} "
          f"{'compiled':>8s} {'x score':>7s} {'compile s':>9s} {'graphs':>6s} {'ep1':>4s} {'ep2':>4s} "
          f"{'max |diff|':>10s}", flush=True)
    rows = []
    for name in args.backbones:
        child = {"name": name, "dataset": args.dataset, "data_dir": args.data_dir, "threads": args.threads,
                 "repeats": args.repeats, "block": args.block, "eval_users": args.eval_users}
        done = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", json.dumps(child)],
                              capture_output=True, text=True)
        if done.returncode:
            print(f"{name:13s} failed:\n{done.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        r["max_diff"] = max(r["loss_diff"], r["grad_diff"], r["score_diff"])
        rows.append(r)
        flag = "" if r["max_diff"] <= args.tolerance else f"  > {args.tolerance:g}!"
        print(f"{name:13s} {r['params']:9,d} {r['eager_ms']:8.1f} {r['compiled_ms']:8.1f} {r['step_ratio']:7.2f} "
              f"{r['eager_score_ms']:9.1f} {r['compiled_score_ms']:8.1f} {r['score_ratio']:7.2f} "
              f"{r['train_compile_s'] + r['score_compile_s']:9.1f} {r['warmup_graphs']:6d} {r['epoch1_graphs']:4d} "
              f"{r['epoch2_graphs']:4d} {r['max_diff']:10.2e}{flag}", flush=True)
    print("graphs: compiled while warming up (first batch, last batch size, first evaluation); ep1/ep2: compiled "
          "during a full epoch plus an evaluation afterwards (0 = no recompilation)")
    print("MAX_DIFF " + " ".join(f"{r['name']}={r['max_diff']:.2e}" for r in rows))
    print("SCORE_RATIOS " + " ".join(f"{r['name']}={r['score_ratio']:.2f}" for r in rows))
    print("RATIOS " + " ".join(f"{r['name']}={r['step_ratio']:.2f}" for r in rows))


if __name__ == "__main__":
    main()
