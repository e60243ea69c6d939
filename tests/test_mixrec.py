"""MixRec on tiny data (issue 19, acceptance 1): shapes, both masks, the gate, CF injection, serial vs
parallel adapters, each loss decreasing, frozen weights unchanged, adapters trained, resume, store.

The LLM is a randomly initialised 2-layer Llama (and OPT) built from a transformers config, with a
byte-level BPE tokenizer trained here on the item texts: nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from mltfrkit.data.split import SplitData  # noqa: E402
from mltfrkit.mixrec.cf import BPRMF, NCF  # noqa: E402
from mltfrkit.mixrec.llm import DecoderParts, attention  # noqa: E402
from mltfrkit.mixrec.masks import (ALL_SEGMENTS, TokenBatch, align_batch, causal_mask, cf_positions,  # noqa: E402
                                   context_mask, sequence_batch)
from mltfrkit.mixrec.model import PARALLEL, SERIAL, Adapter, MixRec, MixRecConfig, adapted  # noqa: E402
from mltfrkit.mixrec.sentences import build_item_sentences, flatten_attributes, prompt_tokens  # noqa: E402

WORDS = ["Toy", "Story", "Heat", "Casino", "Drama", "Comedy", "Action", "River", "Night", "Star", "Moon", "Red"]
N_ITEMS, N_USERS = 14, 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    texts = [f"title: {WORDS[i % 12]} {WORDS[(i * 5) % 12]} genre: {WORDS[(i * 7) % 12]}" for i in range(60)]
    texts.append("Give the ID of the item described by:")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok)


TOKENIZER = make_tokenizer()


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=len(TOKENIZER), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=512)
    return transformers.LlamaModel(config).eval()


def tiny_opt(seed=0):
    torch.manual_seed(seed)
    config = transformers.OPTConfig(vocab_size=len(TOKENIZER), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                    num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=32)
    return transformers.OPTModel(config).eval()


def item_text(i):
    return {"title": f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]}", "genre": WORDS[(i * 7) % 12]}


def tiny_split():
    rng = np.random.default_rng(0)
    sequences = [rng.choice(np.arange(1, N_ITEMS + 1), size=int(rng.integers(5, 9)), replace=False)
                 for _ in range(N_USERS)]
    return SplitData(name="tiny-mixrec", sequences=sequences,
                     item_ids=np.array(["<pad>"] + [f"i{i}" for i in range(1, N_ITEMS + 1)]),
                     user_ids=np.array([f"u{u}" for u in range(N_USERS)]), source_sha256="tiny",
                     item_titles={i: f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]}" for i in range(1, N_ITEMS + 1)})


def make_model(variant="mixrec", parts=None, **options):
    parts = parts or DecoderParts(tiny_llama())
    sentences = build_item_sentences({i: item_text(i) for i in range(1, N_ITEMS + 1)}, N_ITEMS, TOKENIZER,
                                     max_tokens=options.pop("max_tokens", 6))
    config = MixRecConfig(variant=variant, max_tokens=sentences.max_tokens, history_len=4, bottleneck=8, cf_dim=8,
                          n_cl=3, **options)
    torch.manual_seed(1)
    return MixRec(parts, sentences, prompt_tokens(TOKENIZER), N_USERS, config)


def hf_reference(parts, model, ids):
    """Our layers with the causal mask and no adapters, to compare with the HF model's own forward."""
    T = ids.shape[1]
    pos = torch.arange(T).expand_as(ids)
    batch = TokenBatch(ids, torch.ones_like(ids, dtype=torch.bool), torch.zeros_like(ids), pos,
                       torch.zeros(len(ids), 1, dtype=torch.long), torch.zeros(len(ids), 0, dtype=torch.long))
    x = parts.embed(ids, pos)
    for layer in parts.layers:
        n = layer.attn_norm(x)
        (a,) = attention(parts, layer, n, n, pos, pos, [causal_mask(batch)])
        x = x + a
        x = x + layer.ffn(layer.ffn_norm(x))
    return parts.final_norm(x)


