"""Forecasts from a saved Spark `PipelineModel`, computed in-process with numpy and no JVM.

`Spark transform` costs ~125 ms per request even on a warm session; walking the same trees here
costs microseconds and gives the same numbers bit for bit. The model folder is read directly:
the pipeline's `metadata/part-*` JSON, then each stage's metadata and `data/` parquet. Supported
stages: `StringIndexerModel`s, one `VectorAssembler` and a final decision-tree, random-forest or
GBT regressor - the shape `salesflow.spark.pipeline` builds, with any feature columns.
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
from salesflow.serving.jvm_float import jvm_double_lanes, product_error, vector_ddot

__all__ = ["Forecaster"]

_ML = "org.apache.spark.ml."
_INDEXER = _ML + "feature.StringIndexerModel"
_ASSEMBLER = _ML + "feature.VectorAssembler"
_TREE = _ML + "regression.DecisionTreeRegressionModel"
_FOREST = _ML + "regression.RandomForestRegressionModel"
_GBT = _ML + "regression.GBTRegressionModel"
_REGRESSORS = {_TREE: "decision_tree", _FOREST: "random_forest", _GBT: "gbt"}
_EXPECTED = (
    "a Spark PipelineModel folder (metadata/part-*, stages/<i>_<uid>/) whose stages are "
    "StringIndexerModels, one VectorAssembler and a DecisionTree, RandomForest or GBT regressor"
)
#: Rows walked at once: keeps a (trees x rows) node array in L2 cache for large batches.
_CHUNK_ROWS = 8192

Int = NDArray[np.intp]
Float = NDArray[np.float64]


def _metadata(folder: Path) -> dict[str, Any]:
    """A saved stage's metadata JSON (Spark writes it as one line in metadata/part-*)."""
    parts = sorted((folder / "metadata").glob("part-*"))
    if not parts:
        raise ModelError(
            f"{folder} is not a saved Spark stage: no metadata/part-* file; expected {_EXPECTED}"
        )
    try:
        meta = json.loads(parts[0].read_text(encoding="utf-8").splitlines()[0])
    except (OSError, IndexError, ValueError) as exc:
        raise ModelError(f"unreadable model metadata {parts[0]}: {exc}") from exc
    if not isinstance(meta, dict) or "class" not in meta:
        raise ModelError(f"model metadata {parts[0]} has no 'class'; expected {_EXPECTED}")
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


class _Indexer:
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


def _indexers(meta: Mapping[str, Any], folder: Path) -> list[_Indexer]:
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
        _Indexer(i, o, tuple(ls), handle == "keep")
        for i, o, ls in zip(inputs, outputs, labels, strict=True)
    ]


@dataclass
class _Tree:
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


def _trees(table: pa.Table, stage: str) -> list[_Tree]:
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
        trees.append(_Tree(**cols, value=value, categories=[lists[i] for i in order]))
    return trees


