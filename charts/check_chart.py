#!/usr/bin/env python3
"""check_chart.py CHART_DIR [VALUES_JSON]

Lints and renders a Helm chart offline with real Helm (helm-python-sdk),
then validates every rendered manifest and CRD against the Kubernetes
schemas (kubernetes-validate). Exit status 0 only if all of it passes;
every problem is printed with the template it came from, and the rendered
manifests (not the CRDs) and NOTES.txt are printed too, for the tests to
read. Values are checked against the chart's values.schema.json by Helm."""
import json
import sys

import helm_python
import kubernetes_validate
import yaml

KUBE_VERSION = "1.33.0"


def main(chart_dir: str, values: dict) -> int:
    problems = []
    report = helm_python.lint(chart_dir, values or None, strict=True, namespace="epic-system", kube_version="v" + KUBE_VERSION)
    for m in report.get("messages", []):
        if m.get("severity", 0) >= 2:
            problems.append(f"lint {m.get('path')}: {m.get('error')}")
    problems += [f"lint: {e}" for e in report.get("errors", [])]

    chart = helm_python.Chart.load(chart_dir)
    try:
        rendered = chart.render(values or None, name="epic", namespace="epic-system", is_install=True)
    except helm_python.HelmError as e:
        problems.append(f"render: {e}")
        rendered = {}
    kinds = []
    manifests = []
    notes = "".join(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    sources = [(path, text) for path, text in rendered.items() if not path.endswith("NOTES.txt")]
    for crd in chart.crds or []:
        name = crd.get("name") if isinstance(crd, dict) else getattr(crd, "name", "crd")
        data = crd.get("data") if isinstance(crd, dict) else getattr(crd, "data", "")
        if isinstance(data, bytes):
            data = data.decode()
        sources.append((f"crds/{name}", data))
    for path, text in sources:
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            kinds.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}")
            if not path.startswith("crds/"):
                manifests.append(doc)
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{path}: {doc.get('kind')}: {e.message} at {list(e.path)}")
    print(json.dumps({"objects": kinds, "problems": problems, "manifests": manifests, "notes": notes}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