@pytest.mark.parametrize("build", [tiny_llama, tiny_opt], ids=["llama", "opt"])
def test_decoder_parts_reproduce_the_hugging_face_forward(build):
    model = build()
    parts = DecoderParts(model)
    ids = torch.randint(0, len(TOKENIZER), (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf_reference(parts, model, ids), model(input_ids=ids).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)


def test_unsupported_architecture_is_refused_by_name():
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    with pytest.raises(ValueError, match="supported are Llama-style"):
        DecoderParts(transformers.GPT2Model(config))


def test_item_sentences_flatten_key_values_and_truncate_with_the_llm_tokenizer():
    assert flatten_attributes({"title": "Toy  Story", "categories": ["A", "B"], "brand": ""}) == \
        "title: Toy Story categories: A, B"
    assert flatten_attributes("Heat (1995)") == "title: Heat (1995)"
    sentences = build_item_sentences({i: item_text(i) for i in range(1, N_ITEMS + 1)}, N_ITEMS, TOKENIZER, max_tokens=5)
    full = TOKENIZER(flatten_attributes(item_text(3)), add_special_tokens=False)["input_ids"]
    assert len(full) > 5 and sentences.lengths[3] == 5
    assert sentences.tokens[3].tolist() == full[:5] and sentences.lengths[0] == 0
    with pytest.raises(ValueError, match="have no text"):
        build_item_sentences({1: "x"}, 3, TOKENIZER)
    with pytest.warns(UserWarning, match="2 of 3 items have no text"):
        built = build_item_sentences({1: "x"}, 3, TOKENIZER, fallback={1: "a", 2: "b", 3: "c"})
    assert built.texts[2] == "item: b"


def test_sequence_layout_reads_out_each_items_seq_token():
    model = make_model()
    seqs = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 5]])
    batch = sequence_batch(seqs, model.item_tokens, model.item_lengths, model.seq_id, with_cf=True)
    assert batch.readout[0, :2].tolist() == [-1, -1]
    for row in range(2):
        for slot in range(4):
            if seqs[row, slot]:
                at = batch.readout[row, slot]
                assert batch.ids[row, at] == model.seq_id and batch.segment[row, at] == slot
                sentence = batch.ids[row][batch.segment[row] == slot][:-1]
                assert sentence.tolist() == model.item_tokens[seqs[row, slot], :model.item_lengths[seqs[row, slot]]].tolist()
    assert batch.cf_owner.tolist() == [[ALL_SEGMENTS, -1, -1, 2, 3], [ALL_SEGMENTS, 0, 1, 2, 3]]
    positions = cf_positions(batch)  # an item's slot sits where its sentence starts; the user's at 0
    for row in range(2):
        for slot in range(4):
            first = (batch.segment[row] == slot).nonzero()
            assert positions[row, 1 + slot] == (batch.positions[row, first[0, 0]] if len(first) else 0)
    assert positions[:, 0].tolist() == [0, 0] and positions[1, 2] > 0
    aligned = align_batch(torch.tensor([3, 7]), model.item_tokens, model.item_lengths, model.prompt, model.align_id, True)
    assert (aligned.ids.gather(1, aligned.readout) == model.align_id).all()


def test_masks_causal_sees_the_past_and_no_cf_context_sees_its_own_item_and_its_cf():
    model = make_model()
    seqs = torch.tensor([[1, 2, 3]])
    batch = sequence_batch(seqs, model.item_tokens, model.item_lengths, model.seq_id, with_cf=True)
    C, seg = batch.n_cf, batch.segment[0]
    causal, context = causal_mask(batch)[0, 0], context_mask(batch)[0, 0]
    T = len(seg)
    assert not causal[:, :C].any()  # "j != 1": no collaborative column under causal masking
    assert torch.equal(causal[:, C:], torch.ones(T, T, dtype=torch.bool).tril())
    same = seg.unsqueeze(0) == seg.unsqueeze(1)
    assert torch.equal(context[:, C:], same)  # before and after, within the item only
    assert context[:, 0].all()  # the user's slot: every item
    for slot in range(3):
        assert torch.equal(context[:, 1 + slot], seg == slot)  # item j's slot: item j's tokens only


