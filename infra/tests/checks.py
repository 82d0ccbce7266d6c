"""Least-privilege and configuration rules for the TRANSLATED template (plain CloudFormation).

Every check returns a list of human-readable problems; an empty list means the rule holds. The checks
work on the output of the SAM transform (infra/tools/sam_offline.py), so they see exactly what
CloudFormation would create, including the roles that SAM generates for schedules and rules.
test_template.py runs them against the real template and against mutated copies, to prove that each
rule can fail.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parents[2]
# The translator's sample values, imported rather than copied, so the checks render the template with
# the same values as the ASL files that validate.sh writes.
sys.path.insert(0, str(REPO_DIR / "infra" / "tools"))
from sam_offline import ACCOUNT_ID, REGION, SAMPLE_PARAMETERS  # noqa: E402

Template = dict[str, Any]

# binary (= package = contract name) -> logical id in infra/template.yaml
ACTIONS = {
    "list-records": "ListRecordsFunction",
    "get-record": "GetRecordFunction",
    "create-record": "CreateRecordFunction",
    "update-record": "UpdateRecordFunction",
    "upsert-record": "UpsertRecordFunction",
    "relate-records": "RelateRecordsFunction",
    "unrelate-records": "UnrelateRecordsFunction",
    "describe-table": "DescribeTableFunction",
    "perform-action": "PerformActionFunction",
    "execute-changeset": "ExecuteChangesetFunction",
    "delete-record": "DeleteRecordFunction",
    "write-records": "WriteRecordsFunction",
}
TRIGGERS = {
    "when-record-created": "WhenRecordCreatedFunction",
    "when-record-updated": "WhenRecordUpdatedFunction",
    "when-record-deleted": "WhenRecordDeletedFunction",
}
# Push: receives Dataverse webhook deliveries through a public Function URL and publishes the same events
# as the triggers. It keeps no cursor, so it gets the event bus but no DynamoDB at all.
WEBHOOKS = {
    "dataverse-webhook": "DataverseWebhookFunction",
}
FUNCTIONS = {**ACTIONS, **TRIGGERS, **WEBHOOKS}
# Functions that publish record events (CRM_EVENTS, events:PutEvents on the bus).
PUBLISHERS = {**TRIGGERS, **WEBHOOKS}
# Functions that act on one row; a workflow task calling them must catch Crm.NotFound.
# Writers that keep idempotency records (CRM_IDEMPOTENCY, the idempotency table and nothing else in
# DynamoDB).
IDEMPOTENT_WRITERS = {"create-record", "update-record", "upsert-record", "delete-record", "execute-changeset"}
# Functions that write results to the results bucket (`output.s3`).
RESULT_WRITERS = {"list-records"}
# Functions that read rows from S3 (`input.s3`), and only from the import workflow's prefix.
IMPORT_READERS = {"write-records"}
IMPORT_OBJECTS = {"Fn::Sub": "${ResultsBucket.Arn}/import/*"}
IMPORT_READ_ACTIONS = {"s3:GetObject"}
ROW_FUNCTIONS = {"get-record", "update-record", "upsert-record", "delete-record", "relate-records",
                 "unrelate-records"}

LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
SECRET_ACTION = "secretsmanager:GetSecretValue"
SECRETS_RESOURCE = {
    "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:dynamics-crm/*"
}
SECRETS_PREFIX = "secretsmanager:dynamics-crm/"
# The one policy through which a function may read secrets (webhook_key lives in the same secret).
SECRETS_POLICY = "CrmSecretsReadPolicy"
# Exactly what shared/connector/src/cursor/dynamo.rs calls: conditional UpdateItem for the lease and
# the cursor, BatchGetItem/BatchWriteItem for the per-row fingerprints of when-record-updated.
TRIGGER_DYNAMODB_ACTIONS = {
    "dynamodb:UpdateItem",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
}
# when-record-deleted with `remember_ids` lists its membership items (`in#...`) after an expired
# delta token, which only Query can do; no other trigger reads a range of items.
MEMBERSHIP_SWEEPERS = {"when-record-deleted"}
SWEEP_DYNAMODB_ACTIONS = {"dynamodb:Query"}
EVENTS_ACTION = "events:PutEvents"
CURSOR_TABLE = "CursorTable"
IDEMPOTENCY_TABLE = "IdempotencyTable"
# Exactly what shared/connector/src/idempotency calls: a conditional PutItem to claim a key, UpdateItem
# to complete it, DeleteItem to release it, GetItem to read it.
IDEMPOTENCY_ACTIONS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
RESULTS_BUCKET = "ResultsBucket"
# Result objects: their keys are chosen per invocation, so the grant names the bucket's objects.
RESULTS_OBJECTS = {"Fn::Sub": "${ResultsBucket.Arn}/*"}
# s3:PutObject covers CreateMultipartUpload, UploadPart and CompleteMultipartUpload.
RESULT_WRITE_ACTIONS = {"s3:PutObject", "s3:AbortMultipartUpload"}
# Dataverse's service protection: concurrent requests per application user and web server.
CONCURRENT_REQUEST_LIMIT = 52
# A Distributed Map reads its items (ItemReader) and writes its results (ResultWriter, a multipart upload).
# The one Task that is not a Lambda call: a workflow reading its own Distributed Map's counts.
DESCRIBE_MAP_RUN = "arn:aws:states:::aws-sdk:sfn:describeMapRun"
DISTRIBUTED_MAP_S3_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"]
# Wildcards that name a set of resources which cannot be listed at deploy time.
NAMED_WILDCARDS = [SECRETS_RESOURCE, RESULTS_OBJECTS]
# Dataverse waits 60 s for a webhook's answer, then counts the delivery as failed. The receiver's
# Lambda timeout must leave room for the network on both sides.
WEBHOOK_MAX_TIMEOUT = 50
# The two resource-based permissions that make a Function URL with AuthType NONE invokable (SAM
# generates both): the URL action, and plain invoke only when the call comes through the URL.
PUBLIC_URL_PERMISSIONS = {
    "lambda:InvokeFunctionUrl": ("FunctionUrlAuthType", "NONE"),
    "lambda:InvokeFunction": ("InvokedViaFunctionUrl", True),
}
WEBHOOK_URL_OUTPUT = "WebhookUrl"

LAMBDA_SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}
RETRIED_CRM_ERRORS = {"Crm.Throttled", "Crm.ServerError"}
CAUGHT_CRM_ERROR = "Crm.NotFound"

# The published contract, read rather than copied: the "Triggers" table of this document says which
# payload keys each trigger takes, and the functions refuse any other key.
CONTRACT_DOC = REPO_DIR / "docs" / "functions.md"
# Cells of that table: what a trigger accepts (possibly with a rule on the value) and what it refuses.
# Anything else fails loudly, so a new wording cannot be misread as either.
ACCEPTED_CELLS = {"required", "yes", "0 only"}
REFUSED_CELL = "refused"

# Values cfn-lint does not check: it accepts a runtime of provided.al2099, an architecture of arm65 and
# a schedule of rate(5 minutez) without a word, so these tests pin the values themselves.
RUNTIME = "provided.al2023"
ARCHITECTURES = ["arm64"]
APPLICATION_LOG_LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}
SYSTEM_LOG_LEVELS = {"DEBUG", "INFO", "WARN"}
RATE_EXPRESSION = re.compile(r"rate\((?:1 (?:minute|hour|day)|(?:[2-9]|[1-9][0-9]+) (?:minutes|hours|days))\)")
CRON_EXPRESSION = re.compile(r"cron\(\S+ \S+ \S+ \S+ \S+ \S+\)")

# Pseudo parameters, for rendering Fn::Sub samples (parameters without a default take SAMPLE_PARAMETERS).
PSEUDO_PARAMETERS = {
    "AWS::StackName": "dynamics-crm",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT_ID,
    "AWS::Partition": "aws",
}


def trigger_input_keys(doc: str) -> dict[str, set[str]]:
    """Payload keys each trigger accepts, from the "## Triggers" table of docs/functions.md."""
    section = re.search(r"^## Triggers\n(.*?)(?=^## |\Z)", doc, re.MULTILINE | re.DOTALL)
    if section is None:
        raise ValueError(f"{CONTRACT_DOC}: no '## Triggers' section")
    rows = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            for line in section.group(1).splitlines() if line.startswith("|")]
    if len(rows) < 3:
        raise ValueError(f"{CONTRACT_DOC}: no table under '## Triggers'")
    header, body = rows[0], rows[2:]
    columns = {f"when-record-{kind}": header.index(kind) for kind in ("created", "updated", "deleted")
               if kind in header}
    if set(columns) != set(TRIGGERS):
        raise ValueError(f"{CONTRACT_DOC}: the Triggers table has columns {header}, not one per trigger")
    accepted: dict[str, set[str]] = {name: set() for name in TRIGGERS}
    for row in body:
        keys = re.findall(r"`([^`]+)`", row[0])
        if not keys:
            raise ValueError(f"{CONTRACT_DOC}: Triggers row {row} names no input")
        for name, column in columns.items():
            cell = row[column]
            if cell in ACCEPTED_CELLS:
                accepted[name].update(keys)
            elif cell != REFUSED_CELL:
                raise ValueError(f"{CONTRACT_DOC}: Triggers row {keys}, {name}: cannot read {cell!r}")
    return accepted


TRIGGER_INPUT_KEYS = trigger_input_keys(CONTRACT_DOC.read_text())


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def resources(t: Template, type_name: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in t.get("Resources", {}).items() if v.get("Type") == type_name}


def props(t: Template, logical_id: str) -> dict[str, Any]:
    return t["Resources"][logical_id].get("Properties") or {}


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def target_of(value: Any) -> str | None:
    """The logical id named by a Ref or Fn::GetAtt, else None."""
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            return value["Ref"]
        if "Fn::GetAtt" in value:
            getatt = value["Fn::GetAtt"]
            return getatt[0] if isinstance(getatt, list) else str(getatt).split(".")[0]
    return None


def getatt(logical_id: str, attribute: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def is_getatt(value: Any, logical_id: str, attribute: str = "Arn") -> bool:
    if not isinstance(value, dict) or "Fn::GetAtt" not in value:
        return False
    getatt_value = value["Fn::GetAtt"]
    if isinstance(getatt_value, str):
        getatt_value = getatt_value.split(".", 1)
    return list(getatt_value) == [logical_id, attribute]


def parameter_sample(t: Template, name: str) -> Any:
    if name in PSEUDO_PARAMETERS:
        return PSEUDO_PARAMETERS[name]
    param = t.get("Parameters", {}).get(name)
    if param is None:
        raise KeyError(f"unknown parameter {name}")
    if "Default" in param:
        return param["Default"]
    return SAMPLE_PARAMETERS[name]


def resolve(t: Template, value: Any) -> Any:
    """Resolve a Ref to a parameter (its default or sample) and Fn::Sub over parameters."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        if value["Ref"] in t.get("Parameters", {}) or value["Ref"] in PSEUDO_PARAMETERS:
            return parameter_sample(t, value["Ref"])
        return value
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([A-Za-z0-9:]+)\}", lambda m: str(parameter_sample(t, m.group(1))), value["Fn::Sub"])
    return value


