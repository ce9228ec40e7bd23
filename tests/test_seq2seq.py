"""Multitoken seq2seq: vocab, prefix trie, constrained decoding, training, ranking metrics."""

import itertools
import math

import pytest
import torch

from hrq.seq2seq import (
    EOS,
    PAD,
    MultitokenVocab,
    PrefixTrie,
    Seq2SeqConfig,
    build_model,
    generate_ranked,
    invalid_at,
    lr_factor,
    ndcg_at,
    pad_sources,
    pick_device,
    rank_of,
    recall_at,
    train_seq2seq,
)

@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run far faster on one intra-op thread (no spin-waiting on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = Seq2SeqConfig(d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4, d_kv=8, dropout=0.0)


def random_codes(n, level_sizes, gen):
    return torch.stack([torch.randint(0, s, (n,), generator=gen) for s in level_sizes], dim=1)


# --- vocab ---------------------------------------------------------------------------------------


def test_vocab_layout_and_round_trip():
    vocab = MultitokenVocab([3, 5, 2])
    assert vocab.length == 3 and vocab.size == 2 + 10 and vocab.level_sizes == (3, 5, 2)
    codes = random_codes(50, vocab.level_sizes, torch.Generator().manual_seed(1))
    tokens = vocab.encode(codes)
    assert tokens.shape == codes.shape and tokens.dtype == torch.long
    assert torch.equal(vocab.decode(tokens), codes)
    # every (level, code) has its own id, none of them special, all < size
    grid = torch.tensor(list(itertools.product(range(3), range(5), range(2))))
    ids = vocab.encode(grid)
    per_level = [set(ids[:, level].tolist()) for level in range(3)]
    assert [len(s) for s in per_level] == [3, 5, 2]
    assert set.union(*per_level) == set(range(2, vocab.size))
    assert int(ids.min()) > max(PAD, EOS)


@pytest.mark.parametrize("bad, level, value", [((0, 5, 1), 1, 5), ((-1, 0, 0), 0, -1), ((2, 4, 2), 2, 2)])
def test_vocab_encode_rejects_out_of_range_codes(bad, level, value):
    vocab = MultitokenVocab([3, 5, 2])
    with pytest.raises(ValueError, match=rf"{value}.*level {level}"):
        vocab.encode(torch.tensor([[0, 0, 0], list(bad)]))


def test_vocab_rejects_bad_shapes_and_foreign_tokens():
    vocab = MultitokenVocab([3, 5])
    with pytest.raises(ValueError):
        vocab.encode(torch.zeros(2, 3, dtype=torch.long))
    level1_id = int(vocab.encode(torch.tensor([[0, 0]]))[0, 1])
    with pytest.raises(ValueError, match="level 0"):
        vocab.decode(torch.tensor([[level1_id, level1_id]]))
    with pytest.raises(ValueError, match="level 0"):
        vocab.decode(torch.tensor([[EOS, level1_id]]))
    assert vocab.decode(torch.full((1, 2), -1)).tolist() == [[-1, -1]]


# --- trie ----------------------------------------------------------------------------------------


def test_trie_allowed_on_hand_made_set():
    trie = PrefixTrie(torch.tensor([[2, 5, 9], [2, 6, 9], [3, 5, 8], [2, 5, 7], [2, 5, 9]]))
    assert len(trie) == 4
    assert trie.allowed([]) == [2, 3]
    assert trie.allowed([2]) == [5, 6]
    assert trie.allowed([3]) == [5]
    assert trie.allowed([2, 5]) == [7, 9]
    assert trie.allowed([2, 6]) == [9]
    assert trie.allowed([2, 5, 9]) == [EOS]
    assert trie.allowed([3, 5, 8]) == [EOS]
    for invalid in ([4], [3, 6], [2, 6, 7], [2, 5, 9, EOS], [2, 5, 9, 2], [PAD]):
        assert trie.allowed(invalid) == [PAD]
    # as prefix_allowed_tokens_fn: the decoder start token is stripped
    assert trie(0, torch.tensor([PAD])) == [2, 3]
    assert trie(3, torch.tensor([PAD, 2, 5])) == [7, 9]
    assert trie(0, torch.tensor([PAD, 2, 5, 7])) == [EOS]
    assert [2, 5, 9] in trie and torch.tensor([3, 5, 8]) in trie
    assert [2, 5] not in trie and [3, 5, 9] not in trie


def test_trie_matches_brute_force_on_random_set():
    vocab = MultitokenVocab([4, 3, 5])
    gen = torch.Generator().manual_seed(3)
    tokens = vocab.encode(random_codes(30, vocab.level_sizes, gen))
    trie = PrefixTrie(tokens)
    rows = {tuple(r) for r in tokens.tolist()}
    for level in range(3):
        for prefix in itertools.product(*(range(2, vocab.size) for _ in range(level))):
            expected = sorted({r[level] for r in rows if r[:level] == prefix}) or [PAD]
            assert trie.allowed(prefix) == expected
    assert all(trie.allowed(r) == [EOS] for r in rows)


def test_trie_rejects_special_ids():
    with pytest.raises(ValueError):
        PrefixTrie(torch.tensor([[2, EOS]]))


# --- model ---------------------------------------------------------------------------------------


def test_build_model_special_ids_and_tying():
    model = build_model(20, TINY)
    cfg = model.config
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (PAD, EOS, PAD)
    assert cfg.vocab_size == 20 and cfg.d_model == 32 and cfg.num_layers == 1 and cfg.dense_act_fn == "relu"
    assert model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    untied = build_model(20, Seq2SeqConfig(d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1,
                                           num_heads=4, d_kv=8, tie_embeddings=False))
    n_tied = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 20 * 32
    untied.tie_weights()  # transformers' re-tying must leave the separate head alone
    assert untied.lm_head.weight.data_ptr() != untied.shared.weight.data_ptr()
    assert untied.encoder.embed_tokens.weight.data_ptr() == untied.shared.weight.data_ptr()
    assert untied.decoder.embed_tokens.weight.data_ptr() == untied.shared.weight.data_ptr()
    assert not torch.equal(untied.lm_head.weight, untied.shared.weight)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- pad_sources ---------------------------------------------------------------------------------


def test_pad_sources_right_pads_and_keeps_last_tokens():
    out = pad_sources([[5, 6, 7, 8, 9], [3], [4, 5, 6]], max_len=3)
    assert out.tolist() == [[7, 8, 9], [3, PAD, PAD], [4, 5, 6]]
    assert pad_sources([[5, 6], [3, 4, 7]]).tolist() == [[5, 6, PAD], [3, 4, 7]]
    again = pad_sources(torch.tensor([[5, 6, 7, PAD], [8, PAD, PAD, PAD]]), max_len=2)
    assert again.tolist() == [[6, 7], [8, PAD]]


# --- decoding and training -----------------------------------------------------------------------


def _check_ranked(ranked, trie, top_k, length):
    assert ranked.shape[1:] == (top_k, length)
    for beams in ranked.tolist():
        valid = [b for b in beams if b != [-1] * length]
        assert all(b in trie for b in valid)
        assert beams[: len(valid)] == valid, "-1 rows must come last"
        assert len({tuple(b) for b in valid}) == len(valid), "duplicate beams"
    return ranked


@pytest.mark.parametrize("num_targets", [3, 40])
def test_constrained_generation_on_untrained_model_stays_in_trie(num_targets):
    vocab = MultitokenVocab([4, 4, 3])
    gen = torch.Generator().manual_seed(num_targets)
    targets = vocab.encode(torch.unique(random_codes(num_targets, vocab.level_sizes, gen), dim=0))
    trie = PrefixTrie(targets)
    model = build_model(vocab.size, TINY)
    sources = vocab.encode(random_codes(5, vocab.level_sizes, gen))
    ranked = generate_ranked(model, sources, trie, num_beams=6, top_k=5, batch_size=2)
    _check_ranked(ranked, trie, 5, 3)
    filled = (ranked[:, :, 0] != -1).sum(dim=1)
    # with fewer valid sequences than slots, the tail is -1; with plenty, every slot is filled
    assert filled.tolist() == [min(len(trie), 5)] * 5
    # variable-length list sources, and greedy decoding (num_beams=1), are constrained too
    histories = [[2, 7, 11, 3], [5], [2, 7]]
    greedy = _check_ranked(generate_ranked(model, histories, trie, num_beams=1, top_k=1), trie, 1, 3)
    assert (greedy != -1).all()
    with pytest.raises(ValueError):
        generate_ranked(model, sources, trie, num_beams=2, top_k=3)


def test_trained_model_ranks_true_target_first():
    vocab = MultitokenVocab([4, 4, 4])
    gen = torch.Generator().manual_seed(7)
    codes = torch.unique(random_codes(64, vocab.level_sizes, gen), dim=0)
    codes = codes[torch.randperm(codes.shape[0], generator=gen)]
    sources, targets = vocab.encode(codes[:8]), vocab.encode(codes[8:16])
    trie = PrefixTrie(vocab.encode(codes[8:40]))  # targets plus distractors
    model = build_model(vocab.size, TINY)
    seen = []
    history = train_seq2seq(model, sources, targets, epochs=150, batch_size=4, lr=1e-2, seed=0,
                            on_epoch=lambda e, m: seen.append(e), progress=False)
    assert seen == list(range(150)) and [h["epoch"] for h in history] == seen
    losses = [h["train/loss"] for h in history]
    assert losses[-1] < 0.2 * losses[0]
    ranked = _check_ranked(generate_ranked(model, sources, trie, num_beams=5, top_k=5), trie, 5, 3)
    ranks = rank_of(ranked, targets)
    assert recall_at(ranks, 1) >= 7 / 8
    # free decoding: the trained model spells its targets out without the trie's help
    free = generate_ranked(model, sources, trie, num_beams=5, top_k=5, decoding="free")
    assert free.shape == ranked.shape
    assert all(b in trie for b in free.view(-1, 3).tolist() if b != [-1, -1, -1])
    assert recall_at(rank_of(free, targets), 1) >= 7 / 8
    assert model.training  # mode restored after decoding


class _ScriptedModel(torch.nn.Module):
    """Stands in for T5: ``generate`` returns fixed beams and records its keyword arguments."""

    def __init__(self, beams):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.beams, self.calls = torch.tensor(beams), []

    def generate(self, input_ids, **kwargs):
        self.calls.append(kwargs)
        return self.beams.repeat(input_ids.shape[0], 1)


# one query's 8 beams (decoder start, 3 code tokens, EOS) over levels of sizes 3, 3, 2:
# level ids 2-4, 5-7, 8-9; the valid multitokens are A, B and C
A, B, C = [2, 5, 8], [3, 6, 9], [4, 7, 8]
SCRIPTED = [
    [PAD, 5, 5, 8, EOS],      # a level-1 token in the level-0 slot: names nothing
    [PAD, *A, EOS],
    [PAD, 2, EOS, PAD, PAD],  # stopped early
    [PAD, *B, EOS],
    [PAD, 4, 6, 8, EOS],      # well-formed, but no entity has it
    [PAD, *A, EOS],           # repeat of A
    [PAD, *C, 9],             # C's tokens, but the sequence goes on instead of ending
    [PAD, *C, EOS],
]


def test_free_decoding_keeps_invalid_beams_in_their_slots():
    trie = PrefixTrie(torch.tensor([A, B, C]))
    model = _ScriptedModel(SCRIPTED)
    free = generate_ranked(model, [[2, 5], [3]], trie, num_beams=8, top_k=8, decoding="free")
    assert "prefix_allowed_tokens_fn" not in model.calls[-1]
    none = [-1, -1, -1]
    assert free.tolist() == [[none, A, none, B, none, none, none, C]] * 2
    assert rank_of(free, torch.tensor([B, C])).tolist() == [3, 7]  # an invalid beam costs its slot
    assert invalid_at(free, 8) == pytest.approx(5 / 8)
    assert invalid_at(free, 4) == pytest.approx(2 / 4)
    # constrained: the same beams (the trie would have prevented the invalid ones) rank A, B, C first
    constrained = generate_ranked(model, [[2, 5]], trie, num_beams=8, top_k=8)
    assert model.calls[-1]["prefix_allowed_tokens_fn"] is trie
    assert constrained.tolist() == [[A, B, C] + [none] * 5]
    assert invalid_at(constrained, 3) == 0.0
    with pytest.raises(ValueError, match="decoding"):
        generate_ranked(model, [[2]], trie, num_beams=8, top_k=8, decoding="greedy")


def test_free_decoding_of_an_untrained_model_returns_only_entities_or_misses():
    vocab = MultitokenVocab([4, 4, 3])
    gen = torch.Generator().manual_seed(3)
    trie = PrefixTrie(vocab.encode(torch.unique(random_codes(12, vocab.level_sizes, gen), dim=0)))
    model = build_model(vocab.size, TINY)
    sources = vocab.encode(random_codes(4, vocab.level_sizes, gen))
    free = generate_ranked(model, sources, trie, num_beams=10, top_k=10, decoding="free")
    assert free.shape == (4, 10, 3)
    assert all(b in trie for b in free.view(-1, 3).tolist() if b != [-1, -1, -1])
    assert 0.0 <= invalid_at(free, 10) <= 1.0
    assert invalid_at(generate_ranked(model, sources, trie, num_beams=10, top_k=10), 10) == 0.0


@pytest.mark.parametrize("schedule", ["constant", "inverse_sqrt"])
def test_lr_follows_the_schedule_update_by_update(schedule, monkeypatch):
    warmup, lr = 4, 0.01
    f = lr_factor(schedule, warmup)
    if schedule == "inverse_sqrt":
        assert [f(n) for n in range(warmup)] == [1.0] * warmup  # constant during the warm-up
        for n in (4, 9, 16, 100, 10_000):
            assert f(n) == pytest.approx(math.sqrt(warmup / n))  # then proportional to 1/sqrt(step)
        assert f(16) / f(64) == pytest.approx(2.0)
    else:
        assert {f(n) for n in (0, 5, 10**6)} == {1.0}
    seen = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    vocab = MultitokenVocab([3, 3, 2])
    model = build_model(vocab.size, TINY)
    pairs = torch.tensor([A, B])
    history = train_seq2seq(model, pairs, pairs.flip(0), epochs=5, batch_size=1, lr=lr, schedule=schedule,
                            warmup_steps=warmup, progress=False)
    assert seen == pytest.approx([lr * f(n) for n in range(10)])  # 2 updates per epoch
    assert [h["train/lr"] for h in history] == pytest.approx(seen[1::2])


def test_lr_schedule_rejects_bad_settings():
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_factor("inverse_sqrt", 0)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("cosine", 10)


# --- metrics -------------------------------------------------------------------------------------


def test_rank_of_requires_whole_multitoken():
    ranked = torch.tensor([
        [[1, 2, 0], [1, 2, 1], [3, 3, 3]],   # truth at position 1; position 0 differs only in the last token
        [[1, 2, 0], [-1, -1, -1], [-1, -1, -1]],  # semantic levels match, dedup token differs: no hit
        [[4, 4, 4], [5, 5, 5], [6, 6, 6]],   # truth last
        [[7, 7, 7], [7, 7, 7], [8, 8, 8]],   # first occurrence counts
    ])
    truth = torch.tensor([[1, 2, 1], [1, 2, 1], [6, 6, 6], [7, 7, 7]])
    ranks = rank_of(ranked, truth)
    assert ranks.tolist() == [1, -1, 2, 0]
    assert recall_at(ranks, 1) == pytest.approx(1 / 4)
    assert recall_at(ranks, 2) == pytest.approx(2 / 4)
    assert recall_at(ranks, 10) == pytest.approx(3 / 4)
    assert ndcg_at(ranks, 1) == pytest.approx(1 / 4)
    assert ndcg_at(ranks, 2) == pytest.approx((1 / math.log2(3) + 1) / 4)
    assert ndcg_at(ranks, 3) == pytest.approx((1 / math.log2(3) + 0.5 + 1) / 4)
    with pytest.raises(ValueError):
        rank_of(ranked, truth[:, :2])
    with pytest.raises(ValueError):
        recall_at(ranks, 0)