def test_under_context_masking_a_token_cannot_see_another_items_tokens():
    """Perturb item 1's tokens: item 2's tokens change under the causal mask, not under context masking."""
    model = make_model(cf="none")
    parts, layer = model.parts, model.parts.layers[0]
    seqs = torch.tensor([[1, 2]])
    batch = sequence_batch(seqs, model.item_tokens, model.item_lengths, model.seq_id, with_cf=False)
    x = model.embed(batch.ids, batch.positions)
    first, second = batch.segment[0] == 0, batch.segment[0] == 1
    perturbed = x.clone()
    perturbed[0, first] += torch.randn_like(perturbed[0, first])
    masks = [causal_mask(batch), context_mask(batch)]
    with torch.no_grad():
        before = attention(parts, layer, layer.attn_norm(x), layer.attn_norm(x), batch.positions, batch.positions, masks)
        after = attention(parts, layer, layer.attn_norm(perturbed), layer.attn_norm(perturbed), batch.positions,
                          batch.positions, masks)
    assert not torch.allclose(before[0][0, second], after[0][0, second])  # causal: item 2 sees item 1
    torch.testing.assert_close(before[1][0, second], after[1][0, second])  # context: it does not
    # Through the whole model (gate forced to the context expert): no gradient from item 2 to item 1's tokens.
    for adapters in model.adapters:
        adapters.gate.bias.data = torch.tensor([-1e4, 1e4])
    embedded = model.embed(batch.ids, batch.positions).detach().requires_grad_(True)
    model.embed = lambda ids, positions: embedded
    hidden = model.hidden_states(batch, None)
    hidden[0, second].sum().backward()
    assert embedded.grad[0, first].abs().max() == 0 and embedded.grad[0, second].abs().max() > 0


def test_the_gate_mixes_the_two_experts_and_selects_one_at_its_extremes():
    seqs, users = torch.tensor([[1, 2, 3, 4]]), torch.tensor([0])
    model = make_model(cf="none")
    twin = make_model(cf="none", context_expert_mask="causal", parts=model.parts)
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        for m in (model, twin):
            for adapters in m.adapters:
                adapters.context_expert.up.weight.normal_()  # the experts differ
        twin.load_state_dict(model.state_dict())
        mixed = model.sequence_states(users, seqs)
        assert not torch.allclose(mixed, twin.sequence_states(users, seqs))  # beta = (.5, .5): context matters
        for m in (model, twin):
            for adapters in m.adapters:
                adapters.gate.bias.copy_(torch.tensor([1e4, -1e4]))  # beta = (1, 0): the causal expert only
        torch.testing.assert_close(model.sequence_states(users, seqs), twin.sequence_states(users, seqs))
    gate = model.adapters[0].gate
    q, p = torch.randn(3, 32), torch.randn(3, 32)
    beta = torch.softmax(gate(torch.cat([q, p], -1)), -1)
    torch.testing.assert_close(beta.sum(-1), torch.ones(3))


def test_cf_injection_shapes_and_effect():
    model = make_model()
    seqs, users = torch.tensor([[0, 2, 3, 4], [1, 2, 3, 5]]), torch.tensor([0, 3])
    assert model.cf.sequence_slots(users, seqs).shape == (2, 5, 32)
    assert model.cf.item_slots(torch.tensor([1, 2, 3])).shape == (3, 1, 32)
    for cf in (NCF(N_USERS, N_ITEMS, 8), BPRMF(N_USERS, N_ITEMS, 8)):
        assert cf.user_vectors(users).shape == (2, cf.vector_size)
        assert cf.item_vectors(seqs).shape == (2, 4, cf.vector_size)
    with torch.no_grad():
        before = model.sequence_states(users, seqs)
        model.cf.cf.gmf_user.weight[3] += 1.0  # user 3's collaborative vector
        after = model.sequence_states(users, seqs)
    torch.testing.assert_close(before[0], after[0])
    assert not torch.allclose(before[1], after[1])
    assert make_model("mixrec_base").cf is None and make_model("llmrec").cf is None


