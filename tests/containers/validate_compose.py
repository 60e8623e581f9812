"""Validates docker-compose.yml against the Compose specification's JSON schema.

Usage: validate_compose.py SCHEMA COMPOSE_FILE

The file is read as Compose reads it: YAML with merge keys, then `${VAR}`, `${VAR:-default}` and
`${VAR-default}` replaced from the environment (defaults when unset), `${VAR:?message}` an error
when unset. Extension fields (`x-*`) are allowed by the schema itself. Prints one line and exits
0 when the file is valid, 1 with every violation otherwise.
"""

import json
import os
import re
import sys

import jsonschema
import yaml

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*)|(:?\?)([^}]*))?\}|\$\$")


def interpolate(value):
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value

    def one(match):
        if match.group(0) == "$$":
            return "$"
        name, dash, default, question, message = match.groups()
        current = os.environ.get(name)
        if dash is not None:
            unset = current is None or (dash == ":-" and current == "")
            return default if unset else current
        if question is not None:
            if current is None or (question == ":?" and current == ""):
                raise SystemExit(f"{name}: {message or 'required'}")
            return current
        return current or ""

    return VARIABLE.sub(one, value)


def main():
    schema_path, compose_path = sys.argv[1], sys.argv[2]
    with open(schema_path) as f:
        schema = json.load(f)
    with open(compose_path) as f:
        document = interpolate(yaml.safe_load(f))
    # The schema names draft 2019-09 with a trailing '#', which jsonschema does not look up.
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        for e in errors:
            where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
            print(f"{compose_path}: {where}: {e.message}")
        sys.exit(1)
    services = ", ".join(sorted(document.get("services", {})))
    print(f"{compose_path}: valid against the Compose specification ({services})")


if __name__ == "__main__":
    main()
