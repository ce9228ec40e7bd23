import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


_WORDS = "the a cat dog sat on mat hello world movie film about love war space robot and in is genre genres".split()
_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
_PUNCTUATION = list(".,:;!?()-'\"&/|")


@pytest.fixture(scope="session")
def tiny_model(  # shared: tests/test_embeddings.py, tests/test_workflow.py
        tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, 32-d BERT + mean pooling, saved as a sentence-transformers dir.

    No Normalize module (unlike MPNet), so that ``normalize=`` is what makes rows unit.
    """
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    root = tmp_path_factory.mktemp("tiny")
    hf_dir = root / "hf"
    hf_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *_LETTERS, *(f"##{c}" for c in _LETTERS),
             *_PUNCTUATION]
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(hf_dir)
    # transformers 5 takes the WordPiece vocabulary as `vocab` (it ignores `vocab_file`).
    tokenizer = transformers.BertTokenizerFast(vocab=str(hf_dir / "vocab.txt"))
    assert tokenizer.unk_token_id not in tokenizer("robot movie")["input_ids"], "vocab not loaded"
    tokenizer.save_pretrained(hf_dir)

    transformer = Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(
        modules=[transformer, Pooling(transformer.get_embedding_dimension())], device="cpu"
    )
    st_dir = root / "st"
    model.save(str(st_dir))
    return st_dir
