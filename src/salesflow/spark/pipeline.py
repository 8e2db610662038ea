"""The MLlib pipeline: index stores and products, assemble month/year/store/product, fit a regressor."""

from __future__ import annotations

from typing import Any

from pyspark.ml import Pipeline
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.ml.regression import GBTRegressor, RandomForestRegressor

from salesflow.config import Settings

__all__ = ["FEATURES", "build_pipeline", "pipeline_parameters"]

#: Model inputs, in the order VectorAssembler packs them.
FEATURES: tuple[str, ...] = ("month", "year", "store", "product")
#: Categories a StringIndexer with handleInvalid="keep" emits beyond the labels (the unknown one),
#: plus one spare so maxBins is never exactly at the edge.
_EXTRA_BINS = 2


def pipeline_parameters(settings: Settings, n_stores: int, n_products: int) -> dict[str, Any]:
    """The regressor's parameters as recorded in model metadata."""
    return {
        "regressor": settings.regressor,
        "numTrees": settings.num_trees,
        "maxDepth": settings.max_depth,
        "maxBins": max(settings.max_bins, n_stores + _EXTRA_BINS, n_products + _EXTRA_BINS),
        "seed": settings.seed,
        "granularity": settings.granularity,
        "features": list(FEATURES),
    }


def build_pipeline(settings: Settings, n_stores: int, n_products: int) -> Pipeline:
    """A fresh, unfitted pipeline sized for a catalogue of `n_stores` stores and `n_products`.

    StringIndexer metadata marks store and product as categorical, so the tree learners need
    maxBins >= categories (labels plus the "unknown" one that handleInvalid="keep" adds).
    """
    params = pipeline_parameters(settings, n_stores, n_products)
    stores = StringIndexer(inputCol="store_id", outputCol="store", handleInvalid="keep")
    products = StringIndexer(inputCol="product_id", outputCol="product", handleInvalid="keep")
    assembler = VectorAssembler(inputCols=list(FEATURES), outputCol="features")
    common: dict[str, Any] = {
        "featuresCol": "features",
        "labelCol": "quantity",
        "predictionCol": "prediction",
        "maxDepth": params["maxDepth"],
        "maxBins": params["maxBins"],
        "seed": params["seed"],
    }
    regressor: RandomForestRegressor | GBTRegressor
    if settings.regressor == "gbt":
        regressor = GBTRegressor(maxIter=params["numTrees"], **common)
    else:
        regressor = RandomForestRegressor(numTrees=params["numTrees"], **common)
    return Pipeline(stages=[stores, products, assembler, regressor])
