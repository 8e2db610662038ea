"""Pipeline candidates: the settings' forest and the original project's pipeline, by name."""

from __future__ import annotations

import pytest

from salesflow.config import Settings
from salesflow.spark.candidates import final_models, pipeline_candidate
from salesflow.spark.pipeline import HistoryShape

SHAPE = HistoryShape(rows=90, stores=3, products=40, first_index=24000, last_index=24059)


def test_the_forest_is_the_settings_forest(settings: Settings) -> None:
    params = pipeline_candidate("forest", settings, SHAPE, "month")
    assert params["candidate"] == "forest"
    assert (params["numTrees"], params["maxDepth"]) == (settings.num_trees, settings.max_depth)
    assert params["featureSubsetStrategy"] == "all"
    assert params["maxBins"] == 42  # raised to the 40 products plus the unknown one and a spare


def test_the_original_is_sparks_default_random_forest(settings: Settings) -> None:
    params = pipeline_candidate("original", settings, SHAPE, "month")
    assert params["candidate"] == "original"
    assert params["regressor"] == "random_forest"
    assert (params["numTrees"], params["maxDepth"], params["featureSubsetStrategy"]) == (
        20,
        5,
        "auto",
    )
    assert params["features"] == ["month", "year", "store", "product"]
    assert params["maxBins"] == 42  # the original's 32 would refuse 40 product categories


def test_an_unknown_pipeline_candidate_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="not a pipeline candidate"):
        pipeline_candidate("AutoETS", settings, SHAPE, "month")


def test_candidates_are_validated_by_name() -> None:
    assert Settings(candidates=["original"]).candidates == ["original"]
    with pytest.raises(ValueError, match="candidates"):
        Settings(candidates=["prophet"])
    with pytest.raises(ValueError, match="candidates"):
        Settings(candidates=[])


def test_a_combination_table_uses_the_models_it_was_backtested_with() -> None:
    settings = Settings(candidates=["forest", "AutoARIMA", "AutoETS", "Combination"])
    assert final_models(settings, "Combination") == [
        "AutoARIMA",
        "AutoETS",
        "AutoTheta",
        "SeasonalNaive",
    ]
    assert final_models(settings, "AutoETS") == ["AutoETS"]
