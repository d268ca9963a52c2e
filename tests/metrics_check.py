"""Parse a Prometheus text exposition (format 0.0.4) with the reference Python client's
parser and print what it read as JSON, for tests/metrics.rs.

Reads the exposition on stdin. Prints {"version": ..., "families": [{"name", "type",
"help", "samples": [{"name", "labels", "value"}]}]}. Exits non-zero (with the
parser's error) when the text does not parse.
"""

import json
import sys
from importlib.metadata import version

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    families = []
    for f in text_string_to_metric_families(text):
        families.append(
            {
                "name": f.name,
                "type": f.type,
                "help": f.documentation,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for s in f.samples
                ],
            }
        )
    json.dump({"version": version("prometheus_client"), "families": families}, sys.stdout)


if __name__ == "__main__":
    main()
