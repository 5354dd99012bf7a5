#!/usr/bin/env python3
"""Audits every IAM policy in the CloudFormation template with parliament (PyPI).

Parliament knows, for each AWS action, which resources and condition keys it supports, and
flags policies that grant more than they say (a resource `*` where the action takes ARNs),
name conditions an action ignores, or misspell actions. It reads policy JSON, not
CloudFormation, so the template's intrinsic functions are resolved first as a deployment
in us-east-1 of account 123456789012 would resolve them (`!If` takes its "true" branch: the
narrowest policy the template can produce; a second pass takes every "false" branch).

A finding that is known and accepted is listed in the policy resource's
`Metadata: {Parliament: {Accept: [{Issue, Action, Why}]}}`, with the reason; any other finding
fails the run. Exit status 0 when nothing unaccepted was found.
"""
import json
import sys

import yaml
from parliament import analyze_policy_string

ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"


class Template(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation's short-form tags as their long form."""


def _tag(name):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


for short in ["Ref", "Sub", "GetAtt", "If", "Join", "Equals", "Not", "Select", "Split",
              "ImportValue", "FindInMap", "GetAZs", "Base64", "Condition", "And", "Or"]:
    full = "Ref" if short == "Ref" else f"Fn::{short}"
    Template.add_constructor(f"!{short}", _tag(full))


def arn_of(name, types):
    """The ARN a resource of the template resolves to, by its type."""
    kind = types.get(name, "")
    if kind == "AWS::SNS::Topic":
        return f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{name}"
    if kind.startswith("AWS::IAM::"):
        return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}"
    if kind == "AWS::DynamoDB::Table":
        return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
    return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{name}"


def resolve(node, params, branch, types):
    """The value `node` takes at deployment, with `!If` taking `branch`."""
    if isinstance(node, list):
        out = [resolve(v, params, branch, types) for v in node]
        return [v for v in out if v is not NOVALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, value), = node.items()
        if key == "Ref":
            if value == "AWS::NoValue":
                return NOVALUE
            pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION,
                      "AWS::Partition": PARTITION}
            if value in pseudo:
                return pseudo[value]
            if value in params:
                return params[value]
            return arn_of(value, types)
        if key == "Fn::GetAtt":
            name = value[0] if isinstance(value, list) else value.split(".")[0]
            return arn_of(name, types)
        if key == "Fn::Sub":
            text = value if isinstance(value, str) else value[0]
            for var, val in [("${AWS::AccountId}", ACCOUNT), ("${AWS::Region}", REGION),
                             ("${AWS::Partition}", PARTITION), ("${Prefix}", "shoal")]:
                text = text.replace(var, val)
            # `${Resource.Arn}`: the resource's ARN, as `!GetAtt` gives it.
            for resource in types:
                text = text.replace("${" + resource + ".Arn}", arn_of(resource, types))
            return text
        if key == "Fn::If":
            return resolve(value[1] if branch else value[2], params, branch, types)
        if key == "Fn::Join":
            return value[0].join(str(v) for v in resolve(value[1], params, branch, types))
        if key == "Fn::Split":
            return resolve(value[1], params, branch, types).split(value[0])
    out = {k: resolve(v, params, branch, types) for k, v in node.items()}
    return {k: v for k, v in out.items() if v is not NOVALUE}


NOVALUE = object()


def policies(template):
    """(resource name, policy document, accepted findings) for every policy."""
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        accepted = resource.get("Metadata", {}).get("Parliament", {}).get("Accept", [])
        if "PolicyDocument" in props:
            yield name, props["PolicyDocument"], accepted
        for inline in props.get("Policies", []):
            yield f"{name}/{inline['PolicyName']}", inline["PolicyDocument"], accepted


def main(path):
    with open(path) as f:
        template = yaml.load(f, Loader=Template)
    # Parameters as a narrow deployment sets them.
    params = {"AllowedInstanceTypes": ["t3.*"], "AllowedImageOwners": ["amazon"],
              "AllowedRegions": ["us-west-2"],
              "CopyKmsKeyArns": [f"arn:{PARTITION}:kms:us-west-2:{ACCOUNT}:key/"
                                 "1234abcd-12ab-34cd-56ef-1234567890ab"]}
    types = {name: r.get("Type", "") for name, r in template["Resources"].items()}
    unaccepted = 0
    checked = 0
    for branch in (True, False):
        for name, document, accepted in policies(template):
            doc = resolve(document, params, branch, types)
            policy = analyze_policy_string(json.dumps(doc))
            checked += 1
            for finding in policy.findings:
                detail = json.dumps(finding.detail)
                ok = [a for a in accepted
                      if a["Issue"] == finding.issue and f'"{a["Action"]}"' in detail]
                if ok:
                    continue
                unaccepted += 1
                print(f"{path}: {name}: {finding.issue} ({finding.severity}): "
                      f"{finding.detail} at {finding.location}")
    print(f"{checked} policy documents audited, {unaccepted} unaccepted findings")
    return 1 if unaccepted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "deploy/aws/shoal.yaml"))
