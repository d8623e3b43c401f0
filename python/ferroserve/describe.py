"""`python -m ferroserve.describe file.py:app`: prints the deployments of a bound application
as JSON (name, decorator options, whether it is the ingress), for `ferroserve serve`'s
`applications:` config entries."""

import json
import sys

from .deployment import describe


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ferroserve.describe file.py:app", file=sys.stderr)
        return 2
    json.dump(describe(argv[0]), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
