"""WordNet 3.0 noun hierarchy: the transitive closure of Nickel & Kiela / poincare-embeddings.

The closure is built exactly as facebookresearch/poincare-embeddings' ``transitive_closure.py``:
for every noun synset, (synset, h) for each h in its hypernym closure; for every instance
hyponym i of a synset, (i, h) for each h in i's instance-hypernym closure and in those
hypernyms' hypernym closures. Nouns are the synsets that occur in an edge.

Sources, first found wins:

1. ``dict_dir`` from the config (a WordNet 3.0 ``dict`` directory);
2. nltk's own ``wordnet`` corpus (``python -m nltk.downloader wordnet`` on a networked machine);
3. Debian/Ubuntu's ``wordnet-base`` package (``apt-get install wordnet-base``: /usr/share/wordnet).

A plain dict directory (2. aside) is copied into a private working directory with the
``lexnames`` file nltk's reader needs (the table of lexnames(5WN), which Debian ships only as a
man page), because nltk refuses to read corpora outside its data roots or through symlinks.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Iterable

DEBIAN_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")] + [
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")]
# lexnames(5WN): file number, name; the syntactic category is 1 noun, 2 verb, 3 adj, 4 adv.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

NOT_FOUND = (
    "no WordNet 3.0 found. Any one of these works:\n"
    "  - apt-get install wordnet-base            (Debian/Ubuntu; files in /usr/share/wordnet)\n"
    "  - python -m nltk.downloader wordnet       (on a networked machine; nltk's data directory)\n"
    "  - set datasets.<name>.dict_dir in the config to a WordNet 3.0 'dict' directory "
    "(https://wordnetcode.princeton.edu/3.0/WordNet-3.0.tar.gz)"
)


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def find_wordnet(dict_dir: str | Path | None = None) -> Path | None:
    """The first WordNet dict directory available (``None`` means nltk's own corpus)."""
    if dict_dir:
        path = Path(dict_dir)
        missing = [f for f in WORDNET_FILES if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"dict_dir {path} lacks WordNet files {missing}; {NOT_FOUND}")
        return path
    try:
        import nltk

        nltk.data.find("corpora/wordnet")
        return None
    except LookupError:
        pass
    if all((DEBIAN_DIR / f).is_file() for f in WORDNET_FILES):
        return DEBIAN_DIR
    raise FileNotFoundError(NOT_FOUND)


def open_wordnet(dict_dir: str | Path | None, workdir: str | Path):
    """An nltk ``WordNetCorpusReader`` over WordNet 3.0 (see the module doc for the sources).

    ``workdir`` receives the private copy of a plain dict directory (about 27 MB).
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    source = find_wordnet(dict_dir)
    if source is None:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet

    class WordNet30Reader(WordNetCorpusReader):
        # nltk maps other WordNet versions onto 3.0 through its own corpus's index.sense; a
        # dict directory without the version banner looks "other" but *is* 3.0: no mapping.
        def map_wn(self, version="oewn"):
            return None

    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o700)  # nltk refuses data roots that other accounts can write
    for name in WORDNET_FILES:
        target = work / name
        if not target.is_file() or target.stat().st_size != (source / name).stat().st_size:
            shutil.copyfile(source / name, target)
    (work / "lexnames").write_text(lexnames_text())
    if str(work) not in nltk.data.path:
        nltk.data.path.append(str(work))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return WordNet30Reader(str(work), None)


def noun_closure(wn) -> list[tuple[str, str]]:
    """Sorted (hyponym, hypernym) synset-name pairs of the noun closure (reference script)."""
    edges: set[tuple[str, str]] = set()
    for synset in wn.all_synsets(pos="n"):
        for hyper in synset.closure(lambda s: s.hypernyms()):
            edges.add((synset.name(), hyper.name()))
        for instance in synset.instance_hyponyms():
            for hyper in instance.closure(lambda s: s.instance_hypernyms()):
                edges.add((instance.name(), hyper.name()))
                for h in hyper.closure(lambda s: s.hypernyms()):
                    edges.add((instance.name(), h.name()))
    return sorted(edges)


# The reference drops mammal-subset edges whose "hyponym hypernym" string re.match-es a line of
# its mammals_filter.txt. All but two of those lines start with \s, which can never match at
# the start of the string, so the filter in effect removes the edges *from* these two nouns.
REFERENCE_EXCLUDED_HYPONYMS = {"mammal.n.01": ("tusker.n.01", "female_mammal.n.01")}


def subtree(edges: Iterable[tuple[str, str]], root: str) -> list[tuple[str, str]]:
    """The closure restricted to ``root`` and its hyponyms, as the reference script cuts its
    mammal subset (for ``mammal.n.01``: 1,180 nouns, 6,540 edges on WordNet 3.0)."""
    edges = list(edges)
    keep = {child for child, parent in edges if parent == root} | {root}
    if len(keep) == 1:
        raise ValueError(f"{root!r} has no hyponyms in the closure")
    drop = REFERENCE_EXCLUDED_HYPONYMS.get(root, ())
    return [(c, p) for c, p in edges if c in keep and p in keep and c not in drop]