def test_serial_and_parallel_adapter_forms():
    adapter = Adapter(8, 4)
    out, inp = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(adapted(SERIAL, adapter, out, inp), out)  # W_2 = 0: identity
    torch.testing.assert_close(adapted(PARALLEL, adapter, out, inp), (out + inp) / 2)
    with torch.no_grad():
        adapter.up.weight.normal_()
    torch.testing.assert_close(adapted(SERIAL, adapter, out, inp), adapter(out))
    torch.testing.assert_close(adapted(PARALLEL, adapter, out, inp), (out + adapter(inp)) / 2)
    design = (0, 1, 1, 1, 0, 0)
    model = make_model(design=design)
    assert [a.forms for a in model.adapters] == [(0, 1, 1), (1, 0, 0)]
    seqs, users = torch.tensor([[1, 2, 3]]), torch.tensor([0])
    with torch.no_grad():
        assert not torch.allclose(model.sequence_states(users, seqs),
                                  make_model(design=(0,) * 6, parts=model.parts).sequence_states(users, seqs))
    with pytest.raises(ValueError, match="needs 3 x 2 = 6"):
        make_model(design=(0, 1, 0))
    assert len(make_model(replace_every=2).damoe_layers) == 1
    truncated = make_model(llm_layers=1, design=(1, 1, 0))  # the CPU reduction: the LLM's first layer only
    assert len(truncated.adapters) == 1 and truncated.adapters[0].forms == (1, 1, 0)
    with pytest.raises(ValueError, match="the LLM has 2 layers"):
        make_model(llm_layers=3)


def test_llmrec_trains_only_the_projection_and_special_tokens():
    model = make_model("llmrec")
    names = set(model.trainable_state())
    assert names == {"special", "item_projection.weight", "item_projection.bias"}
    assert set(model.config.losses_used()) == {"seq"}


@pytest.mark.parametrize("term", ["seq", "align", "cl", "cf"])
def test_each_loss_decreases_over_a_few_steps(term):
    model = make_model(tau=0.2)  # a sharper InfoNCE: the tiny random LLM's states start nearly parallel
    split = tiny_split()
    from mltfrkit.mixrec.hard import hard_negative_sets, llm_text_embeddings
    from mltfrkit.mixrec.train import training_windows

    model.hard_negatives = hard_negative_sets(split.train_sequences(), N_ITEMS, llm_text_embeddings(model), 0.2)
    users, windows = training_windows(split, np.arange(N_USERS), 4)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    values = []
    for step in range(8):
        loss = model.losses(users, windows, torch.Generator().manual_seed(0))[term]
        values.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert values[-1] < values[0] * 0.97, values


def test_hard_negatives_follow_appendix_a():
    from mltfrkit.mixrec.hard import co_occurrence, hard_negative_sets

    split = tiny_split()
    train = split.train_sequences()
    text = torch.randn(N_ITEMS + 1, 6, generator=torch.Generator().manual_seed(0))
    sets = hard_negative_sets(train, N_ITEMS, text, fraction=0.3)
    together = co_occurrence(train, N_ITEMS)
    for item in range(1, N_ITEMS + 1):
        assert item not in sets[item].tolist()
        assert not set(sets[item].tolist()) & set(together[item].tolist())
    assert any(len(s) for s in sets)


# --------------------------------------------------------------------------- training, store, resume


@pytest.fixture
def registered_llm():
    from mltfrkit.mixrec.train import register_llm

    register_llm("tiny-llama-test", lambda: (tiny_llama(), TOKENIZER))
    return "tiny-llama-test"


