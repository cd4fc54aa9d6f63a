"""The compose files and `echovids serve` agree on how search workers are laid out over shards."""

from __future__ import annotations

from pathlib import Path

import yaml

from echovids.settings import Settings
from echovids.supervisor import service_commands

ROOT = Path(__file__).resolve().parent.parent


def test_the_shard_override_repeats_the_search_service_exactly() -> None:
    """docker-compose 1.x cannot `extends` a service with depends_on: docker-compose.shards.yml repeats it, and
    must not drift from it."""
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    override = yaml.safe_load((ROOT / "docker-compose.shards.yml").read_text())
    search, pinned = base["services"]["search"], override["x-search-shard"]
    assert pinned["environment"] == base["x-echovids-env"] == search["environment"]
    for key in ("image", "volumes", "depends_on", "healthcheck", "restart"):
        assert pinned[key] == search[key], key
    commands = {name: svc["command"] for name, svc in override["services"].items() if name.startswith("search-")}
    assert commands == {
        "search-shard-0": ["echovids", "worker", "search", "--shard", "0", "--merge"],
        "search-shard-1": ["echovids", "worker", "search", "--shard", "1", "--no-merge"],
    }


def test_serve_pins_one_search_worker_to_each_shard() -> None:
    plain = service_commands(Settings(search_shards=3))
    assert "search" in plain and not any(name.startswith("search-") for name in plain)
    pinned = service_commands(Settings(search_shards=3, search_pinned=True, search_processes=1))
    assert "search" not in pinned
    for shard in range(3):
        command = pinned[f"search-{shard}"]
        assert command[-5:] == ["--concurrency", "1", "--shard", str(shard), "--merge" if shard == 0 else "--no-merge"]
