"""Checks that deploy/Dockerfile's dependency layer stubs every target of the workspace.

Usage: cargo metadata --no-deps --format-version 1 | check_dockerfile.py DOCKERFILE

The dependency layer copies only the manifests and writes an empty file for each target, so
that cargo can read the workspace and build the dependencies; a target added to a manifest (or
found by its conventional path, like src/lib.rs) without a stub would fail that layer. Targets
cargo finds by directory only (tests/*.rs, examples) are not needed there.
"""

import json
import os
import sys

NEEDED = {"lib", "bin", "bench", "proc-macro"}


def main():
    dockerfile = open(sys.argv[1]).read()
    metadata = json.load(sys.stdin)
    root = metadata["workspace_root"]
    missing = []
    count = 0
    for package in metadata["packages"]:
        for target in package["targets"]:
            if not NEEDED & set(target["kind"]):
                continue
            path = os.path.relpath(target["src_path"], root)
            count += 1
            if path not in dockerfile:
                missing.append(f"{package['name']} {'/'.join(target['kind'])} {target['name']}: {path}")
    if missing:
        print(f"{sys.argv[1]}: the dependency layer has no stub for:")
        for m in missing:
            print(f"  {m}")
        sys.exit(1)
    print(f"{sys.argv[1]}: a stub for each of the {count} targets the manifests name")


if __name__ == "__main__":
    main()