class _Forest:
    """All trees as flat node arrays, walked together one level per step with one table lookup.

    Each node owns a segment of `table` holding, for every code of its split feature, the node a
    row with that code moves to: a categorical code is the category index; a numeric feature's
    code is the value's bin among the thresholds any tree splits it at, so `x <= threshold` is
    `bin <= rank of threshold` (NaN is past every threshold and goes right, as in Spark). A leaf's
    segment points at itself, so every row takes `depth` steps without a check.
    """

    def __init__(
        self,
        trees: list[_Tree],
        weights: Float,
        n_features: int,
        categorical: Mapping[int, int],
        stage: str,
    ) -> None:
        """`categorical`: feature index -> codes its indexer emits (labels + the unseen one)."""
        sizes = [t.value.size for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        self.roots: Int = offsets[:, None]
        self.value: Float = np.concatenate([t.value for t in trees])
        feature = np.concatenate([t.feature for t in trees])
        left = np.concatenate([t.left + o for t, o in zip(trees, offsets, strict=True)])
        right = np.concatenate([t.right + o for t, o in zip(trees, offsets, strict=True)])
        num_categories = np.concatenate([t.num_categories for t in trees])
        lists = [c for t in trees for c in t.categories]
        split = np.concatenate([t.left for t in trees]) >= 0
        is_cat = split & (num_categories >= 0)
        self._check(feature[split], is_cat[split], n_features, categorical, stage)
        self.categorical = set(feature[is_cat].tolist())
        # Sorted distinct thresholds of each numeric feature: a value's code is its bin among them.
        numeric = split & ~is_cat
        self.thresholds: list[Float] = [
            np.unique([lists[i][0] for i in np.flatnonzero(numeric & (feature == f))])
            for f in range(n_features)
        ]
        n_codes = [
            max(categorical[f], *num_categories[is_cat & (feature == f)].tolist())
            if f in self.categorical
            else len(self.thresholds[f]) + 1
            for f in range(n_features)
        ]
        # A leaf reads the feature with the fewest codes: the smallest segment that is safe.
        self.feature: Int = np.where(split, feature, int(np.argmin(n_codes)))
        widths = np.array(n_codes, dtype=np.intp)[self.feature]
        self.base: Int = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.intp)
        self.table: Int = np.empty(int(widths.sum()), dtype=np.intp)
        for i in range(feature.size):
            segment = self.table[self.base[i] : self.base[i] + widths[i]]
            if not split[i]:
                segment[:] = i
            elif is_cat[i]:
                segment[:] = right[i]
                segment[np.asarray(lists[i], dtype=np.intp)] = left[i]
            else:  # values in bins 0..rank are <= the threshold
                rank = int(np.searchsorted(self.thresholds[feature[i]], lists[i][0]))
                segment[: rank + 1], segment[rank + 1 :] = left[i], right[i]
        self.depth = max(_depth(t) for t in trees)
        # GBT: each leaf's weight * value, rounded, and the exact rounding error (for the FMA).
        tree_weight = np.repeat(weights, sizes)
        self.product: Float = self.value * tree_weight
        self.product_error: Float = product_error(self.value, tree_weight, self.product)

    @staticmethod
    def _check(
        feature: Int,
        is_cat: NDArray[np.bool_],
        n_features: int,
        categorical: Mapping[int, int],
        stage: str,
    ) -> None:
        if feature.size and (feature.max() >= n_features or feature.min() < 0):
            raise ModelError(f"{stage}: splits on feature {feature.max()} of {n_features}")
        bad = sorted(set(feature[is_cat].tolist()) - set(categorical))
        if bad:
            raise ModelError(
                f"{stage}: categorical splits on features {bad}, which no StringIndexer "
                "produces; only indexed columns can be categorical"
            )
        both = sorted(set(feature[is_cat].tolist()) & set(feature[~is_cat].tolist()))
        if both:
            raise ModelError(f"{stage}: features {both} have both categorical and numeric splits")

    def bins(self, feature: int, values: NDArray[Any]) -> Int:
        """Codes of a numeric feature: how many of its split thresholds lie below each value."""
        return np.searchsorted(self.thresholds[feature], values, side="left")

    def leaves(self, codes: Int) -> Int:
        """The leaf each tree sends each row to: node ids, shape (trees, rows)."""
        n, n_features = codes.shape
        flat = codes.ravel()
        row_base = (np.arange(n, dtype=np.intp) * n_features)[None, :]
        node = self.roots  # (trees, 1): broadcasts to (trees, rows) at the first step
        for _ in range(self.depth):
            at = self.feature[node] if n == 1 else row_base + self.feature[node]
            node = self.table[self.base[node] + flat[at]]
        return np.broadcast_to(node, (node.shape[0], n))


def _depth(tree: _Tree) -> int:
    level, depth = np.array([0]), 0
    while (level := level[tree.left[level] >= 0]).size:
        level = np.concatenate([tree.left[level], tree.right[level]])
        depth += 1
    return depth


