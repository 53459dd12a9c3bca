#!/usr/bin/env python3
"""render_chart.py CHART_DIR [VALUES_JSON] [NAMESPACE]

Renders a Helm chart offline with real Helm (helm-python-sdk, installed by
`cargo xtask setup`) as `helm install` would, release name `epic`, and prints
its CRDs and then every rendered manifest as one YAML stream (the tests
apply it to a real API server)."""
import json
import sys

import helm_python


def main(chart_dir: str, values: dict, namespace: str) -> int:
    chart = helm_python.Chart.load(chart_dir)
    try:
        rendered = chart.render(values or None, name="epic", namespace=namespace, is_install=True)
    except helm_python.HelmError as e:
        print(f"render: {e}", file=sys.stderr)
        return 1
    docs = []
    for crd in chart.crds or []:
        data = crd.get("data") if isinstance(crd, dict) else getattr(crd, "data", "")
        docs.append(data.decode() if isinstance(data, bytes) else data)
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        docs.append(f"# Source: {path}\n{rendered[path]}")
    print("\n---\n".join(docs))
    return 0


if __name__ == "__main__":
    values = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    namespace = sys.argv[3] if len(sys.argv) > 3 else "epic-system"
    sys.exit(main(sys.argv[1], values, namespace))
