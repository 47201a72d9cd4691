#!/usr/bin/python3
"""Puts a `loco compare` table into the README, so its numbers always come from real runs.

usage: scripts/results.py TABLE.md --readme README.md

Replaces what lies between the README's `<!-- results:begin -->` and `<!-- results:end -->`
markers with TABLE.md (as written by `loco compare ... --out DIR`, DIR/table.md). The quickstart
(scripts/quickstart.sh) writes runs/quickstart/compare/table.md.
"""
import argparse
import sys


def update_readme(path, text, section="results"):
    """Replaces what lies between the `<!-- SECTION:begin -->` and `<!-- SECTION:end -->` markers."""
    with open(path) as f:
        readme = f.read()
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    if begin not in readme or end not in readme:
        sys.exit(f"error: {path}: no {begin} ... {end} markers")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + text.rstrip("\n") + "\n" + end + tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="a table.md written by `loco compare`")
    parser.add_argument("--readme", required=True)
    args = parser.parse_args()
    try:
        text = open(args.table).read()
    except OSError as e:
        sys.exit(f"error: {args.table}: {e.strerror} (run `loco compare ... --out DIR` first)")
    if "|" not in text:
        sys.exit(f"error: {args.table}: no markdown table in it")
    update_readme(args.readme, text)
    print(f"updated {args.readme} from {args.table}")


if __name__ == "__main__":
    main()
