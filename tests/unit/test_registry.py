"""The model registry: version allocation, immutability, activation, history, races."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from salesflow.errors import ModelError, ModelNotFoundError
from salesflow.registry import ModelRegistry, normalise_version


def _publish(
    registry: ModelRegistry, marker: str = "x", *, activate: bool = True
) -> tuple[str, Path]:
    with registry.staging() as staged:
        (staged / "pipeline").mkdir()
        (staged / "pipeline" / "model.bin").write_text(marker)
        version = registry.publish(
            staged, {"rows_read": 10, "marker": marker}, activate=activate, reason="test", actor="t"
        )
    return version.version, version.path


def test_versions_are_allocated_in_order_with_metadata(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.versions() == [] and registry.active() is None
    first, path = _publish(registry, "a")
    second, _ = _publish(registry, "b", activate=False)
    assert (first, second) == ("v0001", "v0002")
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["version"] == "v0001" and meta["marker"] == "a" and meta["status"] == "active"
    assert meta["created_at"].endswith("Z")
    listed = registry.versions()
    assert [(v.version, v.active, v.metadata["status"]) for v in listed] == [
        ("v0001", True, "active"),
        ("v0002", False, "candidate"),
    ]
    assert listed[1].pipeline_path.joinpath("model.bin").read_text() == "b"
    assert not list((tmp_path / "models" / ".staging").iterdir())  # staging cleaned up


def test_publish_never_overwrites_an_existing_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    _publish(registry, "old")
    # A publisher that lost a race still believes v0001 is free: it must get v0002 instead.
    stale = iter(["v0001"])
    real_next = registry._next_version
    monkeypatch.setattr(registry, "_next_version", lambda: next(stale, None) or real_next())
    version, _ = _publish(registry, "new")
    assert version == "v0002"
    assert registry.get("v0001").pipeline_path.joinpath("model.bin").read_text() == "old"
    assert registry.get("v0001").metadata["marker"] == "old"


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(RuntimeError, match="fit failed"), registry.staging() as staged:
        (staged / "pipeline").mkdir()
        raise RuntimeError("fit failed")
    assert registry.versions() == [] and registry.active() is None
    assert not list((tmp_path / "models" / ".staging").iterdir())
    with pytest.raises(ModelError, match="nothing staged"):
        registry.publish(tmp_path / "gone", {}, activate=True, reason="r", actor="a")
    assert registry.versions() == [] and registry.history() == []


def test_activate_rollback_and_history(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    _publish(registry, "a")
    _publish(registry, "b")
    active = registry.active()
    assert active is not None and active.version == "v0002"
    rolled = registry.activate("1", reason="v2 is worse", actor="alice")
    assert rolled.version == "v0001" and rolled.active
    assert registry.get(2).metadata["status"] == "candidate"
    history = registry.history()
    assert [(h["version"], h["previous"], h["actor"]) for h in history] == [
        ("v0001", None, "t"),
        ("v0002", "v0001", "t"),
        ("v0001", "v0002", "alice"),
    ]
    assert history[-1]["reason"] == "v2 is worse" and history[-1]["at"].endswith("Z")


def test_unknown_versions_are_model_not_found(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    _publish(registry)
    with pytest.raises(ModelNotFoundError, match="no model version v0009"):
        registry.get("v9")
    with pytest.raises(ModelNotFoundError, match="not a model version"):
        registry.get("../v0001")
    with pytest.raises(ModelNotFoundError):
        registry.activate("v0009", reason="r", actor="a")
    assert registry.active() is not None and registry.active().version == "v0001"  # type: ignore[union-attr]
    assert normalise_version(" v12 ") == "v0012"


def test_folders_without_metadata_are_not_versions(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "v0001").mkdir(parents=True)  # e.g. copied by hand, incomplete
    (root / "notes").mkdir()
    registry = ModelRegistry(root)
    assert registry.versions() == []
    version, _ = _publish(registry)
    assert version == "v0002"
    assert [v.version for v in registry.versions()] == ["v0002"]


def test_two_registries_racing_get_distinct_versions(tmp_path: Path) -> None:
    root = tmp_path / "models"
    start = threading.Barrier(8)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        registry = ModelRegistry(root)  # each thread its own instance, as separate processes
        try:
            with registry.staging() as staged:
                (staged / "id").write_text(str(i))
                start.wait()
                results.append(
                    registry.publish(staged, {}, activate=True, reason="race", actor=str(i)).version
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(results) == [f"v{n:04d}" for n in range(1, 9)]
    registry = ModelRegistry(root)
    contents = {v.version: (v.path / "id").read_text() for v in registry.versions()}
    assert sorted(contents.values()) == [str(i) for i in range(8)]  # nobody overwrote anybody
    assert len(registry.history()) == 8
