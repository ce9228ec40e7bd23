"""WordNet noun closure: sources, lexnames, subtree cut, and the reference counts on WordNet 3.0."""

import pytest

from hrq.data import wordnet


def test_lexnames_table_is_wordnet_3s():
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"


def test_no_wordnet_is_a_clear_error(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setattr(wordnet, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.setattr(nltk.data, "find", lambda *_: (_ for _ in ()).throw(LookupError("no")))
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base") as err:
        wordnet.find_wordnet(None)
    assert "dict_dir" in str(err.value) and "nltk.downloader wordnet" in str(err.value)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        wordnet.find_wordnet(tmp_path)


def test_subtree_keeps_root_and_its_hyponyms_only():
    edges = [("dog", "canine"), ("dog", "mammal"), ("canine", "mammal"), ("mammal", "animal"),
             ("dog", "animal"), ("canine", "animal"), ("fish", "animal"), ("tusker.n.01", "mammal")]
    assert wordnet.subtree(edges, "mammal") == [("dog", "canine"), ("dog", "mammal"), ("canine", "mammal"),
                                                ("tusker.n.01", "mammal")]
    with pytest.raises(ValueError, match="no hyponyms"):
        wordnet.subtree(edges, "fish")


def _available():
    try:
        wordnet.find_wordnet(None)
        return True
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _available(), reason="no WordNet 3.0 here (apt-get install wordnet-base, or nltk's corpus)")
def test_reference_counts_on_wordnet_30(tmp_path):
    wn = wordnet.open_wordnet(None, tmp_path / "dict")
    edges = wordnet.noun_closure(wn)
    assert len({n for e in edges for n in e}) == 82_115
    assert len(edges) == 743_086
    assert ("dog.n.01", "mammal.n.01") in set(edges)
    mammals = wordnet.subtree(edges, "mammal.n.01")
    assert len({n for e in mammals for n in e}) == 1_180
    assert len(mammals) == 6_540