def sub_parameters(value: Any) -> list[str]:
    """Parameter-like names used in an Fn::Sub string (${Name}, not ${Res.Attr} or ${!literal})."""
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        return re.findall(r"\$\{([A-Za-z0-9]+)\}", value["Fn::Sub"])
    return []


def function_id_of_role(t: Template, role_id: str) -> list[str]:
    return [fid for fid, f in resources(t, "AWS::Lambda::Function").items()
            if target_of(f.get("Properties", {}).get("Role")) == role_id]


def binary_of(logical_id: str) -> str | None:
    for name, fid in FUNCTIONS.items():
        if fid == logical_id:
            return name
    return None


# ------------------------------------------------------------------------------------------------
# IAM: statements of a role, from inline policies and from policies defined in this template
# ------------------------------------------------------------------------------------------------


def role_statements(t: Template, role_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    """All Allow/Deny statements that apply to a role, and problems with attachments we cannot see."""
    problems: list[str] = []
    statements: list[dict[str, Any]] = []
    role = props(t, role_id)
    for policy in as_list(role.get("Policies")):
        statements += as_list(policy.get("PolicyDocument", {}).get("Statement"))
    for arn in as_list(role.get("ManagedPolicyArns")):
        policy_id = target_of(arn)
        if policy_id and t["Resources"].get(policy_id, {}).get("Type") == "AWS::IAM::ManagedPolicy":
            statements += as_list(props(t, policy_id).get("PolicyDocument", {}).get("Statement"))
        else:
            problems.append(f"{role_id}: attaches managed policy {json.dumps(arn)} that is not defined in this "
                            "template (e.g. AWSLambdaBasicExecutionRole grants logs on '*')")
    for policy_type in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy_id, policy in resources(t, policy_type).items():
            attached = [target_of(r) for r in as_list(policy.get("Properties", {}).get("Roles"))]
            if role_id in attached:
                statements += as_list(policy["Properties"].get("PolicyDocument", {}).get("Statement"))
    return statements, problems


def statement_problems(role_id: str, statement: dict[str, Any]) -> list[str]:
    """Rules for every statement of every role: no NotAction/NotResource, no wildcards."""
    problems = []
    for key in ("NotAction", "NotResource", "NotPrincipal"):
        if key in statement:
            problems.append(f"{role_id}: statement uses {key}")
    for action in as_list(statement.get("Action")):
        if not isinstance(action, str) or "*" in action:
            problems.append(f"{role_id}: wildcard or non-literal action {json.dumps(action)}")
    for resource in as_list(statement.get("Resource")):
        # Any "*" in a literal, Fn::Sub or Fn::Join resource is a wildcard. The one exception is the
        # secrets prefix: one secret per dataset, and the datasets are not known at deploy time.
        if ("*" in json.dumps(resource) and resource not in NAMED_WILDCARDS and not _own_executions(resource)
                and not _own_map_runs(resource) and not _workflow_results(resource)):
            problems.append(f"{role_id}: Resource {json.dumps(resource)} is a wildcard; name the resource")
    if not as_list(statement.get("Resource")) and statement.get("Effect") == "Allow":
        problems.append(f"{role_id}: Allow statement without Resource")
    return problems


def _own_executions(resource: Any) -> bool:
    """The executions of a state machine named in this template (`execution:<name>/*`), which a
    Distributed Map must describe and stop; their ids are made at run time."""
    if not isinstance(resource, dict) or set(resource) != {"Fn::Sub"} or not isinstance(resource["Fn::Sub"], str):
        return False
    return re.fullmatch(r"arn:\$\{AWS::Partition\}:states:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
                        r"execution:\$\{AWS::StackName\}-[a-z-]+/\*", resource["Fn::Sub"]) is not None


def _own_map_runs(resource: Any) -> bool:
    """The Map Runs of one labelled Map state of a state machine named in this template
    (`mapRun:<name>/<label>:*`), which the workflow describes after the Map; their ids are made at run time."""
    if not isinstance(resource, dict) or set(resource) != {"Fn::Sub"} or not isinstance(resource["Fn::Sub"], str):
        return False
    return re.fullmatch(r"arn:\$\{AWS::Partition\}:states:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
                        r"mapRun:\$\{AWS::StackName\}-[a-z-]+/[A-Za-z]+:\*", resource["Fn::Sub"]) is not None


def _workflow_results(resource: Any) -> bool:
    """Objects under one workflow's own prefix of the results bucket."""
    return (isinstance(resource, dict) and set(resource) == {"Fn::Sub"} and isinstance(resource["Fn::Sub"], str)
            and re.fullmatch(r"\$\{ResultsBucket\.Arn\}/[a-z-]+/\*", resource["Fn::Sub"]) is not None)


def allowed_grants(role_id: str, statements: list[dict[str, Any]],
                   allowed: dict[str, list[Any]]) -> tuple[dict[str, list[Any]], list[str]]:
    """Check that every (action, resource) granted is in `allowed`; return what was granted."""
    problems: list[str] = []
    granted: dict[str, list[Any]] = {}
    for statement in statements:
        problems += statement_problems(role_id, statement)
        if statement.get("Effect") != "Allow":
            continue
        for action in as_list(statement.get("Action")):
            for resource in as_list(statement.get("Resource")):
                granted.setdefault(action, []).append(resource)
                if action not in allowed:
                    problems.append(f"{role_id}: action {action} is not allowed for this role")
                elif resource not in allowed[action]:
                    problems.append(f"{role_id}: {action} on {json.dumps(resource)} is not allowed; "
                                    f"only {json.dumps(allowed[action])}")
    return granted, problems


def trust_problems(t: Template, role_id: str, service: str) -> list[str]:
    problems = []
    for statement in as_list(props(t, role_id).get("AssumeRolePolicyDocument", {}).get("Statement")):
        principals = as_list((statement.get("Principal") or {}).get("Service"))
        if principals != [service] or set(statement.get("Principal", {})) != {"Service"}:
            problems.append(f"{role_id}: may be assumed by {json.dumps(statement.get('Principal'))}, "
                            f"expected only {service}")
    return problems


# ------------------------------------------------------------------------------------------------
# Data stores
# ------------------------------------------------------------------------------------------------


def the_one(t: Template, type_name: str) -> tuple[str | None, list[str]]:
    found = sorted(resources(t, type_name))
    if len(found) != 1:
        return (found[0] if found else None), [f"expected exactly one {type_name}, found {found}"]
    return found[0], []


def store_problems(t: Template) -> list[str]:
    problems = []
    tables = sorted(resources(t, "AWS::DynamoDB::Table"))
    if tables != sorted([CURSOR_TABLE, IDEMPOTENCY_TABLE]):
        problems.append(f"expected the tables {CURSOR_TABLE} and {IDEMPOTENCY_TABLE}, found {tables}")
    if CURSOR_TABLE in tables:
        table_id = CURSOR_TABLE
        table = props(t, table_id)
        if table.get("BillingMode") != "PAY_PER_REQUEST":
            problems.append(f"{table_id}: BillingMode must be PAY_PER_REQUEST")
        key_schema = {k["AttributeName"]: k["KeyType"] for k in as_list(table.get("KeySchema"))}
        if key_schema != {"pk": "HASH", "sk": "RANGE"}:
            problems.append(f"{table_id}: key schema must be pk (HASH) + sk (RANGE), got {key_schema}")
        types = {a["AttributeName"]: a["AttributeType"] for a in as_list(table.get("AttributeDefinitions"))}
        if types != {"pk": "S", "sk": "S"}:
            problems.append(f"{table_id}: pk and sk must be strings (S), got {types}")
        if table.get("TimeToLiveSpecification") != {"AttributeName": "expires_at", "Enabled": True}:
            problems.append(f"{table_id}: TTL must be enabled on expires_at")
        if (table.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled") is not True:
            problems.append(f"{table_id}: point-in-time recovery must be on")
    if IDEMPOTENCY_TABLE in tables:
        table = props(t, IDEMPOTENCY_TABLE)
        if table.get("BillingMode") != "PAY_PER_REQUEST":
            problems.append(f"{IDEMPOTENCY_TABLE}: BillingMode must be PAY_PER_REQUEST")
        key_schema = {k["AttributeName"]: k["KeyType"] for k in as_list(table.get("KeySchema"))}
        types = {a["AttributeName"]: a["AttributeType"] for a in as_list(table.get("AttributeDefinitions"))}
        if key_schema != {"pk": "HASH"} or types != {"pk": "S"}:
            problems.append(f"{IDEMPOTENCY_TABLE}: the key must be pk (HASH, S) alone, got {key_schema} {types}")
        if table.get("TimeToLiveSpecification") != {"AttributeName": "expires", "Enabled": True}:
            problems.append(f"{IDEMPOTENCY_TABLE}: TTL must be enabled on expires")
    problems += bucket_problems(t)
    _, p = the_one(t, "AWS::Events::EventBus")
    problems += p
    for secret_id, secret in resources(t, "AWS::SecretsManager::Secret").items():
        if secret.get("Properties", {}).get("Name") != {"Fn::Sub": "dynamics-crm/${Dataset}"}:
            problems.append(f"{secret_id}: the secret must be named dynamics-crm/${{Dataset}}")
    for policy_id, policy in resources(t, "AWS::SQS::QueuePolicy").items():
        for statement in as_list(policy["Properties"].get("PolicyDocument", {}).get("Statement")):
            condition = statement.get("Condition") or {}
            if not any("aws:SourceArn" in block for block in condition.values()):
                problems.append(f"{policy_id}: queue policy statement without an aws:SourceArn condition")
            if statement.get("Principal") == "*" or statement.get("Principal") == {"AWS": "*"}:
                problems.append(f"{policy_id}: queue policy open to any principal")
    return problems


def bucket_problems(t: Template) -> list[str]:
    """The results bucket is private, encrypted, TLS-only, and cleans up after itself."""
    buckets = sorted(resources(t, "AWS::S3::Bucket"))
    if buckets != [RESULTS_BUCKET]:
        return [f"expected exactly the bucket {RESULTS_BUCKET}, found {buckets}"]
    problems = []
    bucket = props(t, RESULTS_BUCKET)
    block = bucket.get("PublicAccessBlockConfiguration") or {}
    for setting in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        if block.get(setting) is not True:
            problems.append(f"{RESULTS_BUCKET}: PublicAccessBlockConfiguration.{setting} must be true")
    ownership = [r.get("ObjectOwnership") for r in as_list((bucket.get("OwnershipControls") or {}).get("Rules"))]
    if ownership != ["BucketOwnerEnforced"]:
        problems.append(f"{RESULTS_BUCKET}: ObjectOwnership must be BucketOwnerEnforced (no ACLs)")
    if not (bucket.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration"):
        problems.append(f"{RESULTS_BUCKET}: default encryption must be set")
    rules = as_list((bucket.get("LifecycleConfiguration") or {}).get("Rules"))
    if not any(r.get("Status") == "Enabled" and "AbortIncompleteMultipartUpload" in r for r in rules):
        problems.append(f"{RESULTS_BUCKET}: a lifecycle rule must abort unfinished multipart uploads")
    if not any(r.get("Status") == "Enabled" and "ExpirationInDays" in r for r in rules):
        problems.append(f"{RESULTS_BUCKET}: a lifecycle rule must expire results")
    tls_only = False
    for policy in resources(t, "AWS::S3::BucketPolicy").values():
        if target_of(policy["Properties"].get("Bucket")) != RESULTS_BUCKET:
            continue
        for statement in as_list(policy["Properties"].get("PolicyDocument", {}).get("Statement")):
            if statement.get("Effect") == "Allow":
                problems.append(f"{RESULTS_BUCKET}: its bucket policy must not grant anything (roles do)")
            condition = (statement.get("Condition") or {}).get("Bool") or {}
            if statement.get("Effect") == "Deny" and condition.get("aws:SecureTransport") == "false":
                tls_only = True
    if not tls_only:
        problems.append(f"{RESULTS_BUCKET}: a bucket policy must deny requests without TLS")
    return problems


# ------------------------------------------------------------------------------------------------
# Functions
# ------------------------------------------------------------------------------------------------


def _number_in_range(t: Template, value: Any, low: int, high: int) -> bool:
    value = resolve(t, value)
    try:
        number = int(value)
    except (TypeError, ValueError):
        return False
    return low <= number <= high


def function_problems(t: Template) -> list[str]:
    problems = []
    functions = resources(t, "AWS::Lambda::Function")
    expected = set(FUNCTIONS.values())
    for missing in sorted(expected - set(functions)):
        problems.append(f"missing function {missing}")
    for extra in sorted(set(functions) - expected):
        problems.append(f"unexpected function {extra}: add it to infra/tests/checks.py so its rights are checked")
    table_id = CURSOR_TABLE if CURSOR_TABLE in resources(t, "AWS::DynamoDB::Table") else None
    bus_id = next(iter(resources(t, "AWS::Events::EventBus")), None)
    log_groups_seen: dict[str, str] = {}
    roles_seen: dict[str, str] = {}

    for name, fid in FUNCTIONS.items():
        if fid not in functions:
            continue
        f = props(t, fid)
        is_trigger = name in TRIGGERS
        is_webhook = name in WEBHOOKS
        # Runtime and packaging.
        if f.get("Runtime") != RUNTIME:
            problems.append(f"{fid}: Runtime must be {RUNTIME}, got {json.dumps(f.get('Runtime'))}")
        if f.get("Architectures") != ARCHITECTURES:
            problems.append(f"{fid}: Architectures must be {ARCHITECTURES}, got {json.dumps(f.get('Architectures'))}")
        if f.get("Handler") != "bootstrap":
            problems.append(f"{fid}: Handler must be bootstrap")
        key = (f.get("Code") or {}).get("S3Key", "")
        if not str(key).endswith(f"target/lambda/{name}/bootstrap.zip"):
            problems.append(f"{fid}: code must come from target/lambda/{name}/bootstrap.zip, got {key}")
        function_name = json.dumps(f.get("FunctionName"))
        if name not in function_name:
            problems.append(f"{fid}: FunctionName {function_name} should contain {name}")
        # Explicit sizing.
        if "MemorySize" not in f or not _number_in_range(t, f["MemorySize"], 128, 10240):
            problems.append(f"{fid}: MemorySize must be set explicitly (128..10240)")
        if "Timeout" not in f or not _number_in_range(t, f["Timeout"], 1, 900):
            problems.append(f"{fid}: Timeout must be set explicitly (1..900 s)")
        if is_trigger:
            param = target_of(f.get("Timeout"))
            if param not in t.get("Parameters", {}) or t["Parameters"][param].get("Type") != "Number":
                problems.append(f"{fid}: a trigger's Timeout must come from a Number parameter")
        if is_webhook and not _number_in_range(t, f.get("Timeout"), 1, WEBHOOK_MAX_TIMEOUT):
            problems.append(f"{fid}: a webhook receiver's Timeout must be at most {WEBHOOK_MAX_TIMEOUT} s "
                            "(Dataverse gives up after 60 s)")
        # Logging.
        logging = f.get("LoggingConfig") or {}
        if logging.get("LogFormat") != "JSON":
            problems.append(f"{fid}: LoggingConfig.LogFormat must be JSON")
        if logging.get("ApplicationLogLevel") not in APPLICATION_LOG_LEVELS:
            problems.append(f"{fid}: LoggingConfig.ApplicationLogLevel must be one of {sorted(APPLICATION_LOG_LEVELS)}")
        if logging.get("SystemLogLevel") not in SYSTEM_LOG_LEVELS:
            problems.append(f"{fid}: LoggingConfig.SystemLogLevel must be one of {sorted(SYSTEM_LOG_LEVELS)}")
        log_group_id = target_of(logging.get("LogGroup"))
        if t["Resources"].get(log_group_id or "", {}).get("Type") != "AWS::Logs::LogGroup":
            problems.append(f"{fid}: LoggingConfig.LogGroup must reference an AWS::Logs::LogGroup in the template")
            log_group_id = None
        else:
            if "RetentionInDays" not in props(t, log_group_id):
                problems.append(f"{log_group_id}: log group of {fid} needs RetentionInDays")
            if log_group_id in log_groups_seen:
                problems.append(f"{fid}: shares log group {log_group_id} with {log_groups_seen[log_group_id]}")
            log_groups_seen[log_group_id] = fid
        # Environment.
        env = (f.get("Environment") or {}).get("Variables") or {}
        if env.get("CRM_SECRETS") != SECRETS_PREFIX:
            problems.append(f"{fid}: CRM_SECRETS must be {SECRETS_PREFIX}")
        if is_trigger:
            if env.get("CRM_STATE") != {"Fn::Sub": f"dynamodb:${{{table_id}}}"}:
                problems.append(f"{fid}: CRM_STATE must be dynamodb:<the cursor table>")
        if name in PUBLISHERS:
            if env.get("CRM_EVENTS") != {"Fn::Sub": f"eventbridge:${{{bus_id}.Name}}"}:
                problems.append(f"{fid}: CRM_EVENTS must be eventbridge:<the event bus>")
            if resolve(t, env.get("CRM_EVENT_SOURCE")) != "dynamics.crm":
                problems.append(f"{fid}: CRM_EVENT_SOURCE must default to dynamics.crm")
        if is_webhook:
            if "CRM_STATE" in env:
                problems.append(f"{fid}: a webhook receiver keeps no cursor and must not have CRM_STATE")
        elif not is_trigger:
            for var in ("CRM_STATE", "CRM_EVENTS"):
                if var in env:
                    problems.append(f"{fid}: an action must not have {var}")
        expected_idempotency = {"Fn::Sub": f"dynamodb:${{{IDEMPOTENCY_TABLE}}}"} if name in IDEMPOTENT_WRITERS else None
        if env.get("CRM_IDEMPOTENCY") != expected_idempotency:
            problems.append(f"{fid}: CRM_IDEMPOTENCY must be "
                            + ("dynamodb:<the idempotency table>" if expected_idempotency else "unset"))
        # Role.
        role_id = target_of(f.get("Role"))
        if t["Resources"].get(role_id or "", {}).get("Type") != "AWS::IAM::Role":
            problems.append(f"{fid}: Role must be an AWS::IAM::Role defined in this template")
            continue
        if role_id in roles_seen:
            problems.append(f"{fid}: shares role {role_id} with {roles_seen[role_id]}")
        roles_seen[role_id] = fid
        problems += function_role_problems(t, fid, name, role_id, log_group_id, table_id, bus_id)
    return problems


def function_role_problems(t: Template, fid: str, name: str, role_id: str, log_group_id: str | None,
                           table_id: str | None, bus_id: str | None) -> list[str]:
    problems = trust_problems(t, role_id, "lambda.amazonaws.com")
    statements, p = role_statements(t, role_id)
    problems += p
    allowed: dict[str, list[Any]] = {SECRET_ACTION: [SECRETS_RESOURCE]}
    if log_group_id:
        allowed.update({action: [getatt(log_group_id)] for action in LOG_ACTIONS})
    is_trigger = name in TRIGGERS
    if is_trigger:
        allowed.update({action: [getatt(table_id)] for action in TRIGGER_DYNAMODB_ACTIONS})
    if name in MEMBERSHIP_SWEEPERS:
        allowed.update({action: [getatt(table_id)] for action in SWEEP_DYNAMODB_ACTIONS})
    if name in PUBLISHERS:
        allowed[EVENTS_ACTION] = [getatt(bus_id)]
    if name in IDEMPOTENT_WRITERS:
        allowed.update({action: [getatt(IDEMPOTENCY_TABLE)] for action in IDEMPOTENCY_ACTIONS})
    if name in RESULT_WRITERS:
        allowed.update({action: [RESULTS_OBJECTS] for action in RESULT_WRITE_ACTIONS})
    if name in IMPORT_READERS:
        allowed.update({action: [IMPORT_OBJECTS] for action in IMPORT_READ_ACTIONS})
    # Services a function of this kind must not reach at all, whatever the resource (what it may
    # reach, allowed_grants checks action by action).
    forbidden: tuple[str, ...]
    if is_trigger:
        forbidden = ()
    elif name in WEBHOOKS:
        forbidden = ("dynamodb",)
    elif name in IDEMPOTENT_WRITERS:
        forbidden = ("events",)
    else:
        forbidden = ("dynamodb", "events")
    kind = "webhook function" if name in WEBHOOKS else "action function"
    for statement in statements:
        for action in as_list(statement.get("Action")):
            if isinstance(action, str) and action.split(":")[0] in forbidden:
                problems.append(f"{role_id}: {kind} {name} must not have {action}")
    granted, p = allowed_grants(role_id, statements, allowed)
    problems += p
    problems += secrets_source_problems(t, role_id)
    required = set(LOG_ACTIONS) | {SECRET_ACTION}
    if is_trigger:
        required |= TRIGGER_DYNAMODB_ACTIONS
    if name in MEMBERSHIP_SWEEPERS:
        required |= SWEEP_DYNAMODB_ACTIONS
    if name in PUBLISHERS:
        required |= {EVENTS_ACTION}
    if name in IDEMPOTENT_WRITERS:
        required |= IDEMPOTENCY_ACTIONS
    if name in RESULT_WRITERS:
        required |= RESULT_WRITE_ACTIONS
    if name in IMPORT_READERS:
        required |= IMPORT_READ_ACTIONS
    for action in sorted(required):
        if not any(resource in granted.get(action, []) for resource in allowed.get(action, [])):
            problems.append(f"{role_id}: {name} needs {action} on {json.dumps(allowed.get(action))}")
    return problems


def secrets_source_problems(t: Template, role_id: str) -> list[str]:
    """A function reads secrets only through the shared CrmSecretsReadPolicy, attached by reference."""
    problems = []
    role = props(t, role_id)
    if {"Ref": SECRETS_POLICY} not in as_list(role.get("ManagedPolicyArns")):
        problems.append(f"{role_id}: must attach {SECRETS_POLICY} (the one way to read the credentials)")
    own = [(f"inline policy {policy.get('PolicyName')}", policy.get("PolicyDocument"))
           for policy in as_list(role.get("Policies"))]
    for arn in as_list(role.get("ManagedPolicyArns")):
        policy_id = target_of(arn)
        if policy_id and policy_id != SECRETS_POLICY and policy_id in t["Resources"]:
            own.append((f"managed policy {policy_id}", props(t, policy_id).get("PolicyDocument")))
    for policy_type in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy_id, policy in resources(t, policy_type).items():
            if role_id in [target_of(r) for r in as_list(policy.get("Properties", {}).get("Roles"))]:
                own.append((f"{policy_type} {policy_id}", policy["Properties"].get("PolicyDocument")))
    for where, document in own:
        for statement in as_list((document or {}).get("Statement")):
            for action in as_list(statement.get("Action")):
                if isinstance(action, str) and action.startswith("secretsmanager:"):
                    problems.append(f"{role_id}: {action} in {where}; secrets are read only through {SECRETS_POLICY}")
    return problems


# ------------------------------------------------------------------------------------------------
# The webhook receiver's public Function URL
# ------------------------------------------------------------------------------------------------


def function_url_problems(t: Template) -> list[str]:
    """Only the webhook receiver is public: one URL with AuthType NONE, exactly the two permissions a
    public URL needs (no plain public invoke), and the WebhookUrl output."""
    problems = []
    functions = resources(t, "AWS::Lambda::Function")
    webhook_ids = set(WEBHOOKS.values())
    urls: dict[str, list[str]] = {}
    for url_id, url in resources(t, "AWS::Lambda::Url").items():
        u = url.get("Properties") or {}
        target_id = target_of(u.get("TargetFunctionArn"))
        urls.setdefault(target_id or "?", []).append(url_id)
        if target_id not in webhook_ids:
            problems.append(f"{url_id}: only the webhook receiver may have a Function URL, not {target_id}")
            continue
        if u.get("AuthType") != "NONE":
            problems.append(f"{url_id}: AuthType must be NONE (Dataverse cannot sign SigV4 requests; the "
                            f"function checks the webhook key), got {json.dumps(u.get('AuthType'))}")
        if "Cors" in u:
            problems.append(f"{url_id}: no Cors: Dataverse calls server to server, browsers have no business here")
        if "Qualifier" in u:
            problems.append(f"{url_id}: the URL must serve the function itself, without a Qualifier")
    public: dict[str, set[str]] = {}
    for perm_id, perm in resources(t, "AWS::Lambda::Permission").items():
        p = perm.get("Properties") or {}
        if p.get("Principal") != "*":
            continue
        target_id = target_of(p.get("FunctionName"))
        action = p.get("Action")
        if target_id not in webhook_ids:
            problems.append(f"{perm_id}: {action} for any principal on {target_id}; only the webhook "
                            "receiver is public")
            continue
        if action not in PUBLIC_URL_PERMISSIONS:
            problems.append(f"{perm_id}: {action} for any principal; a public URL needs only "
                            f"{sorted(PUBLIC_URL_PERMISSIONS)}")
            continue
        key, value = PUBLIC_URL_PERMISSIONS[action]
        if p.get(key) != value:
            problems.append(f"{perm_id}: {action} for any principal needs {key} = {json.dumps(value)}; "
                            "without it anyone could invoke the function directly")
            continue
        public.setdefault(target_id, set()).add(action)
    outputs = t.get("Outputs") or {}
    for name, fid in WEBHOOKS.items():
        if fid not in functions:
            continue
        if len(urls.get(fid, [])) != 1:
            problems.append(f"{fid}: expected exactly one Function URL, found {urls.get(fid, [])}")
            continue
        for action in sorted(set(PUBLIC_URL_PERMISSIONS) - public.get(fid, set())):
            problems.append(f"{fid}: its public URL needs the permission {action} for principal * "
                            "(Lambda refuses every call without it)")
        value = (outputs.get(WEBHOOK_URL_OUTPUT) or {}).get("Value")
        if not is_getatt(value, urls[fid][0], "FunctionUrl"):
            problems.append(f"Outputs.{WEBHOOK_URL_OUTPUT} must be !GetAtt {urls[fid][0]}.FunctionUrl, "
                            f"got {json.dumps(value)}")
    return problems


# ------------------------------------------------------------------------------------------------
# Schedules
# ------------------------------------------------------------------------------------------------


def schedule_expression_problems(t: Template, owner: str, expression: Any) -> list[str]:
    problems = []
    param = target_of(expression)
    if param in t.get("Parameters", {}):
        pattern = t["Parameters"][param].get("AllowedPattern")
        if not pattern:
            problems.append(f"{owner}: parameter {param} needs an AllowedPattern for schedule expressions")
        else:
            for bad in ("rate(5 minutez)", "rate(1 minutes)", "rate(0 minutes)", "rate(5 minute)"):
                if re.fullmatch(pattern, bad):
                    problems.append(f"{owner}: parameter {param} accepts the invalid expression {bad}")
    value = resolve(t, expression)
    if not isinstance(value, str) or not (RATE_EXPRESSION.fullmatch(value) or CRON_EXPRESSION.fullmatch(value)):
        problems.append(f"{owner}: invalid schedule expression {json.dumps(value)}")
    return problems


def schedule_problems(t: Template) -> list[str]:
    problems = []
    schedules = resources(t, "AWS::Scheduler::Schedule")
    targets: dict[str, list[str]] = {}
    for sid, schedule in schedules.items():
        s = schedule.get("Properties") or {}
        target = s.get("Target") or {}
        target_id = target_of(target.get("Arn"))
        targets.setdefault(target_id or "?", []).append(sid)
        problems += schedule_expression_problems(t, sid, s.get("ScheduleExpression"))
        if "State" not in s:
            problems.append(f"{sid}: State must be explicit (ENABLED/DISABLED)")
        retry = target.get("RetryPolicy") or {}
        if not isinstance(retry.get("MaximumRetryAttempts"), int) or not isinstance(
                retry.get("MaximumEventAgeInSeconds"), int):
            problems.append(f"{sid}: Target.RetryPolicy needs MaximumRetryAttempts and MaximumEventAgeInSeconds")
        dlq_id = target_of((target.get("DeadLetterConfig") or {}).get("Arn"))
        if t["Resources"].get(dlq_id or "", {}).get("Type") != "AWS::SQS::Queue":
            problems.append(f"{sid}: Target.DeadLetterConfig must name an SQS queue of this template")
            dlq_id = None
        # Input: valid JSON for the sample parameter values, and no parameter that can break it.
        raw_input = target.get("Input")
        for param in sub_parameters(raw_input):
            pattern = t.get("Parameters", {}).get(param, {}).get("AllowedPattern")
            if param in t.get("Parameters", {}) and (
                    not pattern or re.fullmatch(pattern, 'a"b') or re.fullmatch(pattern, "a\\b")):
                problems.append(f"{sid}: parameter {param} is substituted into the JSON Input but its "
                                'AllowedPattern does not exclude " and \\')
        try:
            payload = json.loads(resolve(t, raw_input)) if raw_input is not None else None
        except (TypeError, ValueError) as err:
            problems.append(f"{sid}: Target.Input is not valid JSON: {err}")
            payload = None
        name = binary_of(target_id or "")
        if name in TRIGGERS:
            if not isinstance(payload, dict):
                problems.append(f"{sid}: a trigger schedule needs an explicit JSON object Input")
            else:
                for field in ("dataset", "table"):
                    if not isinstance(payload.get(field), str):
                        problems.append(f"{sid}: Input needs a string {field}")
                unknown = set(payload) - TRIGGER_INPUT_KEYS[name]
                if unknown:
                    problems.append(f"{sid}: {name} does not accept {sorted(unknown)}")
        elif raw_input is None:
            problems.append(f"{sid}: Input must be explicit")
        # The scheduler's role: invoke this target, write to this DLQ, nothing else.
        role_id = target_of(target.get("RoleArn"))
        if t["Resources"].get(role_id or "", {}).get("Type") != "AWS::IAM::Role":
            problems.append(f"{sid}: RoleArn must be a role of this template")
            continue
        problems += trust_problems(t, role_id, "scheduler.amazonaws.com")
        statements, p = role_statements(t, role_id)
        problems += p
        invoke = ("states:StartExecution" if t["Resources"].get(target_id or "", {}).get("Type")
                  == "AWS::StepFunctions::StateMachine" else "lambda:InvokeFunction")
        allowed = {invoke: [target.get("Arn")]}
        if dlq_id:
            allowed["sqs:SendMessage"] = [getatt(dlq_id)]
        problems += allowed_grants(role_id, statements, allowed)[1]
    for name, fid in TRIGGERS.items():
        if len(targets.get(fid, [])) != 1:
            problems.append(f"{fid}: expected exactly one schedule, found {targets.get(fid, [])}")
    return problems


# ------------------------------------------------------------------------------------------------
# State machines
# ------------------------------------------------------------------------------------------------


def definition_of(t: Template, sm_id: str) -> dict[str, Any]:
    definition = props(t, sm_id).get("DefinitionString")
    if isinstance(definition, dict) and "Fn::Join" in definition:
        separator, parts = definition["Fn::Join"]
        definition = separator.join(parts)
    if not isinstance(definition, str):
        raise ValueError(f"{sm_id}: no inline DefinitionString (translate with infra/tools/sam_offline.py)")
    return json.loads(definition)


def walk_states(states: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        yield f"{path}{name}", state
        for nested_key in ("ItemProcessor", "Iterator"):
            if nested_key in state:
                yield from walk_states(state[nested_key].get("States", {}), f"{path}{name}/")
        for i, branch in enumerate(state.get("Branches", [])):
            yield from walk_states(branch.get("States", {}), f"{path}{name}[{i}]/")


def _retried(state: dict[str, Any], error: str) -> dict[str, Any] | None:
    for retrier in state.get("Retry", []):
        if error in retrier.get("ErrorEquals", []):
            return retrier
    return None


def _distributed(definition: dict[str, Any]) -> bool:
    return any(((state.get("ItemProcessor") or {}).get("ProcessorConfig") or {}).get("Mode") == "DISTRIBUTED"
               for _, state in walk_states(definition.get("States", {})))


def _caught(state: dict[str, Any], error: str) -> bool:
    return any(error in catcher.get("ErrorEquals", []) for catcher in state.get("Catch", []))


def state_machine_problems(t: Template) -> list[str]:
    problems = []
    machines = resources(t, "AWS::StepFunctions::StateMachine")
    if not machines:
        problems.append("no state machines")
    for sm_id, machine in machines.items():
        p = machine.get("Properties") or {}
        substitutions = p.get("DefinitionSubstitutions") or {}
        try:
            definition = definition_of(t, sm_id)
        except (ValueError, TypeError) as err:
            problems.append(f"{sm_id}: {err}")
            continue
        invoked: list[Any] = []
        catches_not_found = False
        describes_map_runs = False
        for state_name, state in walk_states(definition.get("States", {})):
            where = f"{sm_id}/{state_name}"
            mode = ((state.get("ItemProcessor") or {}).get("ProcessorConfig") or {}).get("Mode")
            if mode == "DISTRIBUTED" and not 1 <= state.get("MaxConcurrency", 0) <= CONCURRENT_REQUEST_LIMIT:
                # Unset (0) means up to 10,000 children at once, against Dataverse's 52 requests.
                problems.append(f"{where}: a Distributed Map needs a MaxConcurrency from 1 to "
                                f"{CONCURRENT_REQUEST_LIMIT} (Dataverse's concurrent request limit)")
            if state.get("Type") != "Task":
                continue
            resource = state.get("Resource", "")
            if resource == DESCRIBE_MAP_RUN:
                # Reads the counts of a Map Run of this very execution, named by the Map's output.
                run = str((state.get("Parameters") or {}).get("MapRunArn.$", ""))
                if not _distributed(definition) or not run.endswith(".MapRunArn"):
                    problems.append(f"{where}: {DESCRIBE_MAP_RUN} may only read a Distributed Map's own MapRunArn")
                else:
                    describes_map_runs = True
                continue
            if not resource.endswith(":states:::lambda:invoke"):
                problems.append(f"{where}: call Lambda through arn:aws:states:::lambda:invoke, not {resource}")
                continue
            function_ref = (state.get("Parameters") or {}).get("FunctionName", "")
            match = re.fullmatch(r"\$\{(\w+)\}", function_ref)
            arn = substitutions.get(match.group(1)) if match else None
            function_id = target_of(arn)
            if not is_getatt(arn, function_id or "") or function_id not in FUNCTIONS.values():
                problems.append(f"{where}: FunctionName must be a DefinitionSubstitutions entry "
                                "that is Fn::GetAtt <one of our functions>.Arn")
            else:
                invoked.append(arn)
            name = binary_of(function_id or "")
            payload = (state.get("Parameters") or {}).get("Payload")
            if name in TRIGGERS and isinstance(payload, dict):
                # "key.$" is the same key, taken from the state's input.
                unknown = {key.removesuffix(".$") for key in payload} - TRIGGER_INPUT_KEYS[name]
                if unknown:
                    problems.append(f"{where}: {name} does not accept {sorted(unknown)}")
            missing_service = sorted(e for e in LAMBDA_SERVICE_ERRORS if _retried(state, e) is None)
            if missing_service:
                problems.append(f"{where}: Retry must cover the Lambda service errors {missing_service}")
            for error in sorted(RETRIED_CRM_ERRORS):
                retrier = _retried(state, error)
                if retrier is None:
                    problems.append(f"{where}: Retry must cover {error}")
                elif retrier.get("MaxAttempts", 3) < 1 or retrier.get("BackoffRate", 2.0) <= 1.0:
                    problems.append(f"{where}: {error} must be retried with backoff (MaxAttempts >= 1, BackoffRate > 1)")
            if _caught(state, CAUGHT_CRM_ERROR):
                catches_not_found = True
            elif binary_of(function_id or "") in ROW_FUNCTIONS:
                problems.append(f"{where}: a task on one row must Catch {CAUGHT_CRM_ERROR}")
        if not catches_not_found:
            problems.append(f"{sm_id}: no state catches {CAUGHT_CRM_ERROR}")
        # Role: invoke exactly the functions the definition calls.
        role_id = target_of(p.get("RoleArn"))
        if t["Resources"].get(role_id or "", {}).get("Type") != "AWS::IAM::Role":
            problems.append(f"{sm_id}: RoleArn must be an explicit role of this template")
            continue
        problems += trust_problems(t, role_id, "states.amazonaws.com")
        statements, p2 = role_statements(t, role_id)
        problems += p2
        allowed: dict[str, list[Any]] = {"lambda:InvokeFunction": invoked}
        needed = {"lambda:InvokeFunction": invoked}
        if _distributed(definition):
            # Child executions of itself, and its own objects in the results bucket.
            name = (p.get("StateMachineName") or {}).get("Fn::Sub", "")
            arn = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"
            own = {"Fn::Sub": f"${{ResultsBucket.Arn}}/{name.removeprefix('${AWS::StackName}-')}/*"}
            allowed["states:StartExecution"] = [{"Fn::Sub": f"{arn}:stateMachine:{name}"}]
            for action in ("states:DescribeExecution", "states:StopExecution"):
                allowed[action] = [{"Fn::Sub": f"{arn}:execution:{name}/*"}]
            for action in DISTRIBUTED_MAP_S3_ACTIONS:
                allowed[action] = [own]
            if describes_map_runs:
                allowed["states:DescribeMapRun"] = [
                    {"Fn::Sub": f"{arn}:mapRun:{name}/{state.get('Label', '')}:*"}
                    for _, state in walk_states(definition.get("States", {}))
                    if ((state.get("ItemProcessor") or {}).get("ProcessorConfig") or {}).get("Mode") == "DISTRIBUTED"]
            needed = allowed
        granted, p3 = allowed_grants(role_id, statements, allowed)
        problems += p3
        for action, resources_needed in needed.items():
            for arn in resources_needed:
                if arn not in granted.get(action, []):
                    problems.append(f"{role_id}: may not {action} on {json.dumps(arn)}, which {sm_id} needs")
    return problems


# ------------------------------------------------------------------------------------------------
# Everything else that can act: roles not covered above (e.g. the EventBridge rule's role)
# ------------------------------------------------------------------------------------------------


def other_role_problems(t: Template) -> list[str]:
    problems = []
    for role_id in resources(t, "AWS::IAM::Role"):
        statements, p = role_statements(t, role_id)
        problems += p
        for statement in statements:
            problems += statement_problems(role_id, statement)
    for policy_type in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
        for policy_id, policy in resources(t, policy_type).items():
            for statement in as_list(policy["Properties"].get("PolicyDocument", {}).get("Statement")):
                problems += statement_problems(policy_id, statement)
    for rule_id, rule in resources(t, "AWS::Events::Rule").items():
        for target in as_list(rule["Properties"].get("Targets")):
            target_id = target_of(target.get("Arn"))
            kind = t["Resources"].get(target_id or "", {}).get("Type")
            if kind == "AWS::StepFunctions::StateMachine":
                if "RetryPolicy" not in target or "DeadLetterConfig" not in target:
                    problems.append(f"{rule_id}: a workflow target needs a RetryPolicy and a DeadLetterConfig")
                role_id = target_of(target.get("RoleArn"))
                if role_id:
                    statements, _ = role_statements(t, role_id)
                    problems += allowed_grants(role_id, statements, {"states:StartExecution": [target["Arn"]]})[1]
    return sorted(set(problems))


# ------------------------------------------------------------------------------------------------
# The operator's view: alarms and the dashboard
# ------------------------------------------------------------------------------------------------


def metrics_namespace(t: Template) -> tuple[Any, list[str]]:
    """The one CRM_METRICS_NAMESPACE every function writes its metrics to."""
    namespaces = {}
    for fid in FUNCTIONS.values():
        env = ((props(t, fid).get("Environment") or {}).get("Variables") or {}) if fid in t["Resources"] else {}
        namespaces[fid] = env.get("CRM_METRICS_NAMESPACE")
    distinct = {json.dumps(n, sort_keys=True) for n in namespaces.values()}
    if len(distinct) != 1 or None in namespaces.values():
        return None, [f"every function needs the same CRM_METRICS_NAMESPACE, got {namespaces}"]
    return next(iter(namespaces.values())), []


def _alarms_on(t: Template, namespace: Any, metric: str) -> list[tuple[str, dict[str, Any]]]:
    """Alarms watching `metric` in `namespace`, directly or as part of a metric math expression."""
    found = []
    for alarm_id, alarm in resources(t, "AWS::CloudWatch::Alarm").items():
        p = alarm.get("Properties") or {}
        if p.get("Namespace") == namespace and p.get("MetricName") == metric:
            found.append((alarm_id, {d["Name"]: d["Value"] for d in as_list(p.get("Dimensions"))}))
        for query in as_list(p.get("Metrics")):
            m = ((query.get("MetricStat") or {}).get("Metric")) or {}
            if m.get("Namespace") == namespace and m.get("MetricName") == metric:
                found.append((alarm_id, {d["Name"]: d["Value"] for d in as_list(m.get("Dimensions"))}))
    return found


def alarm_problems(t: Template) -> list[str]:
    problems = []
    namespace, p = metrics_namespace(t)
    problems += p
    alarms = resources(t, "AWS::CloudWatch::Alarm")
    # Every dead-letter queue a schedule or rule delivers to is watched.
    dead_letter_queues = set()
    for value in _walk(t["Resources"]):
        if isinstance(value, dict) and "DeadLetterConfig" in value:
            queue = target_of((value["DeadLetterConfig"] or {}).get("Arn"))
            if queue:
                dead_letter_queues.add(queue)
    watched = {target_of(dims.get("QueueName")) for _, dims in _alarms_on(t, "AWS/SQS", "ApproximateNumberOfMessagesVisible")}
    for queue in sorted(dead_letter_queues - watched):
        problems.append(f"{queue}: a dead-letter queue needs an alarm on ApproximateNumberOfMessagesVisible")
    # Every trigger's lag, and throttling and errors across the functions.
    lagging = {target_of(dims.get("FunctionName")) for _, dims in _alarms_on(t, namespace, "Lag")}
    for fid in sorted(set(TRIGGERS.values()) - lagging):
        problems.append(f"{fid}: a trigger needs an alarm on its Lag metric in {json.dumps(namespace)}")
    if not _alarms_on(t, namespace, "Throttles"):
        problems.append(f"no alarm on Throttles in {json.dumps(namespace)}")
    error_types = {dims.get("ErrorType") for _, dims in _alarms_on(t, namespace, "Errors")}
    for error_type in ("Crm.Configuration", "Crm.Unauthorized", "Crm.ServerError", "Crm.Throttled"):
        if error_type not in error_types:
            problems.append(f"no alarm on Errors of type {error_type} in {json.dumps(namespace)}")
    # Notifications go to the optional topic and nowhere else.
    for alarm_id, alarm in alarms.items():
        for key in ("AlarmActions", "OKActions", "InsufficientDataActions"):
            actions = (alarm.get("Properties") or {}).get(key)
            if actions is not None and actions != {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}],
                                                              {"Ref": "AWS::NoValue"}]}:
                problems.append(f"{alarm_id}: {key} must be the AlarmTopicArn parameter when it is set")
    # One dashboard, which shows every alarm.
    dashboards = resources(t, "AWS::CloudWatch::Dashboard")
    if len(dashboards) != 1:
        problems.append(f"expected one dashboard, found {sorted(dashboards)}")
    for dashboard_id, dashboard in dashboards.items():
        body = json.dumps((dashboard.get("Properties") or {}).get("DashboardBody"))
        for alarm_id in sorted(alarms):
            if f"${{{alarm_id}.Arn}}" not in body:
                problems.append(f"{dashboard_id}: does not show {alarm_id}")
    return problems


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for child in value.values():
            yield from _walk(child)
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child)


