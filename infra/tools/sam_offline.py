#!/usr/bin/env python3
"""Apply the SAM transform to infra/template.yaml offline (no AWS credentials, no network).

`sam validate` and `sam deploy` call the same library (aws-sam-translator), but they need a region and,
for managed policy names in `Policies`, IAM. This script pins what they would look up:

- the region (and so the partition) is fixed, `us-east-1` by default;
- the managed-policy loader is a stub. The template gives every function an explicit role, so SAM never
  needs it; if a later change adds SAM `Policies` with AWS managed policy names, translation fails with a
  clear message instead of calling IAM;
- local `CodeUri` paths (the `make build` zips) become placeholder S3 URIs, as `sam package` would upload
  them; local `DefinitionUri` files are inlined as `Definition`, so the translated template carries the
  state machine definitions that `sam deploy` would upload.

Usage: sam_offline.py TEMPLATE OUT_JSON [--asl-dir DIR]
  --asl-dir DIR  also write each state machine definition with its DefinitionSubstitutions filled
                 with sample values (parameter defaults, placeholder ARNs), for asl-validator.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PLACEHOLDER_BUCKET = "sam-offline-placeholder"
# Sample values for parameters that have no default (only used to render sample ASL files).
SAMPLE_PARAMETERS = {"Dataset": "contoso"}


class OfflineManagedPolicyLoader:
    """Stands in for samtranslator's IAM-backed ManagedPolicyLoader."""

    def load(self) -> dict[str, str]:
        raise SystemExit(
            "sam_offline: the template asks SAM to resolve a managed policy name (SAM `Policies` with an AWS "
            "managed policy). That needs IAM, and it would widen a function's rights; give the function an "
            "explicit role instead (see infra/template.yaml)."
        )


def _is_local(uri: Any) -> bool:
    return isinstance(uri, str) and not uri.startswith("s3://")


def prepare(template: dict[str, Any], template_dir: Path) -> dict[str, Any]:
    """Replace local artifact paths the way `sam package` would, before translation."""
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Serverless::Function" and _is_local(props.get("CodeUri")):
            key = os.path.normpath(props["CodeUri"]).lstrip("./")
            props["CodeUri"] = f"s3://{PLACEHOLDER_BUCKET}/{key}"
        if resource.get("Type") == "AWS::Serverless::StateMachine" and _is_local(props.get("DefinitionUri")):
            path = template_dir / props.pop("DefinitionUri")
            try:
                props["Definition"] = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise SystemExit(f"sam_offline: {logical_id}: cannot read DefinitionUri {path}: {err}") from err
    return template


def translate(template_path: Path) -> dict[str, Any]:
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    # Imported late so that `--help` works without the venv.
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.arn_generator import ArnGenerator
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    ArnGenerator.BOTO_SESSION_REGION_NAME = REGION
    template = prepare(yaml_parse(template_path.read_text()), template_path.parent)
    try:
        return transform(template, {}, OfflineManagedPolicyLoader())
    except InvalidDocumentException as err:
        causes = "\n".join(f"  - {cause.message}" for cause in err.causes)
        raise SystemExit(f"sam_offline: SAM transform failed for {template_path}:\n{causes}") from err


def _parameter_sample(template: dict[str, Any], name: str) -> str:
    if name in SAMPLE_PARAMETERS:
        return SAMPLE_PARAMETERS[name]
    param = template.get("Parameters", {}).get(name)
    if param is None or "Default" not in param:
        raise SystemExit(f"sam_offline: no sample value for parameter {name}")
    return str(param["Default"])


def sample_value(template: dict[str, Any], value: Any) -> str:
    """A plausible deploy-time value for a DefinitionSubstitutions entry."""
    pseudo = {"AWS::StackName": "dynamics-crm", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID,
              "AWS::Partition": "aws"}
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        name = value["Ref"]
        if template.get("Resources", {}).get(name, {}).get("Type") == "AWS::S3::Bucket":
            # A bucket's Ref is its generated name.
            return f"dynamics-crm-{name.lower()}-sample"
        return pseudo.get(name) or _parameter_sample(template, name)
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target, attribute = value["Fn::GetAtt"]
        if attribute == "Arn" and template["Resources"][target]["Type"] == "AWS::Lambda::Function":
            return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:dynamics-crm-{target}"
        raise SystemExit(f"sam_offline: no sample value for Fn::GetAtt {target}.{attribute}")
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        return re.sub(r"\$\{([^}!]+)\}", lambda m: sample_value(template, {"Ref": m.group(1)}), value["Fn::Sub"])
    raise SystemExit(f"sam_offline: no sample value for {json.dumps(value)}")


def state_machine_definition(translated: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """The definition of a translated state machine (SAM writes inline definitions as Fn::Join lines)."""
    definition = translated["Resources"][logical_id]["Properties"]["DefinitionString"]
    if isinstance(definition, dict) and "Fn::Join" in definition:
        separator, parts = definition["Fn::Join"]
        definition = separator.join(parts)
    return json.loads(definition)


def render_asl(translated: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for logical_id, resource in translated["Resources"].items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        props = resource["Properties"]
        text = json.dumps(state_machine_definition(translated, logical_id), indent=2)
        for name, value in (props.get("DefinitionSubstitutions") or {}).items():
            text = text.replace("${" + name + "}", sample_value(translated, value))
        leftover = re.findall(r"\$\{[^}]*\}", text)
        if leftover:
            raise SystemExit(f"sam_offline: {logical_id}: no DefinitionSubstitutions for {sorted(set(leftover))}")
        path = out_dir / f"{logical_id}.asl.json"
        path.write_text(text + "\n")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--asl-dir", type=Path)
    args = parser.parse_args(argv)

    translated = translate(args.template)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(translated, indent=2, sort_keys=False) + "\n")
    print(f"sam_offline: wrote {args.output}")
    if args.asl_dir:
        for path in render_asl(translated, args.asl_dir):
            print(f"sam_offline: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
