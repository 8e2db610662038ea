"""All trees of a model as flat node arrays, walked together with numpy one level per step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from salesflow.errors import ModelError
from salesflow.serving.jvm_float import product_error
from salesflow.serving.saved_pipeline import Float, Int, Tree

__all__ = ["FlatForest"]


class FlatForest:
    """All trees as flat node arrays, walked together one level per step with one table lookup.

    Each node owns a segment of `table` holding, for every code of its split feature, the node a
    row with that code moves to: a categorical code is the category index; a numeric feature's
    code is the value's bin among the thresholds any tree splits it at, so `x <= threshold` is
    `bin <= rank of threshold` (NaN is past every threshold and goes right, as in Spark). A leaf's
    segment points at itself, so every row takes `depth` steps without a check.
    """

    def __init__(
        self,
        trees: list[Tree],
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


def _depth(tree: Tree) -> int:
    level, depth = np.array([0]), 0
    while (level := level[tree.left[level] >= 0]).size:
        level = np.concatenate([tree.left[level], tree.right[level]])
        depth += 1
    return depth
