"""The concept matrix of a probe set: a rendered set's ground-truth attributes (its
`attributes.parquet`) or a folder's labels, one concept per attribute value or label."""

from __future__ import annotations

from pathlib import Path

import torch

from coin_scale.concepts.matrix import ConceptMatrix, filter_concepts
from coin_scale.probe.folder import ProbeSet

PATH_COLUMN = "image_path"
"""Column of `attributes.parquet` with each image's path relative to the probe set directory."""



def _value_order(attribute: str, present: set[object]) -> list[object]:
    """Values of `attribute` in vocabulary order when it is a known attribute, else sorted."""
    from unity_pool import vocab

    known = list(vocab.ATTRIBUTES.get(attribute, ()))
    rest = sorted((v for v in present if v not in known), key=str)
    return [v for v in known if v in present] + rest


def _rendered_concepts(probe: ProbeSet, attributes_path: str) -> tuple[list[str], torch.Tensor]:
    import pyarrow.parquet as pq

    table = pq.read_table(attributes_path)
    if PATH_COLUMN not in table.column_names:
        raise ValueError(
            f"{attributes_path}: expected a column {PATH_COLUMN!r}; got {table.column_names}. "
            "Fix: re-render the probe set with `coin-scale render`."
        )
    columns = table.to_pydict()
    root = Path(probe.root)
    row_of = {str((root / rel).resolve()): row for row, rel in enumerate(columns.pop(PATH_COLUMN))}
    rows = [row_of.get(image.path) for image in probe.images]
    missing = [image.path for image, row in zip(probe.images, rows, strict=True) if row is None]
    if missing:
        raise ValueError(
            f"{attributes_path}: expected a row for every image of the probe set; got none for "
            f"{len(missing)} of {len(probe.images)} (e.g. {missing[0]}). Fix: re-render the probe "
            "set, or remove images that the renderer did not write."
        )
    names: list[str] = []
    rows_out: list[torch.Tensor] = []
    for attribute, values in columns.items():
        aligned = [values[row] for row in rows]  # type: ignore[index]
        for value in _value_order(attribute, {v for v in aligned if v is not None}):
            names.append(f"{attribute}={value}")
            rows_out.append(torch.tensor([v == value for v in aligned], dtype=torch.bool))
    return names, _stack(rows_out, len(rows))


def _label_concepts(probe: ProbeSet) -> tuple[list[str], torch.Tensor]:
    labels = [image.label for image in probe.images]
    values = sorted({label for label in labels if label is not None})
    rows = [torch.tensor([label == v for label in labels], dtype=torch.bool) for v in values]
    return [f"label={v}" for v in values], _stack(rows, len(labels))


def _stack(rows: list[torch.Tensor], n_images: int) -> torch.Tensor:
    return torch.stack(rows) if rows else torch.zeros(0, n_images, dtype=torch.bool)


def concepts_from_probe(probe: ProbeSet, *, min_count: int = 1) -> ConceptMatrix:
    """The concept matrix of a probe set, images in `probe.images` order.

    A rendered probe set (`probe.attributes_path`) gives one concept per attribute value; a folder
    gives `label=<label>` per label. Concepts in fewer than `min_count` images, or in every image,
    are dropped. Raises ValueError when the attributes miss an image or no concept is left.
    """
    if probe.attributes_path is not None:
        names, matrix = _rendered_concepts(probe, probe.attributes_path)
        source = probe.attributes_path
    else:
        names, matrix = _label_concepts(probe)
        source = "the folder names"
    concepts = filter_concepts(names, matrix, min_count=min_count)
    if concepts.n_concepts == 0:
        raise ValueError(
            f"{probe.root}: expected at least one concept present in >= {min_count} images and "
            f"absent from at least one; got none from {source} ({len(names)} before filtering). "
            "Fix: use a rendered probe set, put images in one folder per label, or lower min_count."
        )
    return concepts
