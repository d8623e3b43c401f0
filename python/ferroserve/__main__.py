"""`python -m ferroserve ...` runs the ferroserve binary that the wheel installed, with the same
arguments: `python -m ferroserve serve --model_dir /mnt/models`, or KServe's way, flags only
(`python -m ferroserve --model_name=m --model_dir=/mnt/models`), which means `serve`."""

import os
import sys

from .server import find_binary


def main() -> None:
    binary = find_binary()
    os.execv(binary, [binary, *sys.argv[1:]])


if __name__ == "__main__":
    main()
