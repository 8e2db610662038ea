"""A saved Spark `PipelineModel` folder read without Spark: stage metadata, indexer labels, trees.

The pipeline's `metadata/part-*` JSON names its stages; each stage folder holds its own metadata
and a `data/` parquet. Supported stages: `StringIndexerModel`s, one `VectorAssembler` and a final
decision-tree, random-forest or GBT regressor - the shape `salesflow.spark.pipeline` builds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from salesflow.errors import InputError, ModelError

__all__ = ["EXPECTED", "Float", "Indexer", "Int", "SavedPipeline", "Tree", "read_pipeline"]

_ML = "org.apache.spark.ml."
_INDEXER = _ML + "feature.StringIndexerModel"
_ASSEMBLER = _ML + "feature.VectorAssembler"
_TREE = _ML + "regression.DecisionTreeRegressionModel"
_FOREST = _ML + "regression.RandomForestRegressionModel"
_GBT = _ML + "regression.GBTRegressionModel"
_REGRESSORS = {_TREE: "decision_tree", _FOREST: "random_forest", _GBT: "gbt"}
#: What a servable model folder looks like, quoted in every refusal.
EXPECTED = (
    "a Spark PipelineModel folder (metadata/part-*, stages/<i>_<uid>/) whose stages are "
    "StringIndexerModels, one VectorAssembler and a DecisionTree, RandomForest or GBT regressor"
)

Int = NDArray[np.intp]
Float = NDArray[np.float64]
_Stage = tuple[dict[str, Any], Path]


def _metadata(folder: Path) -> dict[str, Any]:
    """A saved stage's metadata JSON (Spark writes it as one line in metadata/part-*)."""
    parts = sorted((folder / "metadata").glob("part-*"))
    if not parts:
        raise ModelError(
            f"{folder} is not a saved Spark stage: no metadata/part-* file; expected {EXPECTED}"
        )
    try:
        meta = json.loads(parts[0].read_text(encoding="utf-8").splitlines()[0])
    except (OSError, IndexError, ValueError) as exc:
        raise ModelError(f"unreadable model metadata {parts[0]}: {exc}") from exc
    if not isinstance(meta, dict) or "class" not in meta:
        raise ModelError(f"model metadata {parts[0]} has no 'class'; expected {EXPECTED}")
    return meta


def _param(meta: Mapping[str, Any], name: str) -> Any:
    """A stage parameter: the explicitly set value, else Spark's default."""
    for key in ("paramMap", "defaultParamMap"):
        if name in meta.get(key, {}):
            return meta[key][name]
    raise ModelError(f"stage {meta.get('uid')} ({meta['class']}) has no parameter {name!r}")


def _table(folder: Path) -> pa.Table:
    try:
        return pq.read_table(folder)  # pyarrow skips Spark's _SUCCESS and .crc files
    except (OSError, pa.ArrowException) as exc:
        raise ModelError(f"unreadable model data in {folder}: {exc}") from exc


class Indexer:
    """One StringIndexer column: label -> index, unseen labels -> len(labels) when keeping them."""

    def __init__(self, input_col: str, output_col: str, labels: Sequence[str], keep: bool) -> None:
        self.input_col, self.output_col, self.keep_invalid = input_col, output_col, keep
        self.labels: tuple[str, ...] = tuple(labels)
        self._lookup = {label: i for i, label in enumerate(self.labels)}

    def lookup(self, values: Sequence[Any]) -> Int:
        """Indexes of `values`; len(labels) for an unseen or missing value."""
        get, unseen = self._lookup.get, len(self.labels)
        # Spark casts a non-string input column to string before looking it up.
        return np.fromiter(
            (
                unseen if v is None else get(v if isinstance(v, str) else str(v), unseen)
                for v in values
            ),
            dtype=np.intp,
            count=len(values),
        )

    def codes(self, values: Sequence[Any]) -> Int:
        """What the indexer outputs: unseen values kept as len(labels), or an error."""
        out = self.lookup(values)
        if not self.keep_invalid and (bad := np.flatnonzero(out == len(self.labels))).size:
            raise InputError(
                f"column {self.input_col!r}, row {bad[0]}: unknown value "
                f"{values[bad[0]]!r}; the model knows {len(self.labels)} labels"
            )
        return out