def tiny_spec(llm, variant="mixrec", epochs=2, **train):
    from mltfrkit.mixrec.train import MixRecSpec, MixRecTrainConfig

    return MixRecSpec("tiny-mixrec", llm=llm,
                      model=MixRecConfig(variant=variant, max_tokens=6, history_len=4, bottleneck=8, cf_dim=8,
                                         n_cl=2, hard_fraction=0.2),
                      train=MixRecTrainConfig(epochs=epochs, batch_size=4, lr=1e-2, device="cpu", eval_batch=8,
                                              checkpoint_steps=2, **train))


def test_training_keeps_the_llm_frozen_trains_the_adapters_and_writes_a_store_run(registered_llm, tmp_path):
    from mltfrkit.mixrec.train import get_llm, run_mixrec
    from mltfrkit.store import ResultStore

    parts, _ = get_llm(registered_llm)
    frozen = {k: v.clone() for k, v in parts.state_dict().items()}
    result = run_mixrec(tiny_spec(registered_llm), split=tiny_split(), runs_dir=tmp_path, log=None)
    for key, value in parts.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    import torch as _t

    saved = _t.load(f"{result['run_dir']}/checkpoint.pt", weights_only=True)["model"]
    assert not any(k.startswith("parts.") for k in saved)  # the frozen LLM is not checkpointed
    untrained = make_model(parts=parts)
    for name in ("adapters.0.causal_expert.up.weight", "adapters.1.rec_adapter.down.weight",
                 "adapters.0.gate.weight", "cf.user_proj.weight"):
        assert not torch.equal(saved[name], untrained.state_dict()[name]), name
    assert set(result["test"]) >= {"HR@10", "NDCG@10", "MRR"} and len(result["epochs"]) == 2
    rows = ResultStore(tmp_path, progress=False, log=None).records()
    assert rows.loc[0, "backbone"] == "mixrec" and rows.loc[0, "plugin"] == "mixrec"
    assert rows.loc[0, "NDCG@10"] == result["test"]["NDCG@10"]
    from mltfrkit.mixrec.train import evaluate_mixrec, load_trained_mixrec

    spec, split, model = load_trained_mixrec(result["run_dir"], split=tiny_split())
    assert spec.key(split.source_sha256, result["config"]["text_sha256"]) in result["run_dir"]
    assert evaluate_mixrec(model, split, np.arange(N_USERS), "test", spec.train.ks) == result["test"]
    # a second call reads the stored result, training nothing
    assert run_mixrec(tiny_spec(registered_llm), split=tiny_split(), runs_dir=tmp_path, log=None)["seconds"] == \
        result["seconds"]


def test_an_interrupted_run_resumes_exactly(registered_llm, tmp_path):
    from mltfrkit.mixrec.train import run_mixrec

    whole = run_mixrec(tiny_spec(registered_llm, variant="mixrec_base"), split=tiny_split(), runs_dir=tmp_path / "a",
                       log=None)
    spec = tiny_spec(registered_llm, variant="mixrec_base")
    assert run_mixrec(spec, split=tiny_split(), runs_dir=tmp_path / "b", log=None, stop_after_steps=3) is None
    resumed = run_mixrec(spec, split=tiny_split(), runs_dir=tmp_path / "b", log=None)
    assert [e["loss"] for e in resumed["epochs"]] == pytest.approx([e["loss"] for e in whole["epochs"]], abs=1e-6)
    assert resumed["test"] == pytest.approx(whole["test"], abs=1e-6)


