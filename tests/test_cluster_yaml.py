"""cluster.yaml is a valid Ray cluster-launcher config that starts elitemon on the head node."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_passes_ray_schema_validation() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    validate_config(prepare_config(config))  # fills Ray's defaults, then raises on any schema violation
    assert config["available_node_types"]["gpu_worker"]["min_workers"] >= 1


def test_head_node_starts_the_aggregator_after_ray() -> None:
    commands = yaml.safe_load(CLUSTER_YAML.read_text())["head_start_ray_commands"]
    ray_start = next(i for i, c in enumerate(commands) if c.startswith("ray start --head"))
    elitemon_start = next(i for i, c in enumerate(commands) if "elitemon start" in c)
    assert ray_start < elitemon_start


def test_the_validation_is_not_vacuous() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    config["max_workers"] = "many"
    try:
        validate_config(prepare_config(config))
    except Exception as error:  # jsonschema's ValidationError, wrapped by Ray in some versions
        assert "max_workers" in str(error) or "many" in str(error)
    else:
        raise AssertionError("an invalid max_workers passed validation")


def test_setup_installs_elitemon_with_a_python_it_supports() -> None:
    """Ubuntu 22.04's python3 is 3.10: `pip install` of elitemon (requires-python >= 3.11) was refused
    on every node."""
    import re
    import tomllib

    from packaging.specifiers import SpecifierSet

    requires = tomllib.loads((CLUSTER_YAML.parent / "pyproject.toml").read_text())["project"]["requires-python"]
    commands = yaml.safe_load(CLUSTER_YAML.read_text())["setup_commands"]
    (venv_python,) = re.findall(r"python(3\.\d+) -m venv ~/elitemon-venv", " ".join(commands))
    assert SpecifierSet(requires).contains(venv_python)
    installs = [c for c in commands if "pip install -e" in c]
    assert installs and all(c.startswith("~/elitemon-venv/bin/python -m pip") for c in installs)