def _indexers(meta: Mapping[str, Any], folder: Path) -> list[Indexer]:
    handle = _param(meta, "handleInvalid")
    if handle not in ("keep", "error"):
        raise ModelError(
            f"StringIndexer handleInvalid={handle!r} is not servable row by row; "
            "expected 'keep' or 'error'"
        )
    row = _table(folder / "data").to_pylist()
    if len(row) != 1:
        raise ModelError(f"StringIndexer data in {folder} has {len(row)} rows; expected 1")
    labels = row[0].get("labelsArray") or [row[0].get("labels")]  # Spark < 3.0 wrote "labels"
    pm = meta.get("paramMap", {})
    inputs = pm["inputCols"] if "inputCols" in pm else [_param(meta, "inputCol")]
    outputs = pm["outputCols"] if "outputCols" in pm else [_param(meta, "outputCol")]
    if len(labels) != len(inputs) or len(outputs) != len(inputs) or None in labels:
        raise ModelError(
            f"StringIndexer in {folder}: {len(inputs)} columns but {len(labels)} label lists"
        )
    return [
        Indexer(i, o, tuple(ls), handle == "keep")
        for i, o, ls in zip(inputs, outputs, labels, strict=True)
    ]


@dataclass
class Tree:
    """One tree as arrays indexed by Spark's node id (root 0); a leaf's children are -1.

    `categories` holds each split's leftCategoriesOrThreshold: the threshold of a numeric split
    (numCategories -1), else the categories that go left.
    """

    feature: Int
    left: Int
    right: Int
    value: Float
    num_categories: Int
    categories: list[list[float]]


def _trees(table: pa.Table, stage: str) -> list[Tree]:
    """Split Spark's node table (flat for one tree, `treeID` + `nodeData` for ensembles)."""
    if "nodeData" in table.column_names:
        tree_ids = table.column("treeID").to_numpy()
        nodes = pa.Table.from_arrays(
            table.column("nodeData").combine_chunks().flatten(),
            names=[f.name for f in table.schema.field("nodeData").type],
        )
    else:
        tree_ids, nodes = np.zeros(table.num_rows, dtype=np.int64), table
    try:
        split = nodes.column("split").combine_chunks()
        ids = nodes.column("id").to_numpy()
        lists = split.field("leftCategoriesOrThreshold").to_pylist()
        columns = {
            "feature": split.field("featureIndex").to_numpy(zero_copy_only=False),
            "left": nodes.column("leftChild").to_numpy(),
            "right": nodes.column("rightChild").to_numpy(),
            "value": nodes.column("prediction").to_numpy(),
            "num_categories": split.field("numCategories").to_numpy(zero_copy_only=False),
        }
    except (KeyError, pa.ArrowException) as exc:
        raise ModelError(
            f"{stage}: tree data lacks {exc}; expected Spark's NodeData columns "
            "id, prediction, leftChild, rightChild, split"
        ) from exc
    trees = []
    for tree_id in np.unique(tree_ids):
        rows = np.flatnonzero(tree_ids == tree_id)
        order = rows[np.argsort(ids[rows])]
        if not np.array_equal(ids[order], np.arange(order.size)):
            raise ModelError(f"{stage}: tree {tree_id} node ids are not 0..{order.size - 1}")
        cols = {k: v[order].astype(np.intp) for k, v in columns.items() if k != "value"}
        value = columns["value"][order].astype(np.float64)
        trees.append(Tree(**cols, value=value, categories=[lists[i] for i in order]))
    return trees


@dataclass(frozen=True)
class SavedPipeline:
    """What serving needs from a saved model: the indexers, the assembler's inputs, the trees.

    `categorical` maps a feature index to the codes its indexer emits (labels + the unseen one);
    `keep_nan` is the assembler keeping missing numbers instead of refusing them.
    """

    indexers: list[Indexer]
    inputs: list[str]
    kind: str
    trees: list[Tree]
    weights: Float
    categorical: dict[int, int]
    keep_nan: bool
    regressor_dir: Path


