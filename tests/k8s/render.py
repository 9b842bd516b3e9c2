"""Lint and render the Helm chart with the real Helm engine (helm-sdkpy bundles Helm v4), offline.

Rendering = Helm `Install` against the loopback fake API server (tests/k8s/fake_apiserver.py); the release's
`manifest` is the rendered YAML. Lint takes no values files in helm-sdkpy, so for an overlay it lints a
temporary copy of the chart whose values.yaml is the coalesced defaults + overlay (what `helm lint -f` does).

CLI:  python -m tests.k8s.render lint            # default, primary, standby
      python -m tests.k8s.render render [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.fake_apiserver import fake_apiserver

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "tts"
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "primary": ["values-primary.yaml"],
    "standby": ["values-standby.yaml"],
}
RELEASE = "tts"
NAMESPACE = "tts"


class HelmFailure(RuntimeError):
    """Helm lint or render failed; the message carries Helm's text."""


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Helm-style coalesce: maps merge recursively, everything else (lists included) is replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def overlay_values(value_set: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The user-supplied values (overlay files of a value set, then `extra`), without chart defaults."""
    if value_set not in VALUE_SETS:
        raise ValueError(f"unknown value set {value_set!r}; expected one of {sorted(VALUE_SETS)}")
    merged: dict[str, Any] = {}
    for name in VALUE_SETS[value_set]:
        merged = deep_merge(merged, yaml.safe_load((CHART_DIR / name).read_text()) or {})
    return deep_merge(merged, extra or {})


def effective_values(value_set: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return deep_merge(defaults, overlay_values(value_set, extra))


def render_manifest(
    value_set: str = "default",
    extra: dict[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> str:
    """Rendered YAML of all chart templates for a value set (Helm Install against the fake API server)."""
    import helm_sdkpy

    values = overlay_values(value_set, extra)
    with fake_apiserver() as kubeconfig:
        config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
        try:
            result = asyncio.run(
                helm_sdkpy.Install(config).run(release, str(CHART_DIR), values=values, wait=False, timeout=60)
            )
        except helm_sdkpy.HelmError as exc:
            raise HelmFailure(f"helm render ({value_set}) failed: {exc}") from exc
    manifest = result.get("manifest")
    if not manifest:
        raise HelmFailure(f"helm render ({value_set}) returned no manifest: {sorted(result)}")
    return manifest


def render_objects(value_set: str = "default", extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_manifest(value_set, extra)) if doc]


def lint(value_set: str = "default", chart_dir: Path = CHART_DIR) -> dict[str, Any]:
    """Helm lint of the chart with a value set; raises HelmFailure on warnings and errors."""
    import helm_sdkpy

    with tempfile.TemporaryDirectory(prefix="helm-lint-") as tmp:
        chart = chart_dir
        if VALUE_SETS[value_set]:
            chart = Path(tmp) / chart_dir.name
            shutil.copytree(chart_dir, chart, symlinks=False)  # resolves files/serve-config.yaml
            (chart / "values.yaml").write_text(yaml.safe_dump(effective_values(value_set), sort_keys=False))
        config = helm_sdkpy.Configuration(namespace=NAMESPACE)
        try:
            result = asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))
        except helm_sdkpy.HelmError as exc:
            raise HelmFailure(f"helm lint ({value_set}) failed: {exc}") from exc
    # Helm's support.Message severities: 1 info, 2 warning, 3 error. Warnings fail too (`helm lint --strict`).
    # helm-sdkpy passes Go errors through as `{}`, so only severity and path are known.
    messages = result.get("Messages") or []
    bad = [m for m in messages if int(m.get("Severity", 0)) >= 2]
    if bad or result.get("Errors"):
        where = ", ".join(f"{m.get('Path')} (severity {m.get('Severity')})" for m in bad) or "unknown"
        raise HelmFailure(f"helm lint ({value_set}) failed in {where}: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["lint", "render"])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "helm", help="render: output directory")
    parser.add_argument("--value-set", choices=sorted(VALUE_SETS), action="append")
    args = parser.parse_args(argv)
    sets = args.value_set or list(VALUE_SETS)
    try:
        for name in sets:
            if args.action == "lint":
                result = lint(name)
                infos = [f"{m.get('Path')}" for m in result.get("Messages") or []]
                print(f"helm lint {name}: ok (info: {', '.join(infos) or 'none'})")
            else:
                manifest = render_manifest(name)
                args.out.mkdir(parents=True, exist_ok=True)
                path = args.out / f"{name}.yaml"
                path.write_text(manifest)
                kinds = [d["kind"] for d in yaml.safe_load_all(manifest) if d]
                print(f"helm render {name}: {len(kinds)} objects -> {path}")
    except HelmFailure as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