def _states_in(definition: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each `States` object of a definition, nested ones (Map, Parallel) included."""
    yield definition.get("States", {})
    for _, state in walk_states(definition.get("States", {})):
        for nested_key in ("ItemProcessor", "Iterator"):
            if nested_key in state:
                yield from _states_in(state[nested_key])
        for branch in state.get("Branches", []):
            yield from _states_in(branch)


def resume_problems(t: Template) -> list[str]:
    """A write-records task must not end a batch that stopped partway: its answer's next_row must lead, through
    a Choice, back to the same task with start_row taken from it (rows after a stop are not written otherwise)."""
    problems = []
    for sm_id, machine in resources(t, "AWS::StepFunctions::StateMachine").items():
        substitutions = (machine.get("Properties") or {}).get("DefinitionSubstitutions") or {}
        try:
            definition = definition_of(t, sm_id)
        except (ValueError, TypeError):
            continue  # reported by state_machine_problems
        for states in _states_in(definition):
            for name, state in states.items():
                if state.get("Type") != "Task":
                    continue
                match = re.fullmatch(r"\$\{(\w+)\}", (state.get("Parameters") or {}).get("FunctionName", ""))
                if binary_of(target_of(substitutions.get(match.group(1)) if match else None) or "") != "write-records":
                    continue
                where = f"{sm_id}/{name}"
                choice = states.get(state.get("Next", ""), {})
                rules = choice.get("Choices", []) if choice.get("Type") == "Choice" else []

                def on_next_row(rule: dict[str, Any]) -> bool:
                    return str(rule.get("Variable", "")).endswith(".next_row")

                absent = next((i for i, rule in enumerate(rules) if on_next_row(rule) and rule.get("IsPresent") is False),
                              None)
                if absent is None or "Default" not in choice:
                    problems.append(f"{where}: write-records may stop partway; its Next must be a Choice whose rule "
                                    "on the answer's next_row IsPresent false ends the batch, and whose Default "
                                    "writes the rest")
                    continue
                # Step Functions fails (States.Runtime, which no Catch sees) on a rule reading a missing variable,
                # and And is not documented to stop at its first false operand: next_row is read only after the
                # rule that sends an answer without it elsewhere, and never inside And, Or or Not.
                compound = [rule for rule in rules if any(key in rule for key in ("And", "Or", "Not"))
                            and ".next_row" in json.dumps(rule)]
                early = [rule for rule in rules[:absent] if ".next_row" in json.dumps(rule)]
                if compound or early:
                    problems.append(f"{where}: the Choice must read next_row only after its rule on next_row "
                                    "IsPresent false, and never inside And, Or or Not")
                # Follow Pass states from the Default to the task, and see start_row taken from next_row on the way.
                step, hops, resumes = choice.get("Default"), 0, False
                while step != name and hops < 5 and states.get(step, {}).get("Type") == "Pass":
                    parameters = states[step].get("Parameters") or {}
                    resumes = resumes or str(parameters.get("start_row.$", "")).endswith(".next_row")
                    step, hops = states[step].get("Next"), hops + 1
                if step != name or not resumes or rules[absent].get("Next") == choice.get("Default"):
                    problems.append(f"{where}: the Choice on next_row must lead back to {name} with start_row "
                                    "set from next_row")
                # A round that settled nothing must not go straight back: nothing would make it wait.
                guarded = any(on_next_row(rule) and str(rule.get("NumericEqualsPath", "")).endswith(".start_row")
                              and rule.get("Next") != choice.get("Default") for rule in rules[absent + 1:])
                if not guarded:
                    problems.append(f"{where}: before the rule that writes the rest, the Choice must send a round "
                                    "whose next_row equals its start_row elsewhere (it settled nothing)")
                # Only a Crm.* error says that the invocation wrote nothing: any other (a Lambda service error, a
                # timeout, a crash) may come after it wrote rows, and must be recorded as of unknown outcome.
                caught = next((c for c in state.get("Catch", []) if "States.ALL" in c.get("ErrorEquals", [])), {})
                triage = states.get(caught.get("Next", ""), {})
                crm = [rule for rule in triage.get("Choices", []) if rule.get("StringMatches") == "Crm.*"
                       and str(rule.get("Variable", "")).endswith(".Error")]
                if (triage.get("Type") != "Choice" or not crm
                        or states.get(triage.get("Default", ""), {}).get("Type") != "Pass"
                        or "unknown_from.$" not in (states.get(triage.get("Default", ""), {}).get("Parameters") or {})):
                    problems.append(f"{where}: a caught error must go to a Choice that sends Crm.* errors (nothing "
                                    "written) one way and by Default every other error to a record of the rows "
                                    "whose outcome is unknown (unknown_from)")
                # A failure after earlier rounds wrote rows must be caught, to record where to resume.
                if not any("States.ALL" in c.get("ErrorEquals", []) for c in state.get("Catch", [])):
                    problems.append(f"{where}: write-records must Catch States.ALL, so that a batch failing after "
                                    "earlier rounds says which rows they settled")
    return problems


def batch_map_problems(t: Template) -> list[str]:
    """A Distributed Map whose batches write records must let every batch end (a batch aborted midway leaves no
    record of what it wrote) and then fail the execution when a batch failed, from the Map Run's counts."""
    problems = []
    for sm_id, machine in resources(t, "AWS::StepFunctions::StateMachine").items():
        substitutions = (machine.get("Properties") or {}).get("DefinitionSubstitutions") or {}
        try:
            definition = definition_of(t, sm_id)
        except (ValueError, TypeError):
            continue
        for states in _states_in(definition):
            for name, state in states.items():
                processor = state.get("ItemProcessor") or {}
                if (processor.get("ProcessorConfig") or {}).get("Mode") != "DISTRIBUTED":
                    continue
                writes = any(binary_of(target_of(substitutions.get(m.group(1))) or "") == "write-records"
                             for task in processor.get("States", {}).values()
                             if (m := re.fullmatch(r"\$\{(\w+)\}", str((task.get("Parameters") or {})
                                                                     .get("FunctionName", "")))))
                if not writes:
                    continue
                where = f"{sm_id}/{name}"
                if state.get("ToleratedFailurePercentage") != 100 or "ToleratedFailureCount" in state:
                    problems.append(f"{where}: ToleratedFailurePercentage must be 100 (and no ToleratedFailureCount): "
                                    "a failed batch must not abort the others midway, before they record what they "
                                    "wrote")
                count = states.get(state.get("Next", ""), {})
                after = states.get(count.get("Next", ""), {})
                run = str((count.get("Parameters") or {}).get("MapRunArn.$", ""))
                result = str(state.get("ResultPath", "$"))
                if (count.get("Resource") != DESCRIBE_MAP_RUN or run != f"{result}.MapRunArn"
                        or after.get("Type") != "Choice"
                        or states.get(after.get("Default", ""), {}).get("Type") != "Fail"):
                    problems.append(f"{where}: its Next must read its own Map Run's counts ({DESCRIBE_MAP_RUN} on "
                                    f"{result}.MapRunArn), then a Choice whose Default fails the execution")
    return problems


def all_problems(t: Template) -> list[str]:
    return sorted(set(store_problems(t) + function_problems(t) + function_url_problems(t)
                      + schedule_problems(t) + state_machine_problems(t) + other_role_problems(t)
                      + alarm_problems(t) + resume_problems(t) + batch_map_problems(t)))