def read_pipeline(pipeline_dir: Path) -> SavedPipeline:
    """Read a saved PipelineModel folder, refusing any shape the in-process forest cannot serve."""
    root = Path(pipeline_dir)
    if not root.is_dir():
        raise ModelError(f"{root} is not a folder; expected {EXPECTED}")
    stages = _stages(root)
    indexers, assembler = _feature_stages(root, stages[:-1])
    reg_meta, reg_dir = stages[-1]
    inputs = _assembled_inputs(root, assembler, reg_meta)
    by_output = {ix.output_col: ix for ix in indexers}
    categorical = {i: len(by_output[c].labels) + 1 for i, c in enumerate(inputs) if c in by_output}
    kind = _REGRESSORS[reg_meta["class"]]
    trees = _trees(_table(reg_dir / "data"), str(reg_dir))
    return SavedPipeline(
        indexers=indexers,
        inputs=inputs,
        kind=kind,
        trees=trees,
        weights=_tree_weights(kind, reg_dir, len(trees)),
        categorical=categorical,
        keep_nan=_param(assembler, "handleInvalid") == "keep",
        regressor_dir=reg_dir,
    )


def _stages(root: Path) -> list[_Stage]:
    """Each stage's metadata and folder, in pipeline order; the last must be a tree regressor."""
    meta = _metadata(root)
    if meta["class"] != _ML + "PipelineModel":
        raise ModelError(f"{root} holds a {meta['class']}; expected {EXPECTED}")
    uids = meta.get("paramMap", {}).get("stageUids") or []
    stages: list[_Stage] = []
    for uid in uids:
        found = list((root / "stages").glob(f"*_{uid}"))
        if len(found) != 1:
            raise ModelError(f"{root}: stage {uid} has no folder stages/<i>_{uid}")
        stages.append((_metadata(found[0]), found[0]))
    if not stages or stages[-1][0]["class"] not in _REGRESSORS:
        raise ModelError(f"{root}: the last stage is not a tree regressor; expected {EXPECTED}")
    return stages


def _feature_stages(root: Path, stages: list[_Stage]) -> tuple[list[Indexer], dict[str, Any]]:
    """The indexers and the one assembler before the regressor; any other stage is refused."""
    indexers: list[Indexer] = []
    assembler: dict[str, Any] | None = None
    for stage_meta, folder in stages:
        if stage_meta["class"] == _INDEXER:
            indexers.extend(_indexers(stage_meta, folder))
        elif stage_meta["class"] == _ASSEMBLER and assembler is None:
            assembler = stage_meta
        else:
            raise ModelError(
                f"{root}: unsupported stage {stage_meta['class']}; expected {EXPECTED}"
            )
    if assembler is None:
        raise ModelError(f"{root}: no VectorAssembler stage; expected {EXPECTED}")
    return indexers, assembler


def _assembled_inputs(
    root: Path, assembler: Mapping[str, Any], reg_meta: Mapping[str, Any]
) -> list[str]:
    """The assembler's input columns, checked to be exactly the features the regressor reads."""
    inputs = list(_param(assembler, "inputCols"))
    if _param(reg_meta, "featuresCol") != _param(assembler, "outputCol"):
        raise ModelError(
            f"{root}: the regressor reads {_param(reg_meta, 'featuresCol')!r} "
            f"but the assembler writes {_param(assembler, 'outputCol')!r}"
        )
    n_features = reg_meta.get("numFeatures", len(inputs))
    if n_features != len(inputs):
        raise ModelError(
            f"{root}: the regressor expects {n_features} features but the "
            f"assembler packs {len(inputs)} ({inputs}); vector inputs are unsupported"
        )
    return inputs


def _tree_weights(kind: str, reg_dir: Path, n_trees: int) -> Float:
    """Each tree's weight: 1 for a single tree, else from the ensemble's treesMetadata."""
    if kind == "decision_tree":
        return np.ones(n_trees)
    meta_rows = sorted(_table(reg_dir / "treesMetadata").to_pylist(), key=lambda r: r["_1"])
    weights = np.array([r["_3"] for r in meta_rows], dtype=np.float64)
    if weights.size != n_trees:
        raise ModelError(f"{reg_dir}: {n_trees} trees but {weights.size} tree weights")
    return weights
