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
    assert model.training  # mode restored after decoding


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
