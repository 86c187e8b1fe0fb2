"""Checks what `sam build` made: for every function of the template, an executable
`bootstrap` ELF for the function's architecture under .aws-sam/build/<LogicalId>/, and a built
template that points the function at it. Prints each artefact's size.

Run from the repository root after `sam build`: python3 infra/check_artifacts.py
"""
import os
import struct
import sys
from pathlib import Path

import yaml

# ELF e_machine values (System V ABI): what Lambda's two architectures run.
MACHINES = {"arm64": 183, "x86_64": 62}


class Loader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as plain values."""


def _any_tag(loader, _suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


Loader.add_multi_constructor("!", _any_tag)


def functions(template):
    default = ((template.get("Globals") or {}).get("Function") or {}).get("Architectures") or ["x86_64"]
    for name, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") == "AWS::Serverless::Function":
            arch = (resource.get("Properties") or {}).get("Architectures") or default
            yield name, arch[0]


def elf_machine(path):
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    little = header[5] == 1
    return struct.unpack("<H" if little else ">H", header[18:20])[0]


def main():
    source = yaml.load(Path("infra/template.yaml").read_text(), Loader=Loader)
    build = Path(".aws-sam/build")
    built_path = build / "template.yaml"
    if not built_path.exists():
        sys.exit(f"{built_path} is missing: run sam build first")
    built = yaml.load(built_path.read_text(), Loader=Loader)
    problems = []
    rows = []
    for name, arch in functions(source):
        bootstrap = build / name / "bootstrap"
        if not bootstrap.is_file():
            problems.append(f"{name}: no {bootstrap}")
            continue
        if not os.access(bootstrap, os.X_OK):
            problems.append(f"{name}: {bootstrap} is not executable")
        machine = elf_machine(bootstrap)
        if machine != MACHINES[arch]:
            problems.append(f"{name}: {bootstrap} is ELF machine {machine}, not {arch} ({MACHINES[arch]})")
        code = (((built.get("Resources") or {}).get(name) or {}).get("Properties") or {}).get("CodeUri")
        if code is None or Path(build / code).resolve() != (build / name).resolve():
            problems.append(f"{name}: the built template's CodeUri is {code!r}, not {name}")
        rows.append((name, arch, bootstrap.stat().st_size))
    for name, arch, size in rows:
        print(f"{name:24} {arch:7} {size / 1048576:5.2f} MiB")
    if problems:
        sys.exit("\n".join(problems))
    print(f"sam build: {len(rows)} functions, each an executable bootstrap for its architecture")


if __name__ == "__main__":
    main()
