"""Users per second of the text-prompted LLM recommender (Table 4) on real ml-100k pools, per backend.

    python benchmarks/llm_speed.py --users 12 --threads 1

Backends: transformers float32 and bfloat16 (what mltfrkit.llmrec uses: the history prefix's key/values shared
by both variants, the candidates' continuations in one batch), and, when importable, llama-cpp-python on the
same GGUF file (its own KV cache: the prefix is evaluated once and rewound to for
the generation and for each candidate, one candidate at a time: llama.cpp's Python API has no padded batch). Both variants on the same prompts; prints one line per backend and
``RATIO llamacpp_vs_transformers=<users/s ratio against the faster transformers dtype>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def prompts(users: int, size: int):
    from mltfrkit.data import item_titles, load_dataset
    from mltfrkit.llmrec import PromptSet
    from mltfrkit.train.pools import PoolSpec, make_pools

    split = load_dataset("ml-100k")
    text = item_titles(split)
    pools = make_pools(split, PoolSpec(size=size, seed=0, max_users=users))
    prompt = PromptSet.for_dataset("ml-100k")
    for row in range(len(pools)):
        history = [text.get(int(i)) or "(title unknown)" for i in pools.histories[row]]
        candidates = [text.get(int(i)) or "(title unknown)" for i in pools.candidates[row]]
        system, prefix, generation = prompt.chat_parts(history, candidates)
        yield system, prefix, generation, prompt.chat_parts(history)[2], candidates


def time_transformers(items, dtype: str) -> float:
    from mltfrkit.llmrec import TransformersLM

    lm = TransformersLM(dtype=dtype)
    lm.run_user(*items[0][:4], items[0][4])  # warm-up
    start = time.perf_counter()
    for system, prefix, generation, likelihood, candidates in items:
        lm.run_user(system, prefix, generation, likelihood, candidates)
    return len(items) / (time.perf_counter() - start)


def time_llamacpp(items, threads: int) -> float:
    from llama_cpp import Llama

    from mltfrkit.llmrec.backends import TransformersLM, offline_gguf

    renderer = TransformersLM(dtype="float32")  # the same chat-template text and token ids
    llm = Llama(model_path=str(offline_gguf()), n_ctx=2048, n_threads=threads, logits_all=True, verbose=False)
    eos = llm.token_eos()

    def run(system, prefix, generation, likelihood, candidates):
        # rewinding n_tokens is llama-cpp-python's own prefix reuse (eval drops the KV cache past it);
        # save_state/load_state would copy the whole n_ctx x vocabulary logits array each time
        head_text, tail_text = renderer.render(system, prefix, generation)
        llm.reset()
        llm.eval(renderer._ids(head_text))
        head = llm.n_tokens
        llm.eval(renderer._ids(tail_text))
        for _ in range(renderer.max_new_tokens):  # greedy
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if token == eos:
                break
            llm.eval([token])
        llm.n_tokens = head
        llm.eval(renderer._ids(renderer.render(system, prefix, likelihood)[1]))
        tail = llm.n_tokens
        for title in candidates:
            llm.n_tokens = tail
            ids = renderer._ids(title) + [eos]
            llm.eval(ids)
            logits = llm.scores[tail - 1:tail - 1 + len(ids)]
            logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
            float(logp[np.arange(len(ids)), ids].mean())

    run(*items[0])
    start = time.perf_counter()
    for item in items:
        run(*item)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--pool", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"], help="transformers dtypes to time")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    items = list(prompts(args.users, args.pool))
    rates = {dtype: time_transformers(items, dtype) for dtype in args.dtypes}
    for dtype, rate in rates.items():
        print(f"transformers {dtype}: {rate:.3f} users/s ({1 / rate:.2f} s a user, both variants)")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama-cpp-python: not installed (no wheel on PyPI for this platform; pip builds llama.cpp from source)")
        return
    rate = time_llamacpp(items, args.threads)
    print(f"llama-cpp-python (GGUF Q4_1): {rate:.3f} users/s ({1 / rate:.2f} s a user, both variants)")
    print(f"RATIO llamacpp_vs_transformers={rate / max(rates.values()):.2f}")


if __name__ == "__main__":
    main()
