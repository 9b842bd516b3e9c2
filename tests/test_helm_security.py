"""Security of the rendered chart: checkov (own venv) with justified skips, and hardened Ray pod templates
(checkov has no policies for the RayService custom resource)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.render import REPO, VALUE_SETS
from tests.test_helm_chart import rendered

CHECKOV = REPO / ".venv-tools" / "bin" / "checkov"
CHECKOV_CONFIG = REPO / "helm" / "checkov.yaml"
README = REPO / "helm" / "README.md"


def _skips() -> list[str]:
    return list(yaml.safe_load(CHECKOV_CONFIG.read_text()).get("skip-check") or [])


def test_every_skipped_check_is_justified_in_the_readme() -> None:
    section = README.read_text().split("## Security scan", 1)[1].split("\n## ", 1)[0]
    justified = dict(re.findall(r"^\| (CKV_[A-Z0-9_]+)[^|]*\| (.+?) \|$", section, re.M))
    assert set(_skips()) == set(justified), "helm/checkov.yaml skip-check and README table differ"
    for check, why in justified.items():
        assert len(why.split()) >= 8, f"{check}: justification too thin"


def _pod_specs(objs: tuple[dict[str, Any], ...]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objs:
        if obj["kind"] == "RayService":
            cluster = obj["spec"]["rayClusterConfig"]
            specs.append(("head", cluster["headGroupSpec"]["template"]["spec"]))
            for group in cluster["workerGroupSpecs"]:
                specs.append((f"worker/{group['groupName']}", group["template"]["spec"]))
        elif obj["kind"] == "Deployment":
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
    return specs


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_pod_templates_are_hardened(value_set: str) -> None:
    specs = _pod_specs(rendered(value_set))
    assert any(name == "head" for name, _ in specs)
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        if name != "head":  # the head's token is used by the in-tree autoscaler sidecar
            assert spec.get("automountServiceAccountToken") is False, name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), (name, c["name"])
            assert ":" in c["image"] and not c["image"].endswith(":latest"), (name, c["name"])


@pytest.mark.slow
def test_checkov_passes_on_rendered_manifests(tmp_path: Path) -> None:
    if not CHECKOV.exists():
        pytest.skip("checkov venv missing: `make tools` (CI runs `make security-scan`)")
    from tests.k8s.render import render_manifest

    for value_set in VALUE_SETS:
        (tmp_path / f"{value_set}.yaml").write_text(render_manifest(value_set))
    proc = subprocess.run(
        [str(CHECKOV), "-d", str(tmp_path), "--config-file", str(CHECKOV_CONFIG)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"Passed checks: [1-9]\d*, Failed checks: 0", proc.stdout), proc.stdout[-2000:]
