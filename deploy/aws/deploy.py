#!/usr/bin/env python3
"""Deploy deploy/aws/shoal.yaml as a CloudFormation stack and print its outputs.

Creates the stack, or updates it if it exists (no change is not an error), waits until
CloudFormation is done, and prints the addresses Shoal's binaries read as environment
variables (SHOAL_QUEUE_URL=…, SHOAL_DLQ_URL=…, SHOAL_TOPIC_ARN=…, SHOAL_EVENTS_QUEUE_URL=…,
SHOAL_LEDGER_TABLE=…)
followed by every other output, or all outputs as JSON with --json.

AWS access and region come from boto3's standard chain; AWS_ENDPOINT_URL points it at an
emulator. The equivalent with the AWS CLI:
    aws cloudformation deploy --template-file deploy/aws/shoal.yaml --stack-name shoal \
        --capabilities CAPABILITY_NAMED_IAM --parameter-overrides Prefix=shoal
"""

import argparse
import json
import os
import sys

import boto3
from botocore.exceptions import ClientError, WaiterError

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shoal.yaml")

# Outputs under the names shoal-producer and shoal-worker read from the environment.
ENV_NAMES = {
    "JobQueueUrl": "SHOAL_QUEUE_URL",
    "DeadLetterQueueUrl": "SHOAL_DLQ_URL",
    "TopicArn": "SHOAL_TOPIC_ARN",
    "EventsQueueUrl": "SHOAL_EVENTS_QUEUE_URL",
    "LedgerTableName": "SHOAL_LEDGER_TABLE",
}


def scheduled_job_parameters(path):
    """The template's three schedule parameters for the job request in `path`: the chain's
    first job's kind and params, and its follow-ups. Its own job_id is refused: the schedule
    names each night's job itself, a fixed id would make every night after the first a
    no-op."""
    with open(path, encoding="utf-8") as f:
        request = json.load(f)  # a JSONDecodeError is a ValueError, reported as such
    if not isinstance(request, dict) or not isinstance(request.get("kind"), str):
        raise ValueError("kind: a job request names its kind")
    if "job_id" in request:
        raise ValueError("job_id: the schedule names each run's job (<prefix>-scheduled-<time>)")
    unknown = sorted(set(request) - {"kind", "params", "then", "schema_version"})
    if unknown:
        raise ValueError(f"{unknown[0]}: not part of a scheduled job (kind, params, then)")
    if not isinstance(request.get("params", {}), dict):
        raise ValueError("params: a JSON object")
    if not isinstance(request.get("then", []), list):
        raise ValueError("then: a JSON array of follow-ups")
    compact = {"separators": (",", ":")}
    return [
        {"ParameterKey": "ScheduledJobKind", "ParameterValue": request["kind"]},
        {"ParameterKey": "ScheduledJobParams",
         "ParameterValue": json.dumps(request.get("params", {}), **compact)},
        {"ParameterKey": "ScheduledJobThen",
         "ParameterValue": json.dumps(request.get("then", []), **compact)},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack-name", default="shoal")
    parser.add_argument("--parameter", "-p", action="append", default=[], metavar="KEY=VALUE",
                        help="template parameter, e.g. Prefix=shoal (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the outputs as JSON")
    parser.add_argument("--scheduled-job", metavar="FILE",
                        help="a job request (kind, params, then), e.g. "
                             "producer/examples/nightly.json: the schedule's job, as its "
                             "ScheduledJobKind, ScheduledJobParams and ScheduledJobThen")
    parser.add_argument("--show-parameters", action="store_true",
                        help="print the parameters the stack would get, as JSON, and stop")
    args = parser.parse_args()

    params = []
    if args.scheduled_job:
        try:
            params.extend(scheduled_job_parameters(args.scheduled_job))
        except (OSError, ValueError) as e:
            print(f"--scheduled-job: {args.scheduled_job}: {e}", file=sys.stderr)
            return 2
    for item in args.parameter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"--parameter: `{item}` is not KEY=VALUE", file=sys.stderr)
            return 2
        if any(p["ParameterKey"] == key for p in params):
            print(f"--parameter: {key} is given twice (--scheduled-job sets the ScheduledJob* ones)",
                  file=sys.stderr)
            return 2
        params.append({"ParameterKey": key, "ParameterValue": value})
    if args.show_parameters:
        print(json.dumps({p["ParameterKey"]: p["ParameterValue"] for p in params}, indent=2))
        return 0

    cfn = boto3.client("cloudformation")
    with open(TEMPLATE, encoding="utf-8") as f:
        body = f.read()
    request = dict(StackName=args.stack_name, TemplateBody=body, Parameters=params,
                   Capabilities=["CAPABILITY_NAMED_IAM"])
    try:
        cfn.describe_stacks(StackName=args.stack_name)
        exists = True
    except ClientError:
        exists = False
    try:
        if exists:
            cfn.update_stack(**request)
            waiter = cfn.get_waiter("stack_update_complete")
        else:
            cfn.create_stack(**request)
            waiter = cfn.get_waiter("stack_create_complete")
        waiter.wait(StackName=args.stack_name, WaiterConfig={"Delay": 2, "MaxAttempts": 450})
    except ClientError as e:
        if "No updates are to be performed" not in str(e):
            print(f"deploy failed: {e}", file=sys.stderr)
            return 1
    except WaiterError as e:
        print(f"the stack did not settle: {e}", file=sys.stderr)
        return 1

    stack = cfn.describe_stacks(StackName=args.stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if args.json:
        print(json.dumps(outputs, indent=2, sort_keys=True))
        return 0
    for key, env in ENV_NAMES.items():
        if key in outputs:
            print(f"{env}={outputs[key]}")
    for key in sorted(outputs):
        if key not in ENV_NAMES:
            print(f"{key}={outputs[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