def test_mixrec_is_registered_without_the_backbones_importing_it():
    import subprocess
    import sys

    from mltfrkit.models import backbone_class, model_names, text_model_entry
    from mltfrkit.mixrec.train import run_mixrec

    assert "mixrec" in model_names() and text_model_entry("mixrec") is run_mixrec
    with pytest.raises(KeyError, match="text model with its own trainer"):
        backbone_class("mixrec")
    code = ("import sys, mltfrkit.models, mltfrkit.mltfr, mltfrkit.runs; "
            "print([m for m in sys.modules if m.startswith('mltfrkit.mixrec') or m == 'transformers'])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_damoe_search_trials_are_store_runs_and_a_search_resumes(registered_llm, tmp_path):
    from mltfrkit.mixrec.search import PRSettings, search_damoe
    from mltfrkit.store import ResultStore

    spec = tiny_spec(registered_llm, epochs=1, user_fraction=0.6, valid_metric="MRR")
    fast = PRSettings(restarts=1, steps=5, samples=16, candidates=16)
    first = search_damoe(spec, tiny_split(), runs_dir=tmp_path, iterations=3, n_init=2, settings=fast, log=None)
    assert len(first.values) == 3 and all(len(d) == 6 for d in first.designs)
    rows = ResultStore(tmp_path, progress=False, log=None).records()
    assert len(rows) == len({tuple(d) for d in first.designs})
    from mltfrkit.store import read_result

    for design, value, run in zip(first.designs, first.values, first.runs):
        stored = read_result(f"{run}/result.json")
        assert stored["config"]["model"]["design"] == design and stored["best_valid"]["MRR"] == value
        assert stored["users"] == 6  # Data_BO: 60% of the 10 users
    again = search_damoe(spec, tiny_split(), runs_dir=tmp_path, iterations=4, n_init=2, settings=fast, log=None)
    assert again.designs[:3] == first.designs and len(again.values) == 4


def test_item_text_comes_from_the_shared_readers(tmp_path):
    from mltfrkit.mixrec.train import MixRecSpec, item_texts

    csv = tmp_path / "titles.csv"
    csv.write_text("item,title\n" + "".join(f"i{i},Film number {i}\n" for i in range(1, N_ITEMS + 1)))
    split = tiny_split()
    assert item_texts(MixRecSpec("tiny-mixrec", text=str(csv)), split)[3] == "Film number 3"
    assert item_texts(MixRecSpec("tiny-mixrec"), split) == split.item_titles  # no title file: the split's own
    with pytest.raises(FileNotFoundError, match="no such title file"):
        MixRecSpec("tiny-mixrec", text=str(tmp_path / "absent.csv"))


def test_gradient_checkpointing_gives_the_same_gradients_and_bf16_autocast_runs():
    seqs, users = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]), torch.tensor([0, 1])
    plain = make_model()
    checkpointed = make_model(parts=plain.parts, gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, checkpointed):
        model.train()
        loss = model.losses(users, seqs, torch.Generator().manual_seed(0))["total"]
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        full = plain.losses(users, seqs, torch.Generator().manual_seed(0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = plain.losses(users, seqs, torch.Generator().manual_seed(0))
    assert float(half["seq"]) == pytest.approx(float(full["seq"]), rel=0.05)  # bf16 matmuls, same loss to ~1%


def test_comparison_table_reads_a_backbone_run_with_mrr_from_the_same_ranking(tmp_path, monkeypatch):
    from conftest import make_tiny_split

    from mltfrkit.mixrec.experiment import backbone_metrics, comparison_table, mixrec_spec
    from mltfrkit.runs import RunSpec, run_training
    from mltfrkit.train import TrainConfig

    split = make_tiny_split()
    monkeypatch.setattr("mltfrkit.runs.load_dataset", lambda name, data_dir=None: split)
    spec = RunSpec("tiny", "sasrec", model={"max_len": 8, "hidden_size": 16}, train=TrainConfig(epochs=2, device="cpu"))
    result = run_training(spec, root=tmp_path, progress=False, log=None)
    metrics = backbone_metrics(result["run_dir"])
    for key in ("HR@10", "NDCG@20"):
        assert metrics[key] == pytest.approx(result["test"][key])  # the trainer's own figures, recomputed
    assert metrics["HR@5"] / 5 <= metrics["MRR"] <= 1  # a hit in the top 5 contributes at least 1/5
    table = comparison_table({"sasrec": metrics, "mixrec": {"NDCG@10": 0.1, "HR@10": 0.2, "MRR": 0.05}})
    assert list(table.columns) == ["NDCG@10", "Recall@10", "MRR", "HR@20", "NDCG@20"]
    assert table.loc["mixrec", "Recall@10"] == 0.2 and np.isnan(table.loc["mixrec", "HR@20"])
    assert mixrec_spec("mixrec", profile="paper").model.max_tokens == 30
    with pytest.raises(ValueError, match="profile must be one of"):
        mixrec_spec("mixrec", profile="fast")


def test_command_line_refuses_a_bad_design_and_a_dataset_without_titles(tmp_path, capsys):
    from mltfrkit.cli import main

    with pytest.raises(SystemExit):
        main(["mixrec", "train", "--design", "012"])
    assert "0 (serial) / 1 (parallel) bits" in capsys.readouterr().err
    data = tmp_path / "plain.txt"
    data.write_text("".join(f"u{u} " + " ".join(f"i{(u + k) % 9}" for k in range(6)) + "\n" for u in range(12)))
    assert main(["mixrec", "train", "--dataset", str(data), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mltfrkit: error:") and "title" in err


def save_tiny_llm(folder):
    """The tiny Llama and its tokenizer as a local folder, so that another process (a papermill kernel) loads
    the same LLM by path through :func:`mltfrkit.mixrec.llm.load_llm`."""
    tiny_llama().save_pretrained(folder)
    TOKENIZER.save_pretrained(folder)
    return str(folder)


def test_pool_ranks_are_the_full_ranking_scores_restricted_to_the_pool(registered_llm, tmp_path):
    """Table 4's mixrec column: a stored run's pool ranks are the ranks of the target among its candidates under
    the run's full-ranking score vector (score_all over every item), ties against the target."""
    from mltfrkit.mixrec.train import (load_trained_mixrec, mixrec_pool_evaluation, run_mixrec,
                                       score_mixrec_pools)
    from mltfrkit.store import pool_evaluation
    from mltfrkit.train.metrics import pad_left
    from mltfrkit.train.pools import PoolSpec, make_pools, ranks_from_scores

    split = tiny_split()
    result = run_mixrec(tiny_spec(registered_llm, epochs=1), split=split, runs_dir=tmp_path, log=None)
    pool = PoolSpec(size=5, seed=3)
    evaluation = mixrec_pool_evaluation(result["run_dir"], pool, split=split)
    _, _, model = load_trained_mixrec(result["run_dir"], split=split)
    pools = make_pools(split, pool)
    histories, _ = split.eval_pairs("test")
    expected, restricted = [], []
    for row, user in enumerate(pools.users):  # each user alone: its full score vector over all items
        full = model.score_all(torch.tensor([int(user)]), pad_left([histories[user]], model.config.history_len))[0]
        assert full.shape == (N_ITEMS + 1,)
        candidates = full[torch.as_tensor(pools.candidates[row])]
        target = candidates[pools.target_index[row]]
        expected.append(int((candidates >= target).sum()) - 1)  # every other candidate scoring >= counts
        restricted.append(candidates)
    assert evaluation["ranks"] == expected and evaluation["users"] == N_USERS
    assert len(set(expected)) > 1  # not a degenerate model: the ranks vary across users
    np.testing.assert_allclose(score_mixrec_pools(model, pools, batch=4), torch.stack(restricted).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert evaluation["top1"] == pytest.approx(np.mean(np.array(expected) == 0))
    # the store's pool evaluation dispatches a MixRec run here and reads the cache written above
    assert pool_evaluation(result["run_dir"], pool) == evaluation
    from mltfrkit.runs import store_root

    assert len(list(store_root(tmp_path).glob("*/pools/*.json"))) == 1

    class Constant(torch.nn.Module):  # ties: a constant scorer never gets the target on top
        config = model.config

        def score_all(self, users, history):
            return torch.zeros(len(users), N_ITEMS + 1)
    ties = ranks_from_scores(score_mixrec_pools(Constant(), pools), pools.target_index)
    assert (ties == pool.size - 1).all()