class Forecaster:
    """A loaded pipeline model that predicts from plain columns, equal to Spark's `transform`."""

    def __init__(
        self,
        indexers: list[_Indexer],
        inputs: list[str],
        forest: _Forest,
        kind: str,
        weights: Float,
        dot_lanes: int,
        *,
        keep_nan: bool = False,
    ) -> None:
        self.kind = kind
        self._indexers = {ix.output_col: ix for ix in indexers}
        self._by_input = {ix.input_col: ix for ix in indexers}
        self._inputs = inputs
        self._forest = forest
        self._weights = weights
        self._lanes = dot_lanes
        self._keep_nan = keep_nan
        self.feature_columns: tuple[str, ...] = tuple(
            self._indexers[c].input_col if c in self._indexers else c for c in inputs
        )

    @classmethod
    def load(cls, pipeline_dir: Path, *, dot_lanes: int | None = None) -> Forecaster:
        """Read a saved PipelineModel folder. `dot_lanes`: see `jvm_double_lanes` (GBT only)."""
        root = Path(pipeline_dir)
        if not root.is_dir():
            raise ModelError(f"{root} is not a folder; expected {_EXPECTED}")
        meta = _metadata(root)
        if meta["class"] != _ML + "PipelineModel":
            raise ModelError(f"{root} holds a {meta['class']}; expected {_EXPECTED}")
        uids = meta.get("paramMap", {}).get("stageUids") or []
        stages: list[tuple[dict[str, Any], Path]] = []
        for uid in uids:
            found = list((root / "stages").glob(f"*_{uid}"))
            if len(found) != 1:
                raise ModelError(f"{root}: stage {uid} has no folder stages/<i>_{uid}")
            stages.append((_metadata(found[0]), found[0]))
        if not stages or stages[-1][0]["class"] not in _REGRESSORS:
            raise ModelError(
                f"{root}: the last stage is not a tree regressor; expected {_EXPECTED}"
            )
        indexers: list[_Indexer] = []
        assembler: dict[str, Any] | None = None
        for stage_meta, folder in stages[:-1]:
            if stage_meta["class"] == _INDEXER:
                indexers.extend(_indexers(stage_meta, folder))
            elif stage_meta["class"] == _ASSEMBLER and assembler is None:
                assembler = stage_meta
            else:
                raise ModelError(
                    f"{root}: unsupported stage {stage_meta['class']}; expected {_EXPECTED}"
                )
        if assembler is None:
            raise ModelError(f"{root}: no VectorAssembler stage; expected {_EXPECTED}")
        reg_meta, reg_dir = stages[-1]
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
        by_output = {ix.output_col: ix for ix in indexers}
        outputs = set(by_output)
        categorical = {
            i: len(by_output[c].labels) + 1 for i, c in enumerate(inputs) if c in outputs
        }
        kind = _REGRESSORS[reg_meta["class"]]
        trees = _trees(_table(reg_dir / "data"), str(reg_dir))
        weights = np.ones(len(trees))
        if kind != "decision_tree":
            meta_rows = sorted(_table(reg_dir / "treesMetadata").to_pylist(), key=lambda r: r["_1"])
            weights = np.array([r["_3"] for r in meta_rows], dtype=np.float64)
            if weights.size != len(trees):
                raise ModelError(f"{reg_dir}: {len(trees)} trees but {weights.size} tree weights")
        lanes = dot_lanes if dot_lanes is not None else jvm_double_lanes()
        if lanes < 1:
            raise ValueError(f"dot_lanes must be >= 1, got {lanes}")
        forest = _Forest(trees, weights, len(inputs), categorical, str(reg_dir))
        keep_nan = _param(assembler, "handleInvalid") == "keep"
        return cls(indexers, inputs, forest, kind, weights, lanes, keep_nan=keep_nan)

    @property
    def num_trees(self) -> int:
        """Trees in the model (1 for a single decision tree)."""
        return int(self._weights.size)

    def known_labels(self, column: str) -> list[str]:
        """The labels an indexed input column (e.g. 'store_id') was trained on, in index order."""
        return list(self._indexer(column).labels)

    def unknown_mask(self, column: str, values: Sequence[Any]) -> NDArray[np.bool_]:
        """True where a value of an indexed input column was not seen in training."""
        ix = self._indexer(column)
        return ix.lookup(values) == len(ix.labels)

    def predict(self, columns: Mapping[str, Sequence[Any]]) -> Float:
        """One forecast per row of `columns` (column name -> values), as Spark would compute it."""
        missing = [c for c in self.feature_columns if c not in columns]
        if missing:
            raise InputError(
                f"missing columns {missing}; the model needs "
                f"{list(self.feature_columns)} and got {sorted(columns)}"
            )
        lengths = {c: len(columns[c]) for c in self.feature_columns}
        if len(set(lengths.values())) > 1:
            raise InputError(f"columns have different lengths: {lengths}")
        n = next(iter(lengths.values()), 0)
        forest = self._forest
        codes = np.empty((n, len(self._inputs)), dtype=np.intp)
        for j, (col, raw) in enumerate(zip(self._inputs, self.feature_columns, strict=True)):
            if col not in self._indexers:
                codes[:, j] = forest.bins(j, self._numbers(raw, columns[raw], self._keep_nan))
            elif j in forest.categorical:
                codes[:, j] = self._indexers[col].codes(columns[raw])
            else:  # an index the trees split as a number
                codes[:, j] = forest.bins(j, self._indexers[col].codes(columns[raw]))
        out = np.empty(n, dtype=np.float64)
        for start in range(0, n, _CHUNK_ROWS):
            rows = slice(start, start + _CHUNK_ROWS)
            out[rows] = self._combine(self._forest.leaves(codes[rows]))
        return out

    def _combine(self, leaves: Int) -> Float:
        """Spark's ensemble arithmetic: the tree, the mean of a forest, the weighted GBT sum."""
        forest = self._forest
        if self.kind == "decision_tree":
            return forest.value[leaves[0]]
        if self.kind == "random_forest":  # Spark ignores RF tree weights (all 1.0): sum, divide
            return np.add.accumulate(forest.value[leaves], axis=0)[-1] / leaves.shape[0]
        return vector_ddot(forest.product[leaves], forest.product_error[leaves], self._lanes)

    def _indexer(self, column: str) -> _Indexer:
        if column not in self._by_input:
            raise InputError(
                f"{column!r} is not an indexed column; indexed columns are {sorted(self._by_input)}"
            )
        return self._by_input[column]

    @staticmethod
    def _numbers(column: str, values: Sequence[Any], keep_nan: bool) -> Float:
        """A numeric column as float64; a missing value is an error unless the assembler keeps it."""
        try:
            out = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"column {column!r} must be numeric: {exc}") from exc
        if not keep_nan and (bad := np.flatnonzero(np.isnan(out))).size:
            raise InputError(f"column {column!r}, row {bad[0]}: missing value (null or NaN)")
        return out
