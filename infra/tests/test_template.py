"""Policy tests for infra/template.yaml (stdlib unittest).

They load the TRANSLATED template: the file named by INFRA_TRANSLATED_TEMPLATE (validate.sh writes it),
or, when that is unset, a fresh offline translation (infra/tools/sam_offline.py). Run them with
`infra/validate.sh`, or alone:

    python -m unittest discover -s infra/tests -t infra/tests

The `Mutations` tests feed the checker broken copies of the template, to prove that each rule can fail.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import unittest
from pathlib import Path
from typing import Any

INFRA_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = INFRA_DIR.parent
sys.path.insert(0, str(INFRA_DIR / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import checks  # noqa: E402

_TRANSLATED: dict[str, Any] | None = None


def translated() -> dict[str, Any]:
    """The translated template, loaded once per test run; tests get deep copies."""
    global _TRANSLATED
    if _TRANSLATED is None:
        path = os.environ.get("INFRA_TRANSLATED_TEMPLATE")
        if path:
            _TRANSLATED = json.loads(Path(path).read_text())
        else:
            import sam_offline

            _TRANSLATED = sam_offline.translate(INFRA_DIR / "template.yaml")
    return copy.deepcopy(_TRANSLATED)


def raw_template() -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse((INFRA_DIR / "template.yaml").read_text())


def statements_of(t: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    return checks.role_statements(t, role_id)[0]


def add_statement(t: dict[str, Any], role_id: str, statement: dict[str, Any]) -> None:
    t["Resources"][role_id]["Properties"].setdefault("Policies", []).append(
        {"PolicyName": "mutation", "PolicyDocument": {"Version": "2012-10-17", "Statement": [statement]}}
    )


def set_definition(t: dict[str, Any], sm_id: str, definition: dict[str, Any]) -> None:
    t["Resources"][sm_id]["Properties"]["DefinitionString"] = json.dumps(definition)


# ------------------------------------------------------------------------------------------------
# The real template
# ------------------------------------------------------------------------------------------------


class TranslatedTemplate(unittest.TestCase):
    """The deployable (translated) template obeys every rule."""

    def setUp(self) -> None:
        self.t = translated()

    def test_cursor_table_bus_secret_and_queue_policies_are_as_designed(self) -> None:
        self.assertEqual(checks.store_problems(self.t), [])

    def test_every_function_is_arm64_al2023_sized_logged_and_least_privileged(self) -> None:
        self.assertEqual(checks.function_problems(self.t), [])

    def test_every_schedule_retries_has_a_dead_letter_queue_and_valid_json_input(self) -> None:
        self.assertEqual(checks.schedule_problems(self.t), [])

    def test_state_machines_retry_throttling_catch_not_found_and_invoke_only_their_functions(self) -> None:
        self.assertEqual(checks.state_machine_problems(self.t), [])

    def test_no_role_or_policy_has_wildcards(self) -> None:
        self.assertEqual(checks.other_role_problems(self.t), [])

    def test_action_roles_have_no_events_rights_and_dynamodb_only_for_idempotency(self) -> None:
        for name, fid in checks.ACTIONS.items():
            role_id = checks.target_of(self.t["Resources"][fid]["Properties"]["Role"])
            granted: dict[str, list[Any]] = {}
            for statement in statements_of(self.t, role_id):
                for action in checks.as_list(statement["Action"]):
                    granted.setdefault(action, []).extend(checks.as_list(statement["Resource"]))
            self.assertFalse({a for a in granted if a.startswith("events:")}, fid)
            dynamodb = {a: r for a, r in granted.items() if a.startswith("dynamodb:")}
            if name in checks.IDEMPOTENT_WRITERS:
                self.assertEqual(dynamodb, {a: [{"Fn::GetAtt": ["IdempotencyTable", "Arn"]}]
                                            for a in checks.IDEMPOTENCY_ACTIONS}, fid)
            else:
                self.assertEqual(dynamodb, {}, fid)
            s3 = {a: r for a, r in granted.items() if a.startswith("s3:")}
            if name in checks.RESULT_WRITERS:
                self.assertEqual(s3, {a: [checks.RESULTS_OBJECTS] for a in checks.RESULT_WRITE_ACTIONS}, fid)
            elif name in checks.IMPORT_READERS:
                self.assertEqual(s3, {a: [checks.IMPORT_OBJECTS] for a in checks.IMPORT_READ_ACTIONS}, fid)
            else:
                self.assertEqual(s3, {}, fid)

    def test_alarms_watch_the_queues_the_lag_the_errors_and_the_throttles(self) -> None:
        self.assertEqual(checks.alarm_problems(self.t), [])

    def test_trigger_roles_reach_only_the_cursor_table_and_the_bus(self) -> None:
        for name, fid in checks.TRIGGERS.items():
            role_id = checks.target_of(self.t["Resources"][fid]["Properties"]["Role"])
            granted = {}
            for statement in statements_of(self.t, role_id):
                for action in checks.as_list(statement["Action"]):
                    granted.setdefault(action, []).extend(checks.as_list(statement["Resource"]))
            dynamodb = {a: r for a, r in granted.items() if a.startswith("dynamodb:")}
            expected = set(checks.TRIGGER_DYNAMODB_ACTIONS)
            if name in checks.MEMBERSHIP_SWEEPERS:
                expected |= checks.SWEEP_DYNAMODB_ACTIONS
            self.assertEqual(set(dynamodb), expected, fid)
            for resources in dynamodb.values():
                self.assertEqual(resources, [{"Fn::GetAtt": ["CursorTable", "Arn"]}], fid)
            self.assertEqual(granted["events:PutEvents"], [{"Fn::GetAtt": ["EventBus", "Arn"]}], fid)
            self.assertEqual(granted["secretsmanager:GetSecretValue"], [checks.SECRETS_RESOURCE], fid)

    def test_webhook_role_reaches_only_the_bus_its_secrets_and_its_log_group(self) -> None:
        for fid in checks.WEBHOOKS.values():
            function = self.t["Resources"][fid]["Properties"]
            role_id = checks.target_of(function["Role"])
            log_group_id = checks.target_of(function["LoggingConfig"]["LogGroup"])
            granted: dict[str, list[Any]] = {}
            for statement in statements_of(self.t, role_id):
                self.assertEqual(statement["Effect"], "Allow", fid)
                for action in checks.as_list(statement["Action"]):
                    granted.setdefault(action, []).extend(checks.as_list(statement["Resource"]))
            # Exactly these grants: no DynamoDB (no cursor), the bus and nothing else to write to.
            self.assertEqual(granted, {
                "logs:CreateLogStream": [{"Fn::GetAtt": [log_group_id, "Arn"]}],
                "logs:PutLogEvents": [{"Fn::GetAtt": [log_group_id, "Arn"]}],
                "secretsmanager:GetSecretValue": [checks.SECRETS_RESOURCE],
                "events:PutEvents": [{"Fn::GetAtt": ["EventBus", "Arn"]}],
            }, fid)
            # The secret (credentials and webhook_key) only through the shared policy.
            role = self.t["Resources"][role_id]["Properties"]
            self.assertEqual(role["ManagedPolicyArns"], [{"Ref": checks.SECRETS_POLICY}], fid)
            inline = [a for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]
                      for a in checks.as_list(s["Action"])]
            self.assertFalse([a for a in inline if a.startswith("secretsmanager:")], fid)

    def test_every_function_reads_secrets_only_through_the_shared_policy(self) -> None:
        for fid in checks.FUNCTIONS.values():
            role_id = checks.target_of(self.t["Resources"][fid]["Properties"]["Role"])
            self.assertEqual(checks.secrets_source_problems(self.t, role_id), [], fid)

    def test_webhook_publishes_like_the_triggers_without_a_cursor(self) -> None:
        trigger_env = self.t["Resources"]["WhenRecordCreatedFunction"]["Properties"]["Environment"]["Variables"]
        for fid in checks.WEBHOOKS.values():
            env = self.t["Resources"][fid]["Properties"]["Environment"]["Variables"]
            self.assertEqual(env, {key: trigger_env[key] for key in ("CRM_SECRETS", "CRM_EVENTS", "CRM_EVENT_SOURCE",
                                                                "CRM_METRICS_NAMESPACE")})
            self.assertNotIn("CRM_STATE", env)
            self.assertLessEqual(self.t["Resources"][fid]["Properties"]["Timeout"], checks.WEBHOOK_MAX_TIMEOUT)

    def test_the_webhook_receiver_is_public_only_through_its_function_url(self) -> None:
        self.assertEqual(checks.function_url_problems(self.t), [])
        urls = checks.resources(self.t, "AWS::Lambda::Url")
        self.assertEqual(set(urls), {"DataverseWebhookFunctionUrl"})
        url = urls["DataverseWebhookFunctionUrl"]["Properties"]
        self.assertEqual(url["AuthType"], "NONE")
        self.assertEqual(url["TargetFunctionArn"], {"Ref": "DataverseWebhookFunction"})
        public = {(p["Properties"]["Action"], checks.target_of(p["Properties"]["FunctionName"]),
                   p["Properties"].get("FunctionUrlAuthType"), p["Properties"].get("InvokedViaFunctionUrl"))
                  for p in checks.resources(self.t, "AWS::Lambda::Permission").values()
                  if p["Properties"].get("Principal") == "*"}
        self.assertEqual(public, {
            ("lambda:InvokeFunctionUrl", "DataverseWebhookFunction", "NONE", None),
            ("lambda:InvokeFunction", "DataverseWebhookFunction", None, True),
        })
        self.assertEqual(self.t["Outputs"]["WebhookUrl"]["Value"],
                         {"Fn::GetAtt": ["DataverseWebhookFunctionUrl", "FunctionUrl"]})

    def test_no_role_attaches_an_aws_managed_policy(self) -> None:
        for role_id, role in checks.resources(self.t, "AWS::IAM::Role").items():
            for arn in role["Properties"].get("ManagedPolicyArns", []):
                self.assertIn(checks.target_of(arn), self.t["Resources"], f"{role_id} attaches {arn}")

    def test_each_trigger_schedule_passes_its_own_parameters(self) -> None:
        # Each parameter stands for itself, so the Input shows which one fills which key: rendered with
        # the defaults it could not, since the created and updated schedules share theirs. The keys
        # themselves are checked against docs/functions.md by schedule_problems.
        inputs = {}
        for schedule in checks.resources(self.t, "AWS::Scheduler::Schedule").values():
            target = schedule["Properties"]["Target"]
            name = checks.binary_of(checks.target_of(target["Arn"]) or "")
            if name:
                inputs[name] = json.loads(re.sub(r"\$\{(\w+)\}", r"\1", target["Input"]["Fn::Sub"]))
        self.assertEqual(inputs["when-record-created"],
                         {"dataset": "Dataset", "table": "CreatedTable", "$filter": "CreatedFilter"})
        self.assertEqual(inputs["when-record-updated"],
                         {"dataset": "Dataset", "table": "UpdatedTable", "$filter": "UpdatedFilter"})
        self.assertEqual(inputs["when-record-deleted"], {"dataset": "Dataset", "table": "DeletedTable", "$filter": "DeletedFilter"})

    def test_filter_parameters_cannot_break_the_schedule_json(self) -> None:
        for name in ("CreatedFilter", "UpdatedFilter"):
            pattern = self.t["Parameters"][name]["AllowedPattern"]
            self.assertTrue(re.fullmatch(pattern, "statecode eq 0 and name eq 'A&B (C)'"))
            self.assertIsNone(re.fullmatch(pattern, 'name eq "x"'))
            self.assertIsNone(re.fullmatch(pattern, "name eq 'a\\'"))

    def test_poll_rate_parameters_accept_only_valid_expressions(self) -> None:
        for name in ("PollRate", "WorkflowPollRate"):
            pattern = self.t["Parameters"][name]["AllowedPattern"]
            for good in ("rate(1 minute)", "rate(5 minutes)", "rate(12 hours)", "cron(0/5 * * * ? *)"):
                self.assertTrue(re.fullmatch(pattern, good), (name, good))
            for bad in ("rate(5 minutez)", "rate(1 minutes)", "rate(0 minutes)", "rate(5 minute)", "5 minutes"):
                self.assertIsNone(re.fullmatch(pattern, bad), (name, bad))

    def test_the_record_created_rule_starts_the_workflow_for_the_configured_table(self) -> None:
        rule = self.t["Resources"]["RecordCreatedStateMachineOnRecordCreated"]["Properties"]
        self.assertEqual(rule["EventPattern"]["detail-type"], ["Record Created"])
        self.assertEqual(rule["EventPattern"]["source"], [{"Ref": "EventSource"}])
        self.assertEqual(rule["EventPattern"]["detail"]["table"], [{"Ref": "CreatedTable"}])
        self.assertEqual(rule["EventBusName"], {"Ref": "EventBus"})
        self.assertEqual(rule["Targets"][0]["Arn"], {"Ref": "RecordCreatedStateMachine"})

    def test_the_sample_event_matches_the_rule_and_carries_the_design_detail(self) -> None:
        event = json.loads((INFRA_DIR / "events" / "record-created.json").read_text())
        pattern = self.t["Resources"]["RecordCreatedStateMachineOnRecordCreated"]["Properties"]["EventPattern"]

        def matches(pattern: dict[str, Any], value: dict[str, Any]) -> bool:
            for key, expected in pattern.items():
                if isinstance(expected, dict):
                    if not matches(expected, value.get(key, {})):
                        return False
                elif value.get(key) not in [checks.resolve(self.t, e) for e in expected]:
                    return False
            return True

        self.assertTrue(matches(pattern, event))
        self.assertEqual(set(event["detail"]),
                         {"event_id", "dataset", "table", "id", "version", "changed_on", "record"})
        self.assertIn("@odata.etag", event["detail"]["record"])

    def test_outputs_give_what_a_user_needs(self) -> None:
        outputs = set(self.t["Outputs"])
        for needed in ("SecretName", "EventBusName", "EventBusArn", "CursorTableName", "ScheduleDeadLetterQueueUrl",
                       "WorkflowDeadLetterQueueUrl", "RecordCreatedStateMachineArn", "ScheduledPollStateMachineArn",
                       "WebhookUrl"):
            self.assertIn(needed, outputs)
        for fid in checks.FUNCTIONS.values():
            self.assertIn(f"{fid}Arn", outputs)


class SamTemplate(unittest.TestCase):
    """The SAM source: what the translated template cannot show."""

    def setUp(self) -> None:
        self.t = raw_template()

    def test_code_comes_from_make_build_without_a_sam_build_method(self) -> None:
        for name, fid in checks.FUNCTIONS.items():
            resource = self.t["Resources"][fid]
            self.assertEqual(resource["Type"], "AWS::Serverless::Function")
            self.assertEqual(resource["Properties"]["CodeUri"], f"../target/lambda/{name}/bootstrap.zip")
            self.assertNotIn("BuildMethod", json.dumps(resource.get("Metadata", {})), fid)
            self.assertNotIn("Policies", resource["Properties"], f"{fid}: use its explicit role, not SAM Policies")

    def test_only_the_webhook_receiver_has_a_function_url(self) -> None:
        with_url = {logical_id: r["Properties"]["FunctionUrlConfig"] for logical_id, r in self.t["Resources"].items()
                    if r["Type"] == "AWS::Serverless::Function" and "FunctionUrlConfig" in r["Properties"]}
        self.assertEqual(set(with_url), set(checks.WEBHOOKS.values()))
        for config in with_url.values():
            self.assertEqual(config["AuthType"], "NONE")
            self.assertNotIn("Cors", config)
        self.assertNotIn("FunctionUrlConfig", self.t.get("Globals", {}).get("Function", {}))

    def test_globals_carry_no_policies(self) -> None:
        self.assertNotIn("Policies", self.t.get("Globals", {}).get("Function", {}))

    def test_state_machine_files_exist_and_are_all_wired(self) -> None:
        wired = {r["Properties"]["DefinitionUri"] for r in self.t["Resources"].values()
                 if r["Type"] == "AWS::Serverless::StateMachine"}
        on_disk = {f"statemachines/{p.name}" for p in (INFRA_DIR / "statemachines").glob("*.asl.json")}
        self.assertEqual(wired, on_disk)
        for path in on_disk:
            json.loads((INFRA_DIR / path).read_text())


class TriggerContract(unittest.TestCase):
    """The trigger keys the checks allow come from docs/functions.md, and are read as the functions take them."""

    def setUp(self) -> None:
        self.doc = checks.CONTRACT_DOC.read_text()

    def test_the_sample_poll_events_use_only_documented_keys(self) -> None:
        for name, accepted in checks.TRIGGER_INPUT_KEYS.items():
            self.assertLessEqual({"dataset", "table"}, accepted, name)
            event = json.loads((REPO_DIR / "functions" / name / "events" / "poll.json").read_text())
            self.assertLessEqual(set(event), accepted, name)

    def test_a_refusal_in_the_doc_reaches_the_checks(self) -> None:
        row = "| `since` | yes | yes | refused |"
        self.assertIn(row, self.doc)
        keys = checks.trigger_input_keys(self.doc.replace(row, "| `since` | refused | yes | refused |"))
        self.assertNotIn("since", keys["when-record-created"])
        self.assertIn("since", keys["when-record-updated"])

    def test_a_cell_the_checks_cannot_read_fails_loudly(self) -> None:
        row = "| `columns` | refused | yes | refused |"
        self.assertIn(row, self.doc)
        with self.assertRaisesRegex(ValueError, "cannot read 'maybe'"):
            checks.trigger_input_keys(self.doc.replace(row, "| `columns` | refused | maybe | refused |"))

    def test_a_doc_without_the_table_fails_loudly(self) -> None:
        with self.assertRaisesRegex(ValueError, "Triggers"):
            checks.trigger_input_keys(self.doc.replace("## Triggers", "## Pollers"))


# ------------------------------------------------------------------------------------------------
# The checks can fail
# ------------------------------------------------------------------------------------------------


# Step Functions' limit for a state's input or output, a task's payload and its result.
DATA_LIMIT = 256 * 1024


class Uncatchable(Exception):
    """An error no Retry or Catch sees, `States.ALL` included (AWS's error-handling docs): `States.Runtime` (a path
    to a missing field, in a Choice rule or a `.$` field) and `States.DataLimitExceeded` (data over 256 KB). The
    execution fails with it, and no state after it runs."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error


def _path(data: Any, path: str) -> Any:
    """A JSONPath of the form `$` or `$.a.b`, as the import workflow uses them; a missing field is States.Runtime."""
    for part in [p for p in path.removeprefix("$").split(".") if p]:
        if not isinstance(data, dict) or part not in data:
            raise Uncatchable("States.Runtime", f"{path} does not exist in the state's data")
        data = data[part]
    return data


def _arguments(text: str) -> list[str]:
    """The arguments of an intrinsic function's call, split at the commas outside quotes."""
    args, current, quoted = [], "", False
    for i, char in enumerate(text):
        if char == "'" and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        if char == "," and not quoted:
            args.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        args.append(current.strip())
    return args


def _value(expression: str, data: Any) -> Any:
    """A `.$` field's value: a path, or one of the intrinsic functions the import workflow uses."""
    call = re.fullmatch(r"(States\.\w+)\((.*)\)", expression, re.DOTALL)
    if not call:
        return _path(data, expression)
    name, raw = call.group(1), _arguments(call.group(2))

    def argument(arg: str) -> Any:
        if arg.startswith("'"):
            return arg[1:-1].replace("\\'", "'")
        return _path(data, arg) if arg.startswith("$") else json.loads(arg)

    args = [argument(a) for a in raw]
    if name == "States.MathAdd":
        assert all(type(a) is int for a in args), args  # Step Functions adds integers only
        return args[0] + args[1]
    if name == "States.JsonToString":
        return json.dumps(args[0], separators=(",", ":"))
    if name == "States.Format":
        pieces = args[0].split("{}")
        assert len(pieces) == len(args), args
        return "".join(p + (str(a) if i < len(args) - 1 else "") for i, (p, a) in
                       enumerate(zip(pieces, args[1:] + [""])))
    raise AssertionError(f"{name} is not simulated")


def _parameters(template: Any, data: Any) -> Any:
    if isinstance(template, dict):
        return {(k[:-2] if k.endswith(".$") else k): (_value(v, data) if k.endswith(".$") else _parameters(v, data))
                for k, v in template.items()}
    return template


def _matches(rule: dict[str, Any], data: Any) -> bool:
    """A Choice rule. Every operand of And, Or and Not is evaluated: AWS does not document that evaluation stops
    at the first deciding operand, so a rule is safe only if each operand is. A comparison on a missing variable
    is States.Runtime, as in Step Functions."""
    for compound in ("And", "Or"):
        if compound in rule:
            results = [_matches(r, data) for r in rule[compound]]
            return all(results) if compound == "And" else any(results)
    if "Not" in rule:
        return not _matches(rule["Not"], data)
    tests = set(rule) - {"Variable", "Next"}
    assert len(tests) == 1, rule
    test = tests.pop()
    if test == "IsPresent":
        try:
            _path(data, rule["Variable"])
            present = True
        except Uncatchable:
            present = False
        return present == rule[test]
    value = _path(data, rule["Variable"])
    if test == "IsNull":
        return (value is None) == rule[test]
    if test == "StringEquals":
        return isinstance(value, str) and value == rule[test]
    if test == "StringMatches":
        pattern = "".join(".*" if c == "*" else re.escape(c) for c in rule[test])
        return isinstance(value, str) and re.fullmatch(pattern, value, re.DOTALL) is not None
    if test == "NumericEqualsPath":
        return isinstance(value, (int, float)) and value == _path(data, rule[test])
    if test == "NumericGreaterThan":
        return isinstance(value, (int, float)) and value > rule[test]
    raise AssertionError(f"{test} is not simulated")


class TaskFailed(Exception):
    """What a simulated task raises to fail, as Step Functions reports it; `cause=None` for an error without one."""

    def __init__(self, error: str, cause: str | None = "") -> None:
        super().__init__(error)
        self.error, self.cause = error, cause


class BatchFailed(Exception):
    """The execution ended in a Fail state, or in an error nothing caught (`state` is where)."""

    def __init__(self, state: str, error: str, cause: str) -> None:
        super().__init__(f"{state}: {error}: {cause}")
        self.state, self.error, self.cause = state, error, cause


def _size(data: Any) -> int:
    """The bytes Step Functions counts for a state's data: its JSON text in UTF-8."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


def _within_limit(data: Any, what: str, sizes: list[int]) -> None:
    sizes.append(_size(data))
    if sizes[-1] > DATA_LIMIT:
        raise Uncatchable("States.DataLimitExceeded", f"{what}: {sizes[-1]} bytes")


def _catches(names: list[str], error: str) -> bool:
    """Whether an ErrorEquals list matches `error`: States.ALL matches every error but the uncatchable ones."""
    return error in names or ("States.ALL" in names and error not in ("States.Runtime", "States.DataLimitExceeded"))


def run_states(states: dict[str, Any], start: str, data: Any, tasks: dict[str, Any],
               sizes: list[int] | None = None) -> Any:
    """Runs `states` from `start` as Step Functions would for the kinds the import workflow uses (Pass, Task and
    Map with Retry and Catch, Choice, Fail, Succeed). `tasks[resource](payload)` stands for a Task's call (the
    Parameters' Payload for Lambda, all of them otherwise) and `tasks["Map"](data)` for a Map state; each may
    raise TaskFailed. Returns the output, or raises BatchFailed (an uncatchable error becomes one, with its
    name). `sizes` collects the size of every state's data, payload and result."""
    sizes = [] if sizes is None else sizes
    name = start
    try:
        for _ in range(1000):
            state = states[name]
            kind = state["Type"]
            _within_limit(data, f"{name} input", sizes)
            if kind == "Choice":
                name = next((rule["Next"] for rule in state["Choices"] if _matches(rule, data)), state.get("Default"))
                if name is None:
                    raise Uncatchable("States.NoChoiceMatched", str(state))
                continue
            if kind == "Succeed":
                return data
            if kind == "Fail":
                error = _value(state["ErrorPath"], data) if "ErrorPath" in state else state.get("Error", "")
                cause = _value(state["CausePath"], data) if "CausePath" in state else state.get("Cause", "")
                assert isinstance(error, str) and isinstance(cause, str), (error, cause)
                raise BatchFailed(name, error, cause)
            if kind == "Pass":
                if "Result" in state:
                    result = state["Result"]
                else:
                    result = _parameters(state["Parameters"], data) if "Parameters" in state else data
            elif kind in ("Task", "Map"):
                if kind == "Map":
                    call, payload = tasks["Map"], data
                else:
                    parameters = _parameters(state.get("Parameters", {}), data)
                    call = tasks[state["Resource"]]
                    payload = parameters["Payload"] if state["Resource"].endswith(":lambda:invoke") else parameters
                    _within_limit(payload, f"{name} payload", sizes)
                attempts: dict[int, int] = {}
                caught = None
                while True:
                    try:
                        answer = call(payload)
                        if kind == "Task" and state["Resource"].endswith(":lambda:invoke"):
                            answer = {"Payload": answer}
                        try:
                            _within_limit(answer, f"{name} result", sizes)
                        except Uncatchable as over:
                            # Reported as the state's error, which only a Catch naming it could see.
                            raise TaskFailed(over.error, str(over)) from None
                        break
                    except TaskFailed as failed:
                        retriers = [i for i, r in enumerate(state.get("Retry", [])) if _catches(r["ErrorEquals"], failed.error)]
                        if retriers and attempts.get(retriers[0], 0) < state["Retry"][retriers[0]].get("MaxAttempts", 3):
                            attempts[retriers[0]] = attempts.get(retriers[0], 0) + 1
                            continue
                        catcher = next((c for c in state.get("Catch", []) if _catches(c["ErrorEquals"], failed.error)),
                                       None)
                        if catcher is None:
                            raise BatchFailed(name, failed.error, failed.cause or "") from None
                        caught = {"Error": failed.error}
                        if failed.cause is not None:
                            caught["Cause"] = failed.cause
                        break
                if caught is not None:
                    target = catcher.get("ResultPath", "$")
                    assert target.count(".") == 1, target
                    data = {**data, target.removeprefix("$."): caught}
                    name = catcher["Next"]
                    continue
                result = _parameters(state["ResultSelector"], answer) if "ResultSelector" in state else answer
            else:
                raise AssertionError(f"{name}: {kind} is not simulated")
            target = state.get("ResultPath", "$")
            if target == "$":
                data = result
            else:
                assert target.count(".") == 1, target
                data = {**data, target.removeprefix("$."): result}
            _within_limit(data, f"{name} output", sizes)
            if state.get("End"):
                return data
            name = state["Next"]
    except Uncatchable as failure:
        raise BatchFailed(name, failure.error, str(failure)) from None
    raise AssertionError("the execution never ended")


LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"


def run_batch(definition: dict[str, Any], batch: dict[str, Any], invoke: Any,
              sizes: list[int] | None = None) -> Any:
    """Runs the import workflow's ItemProcessor on one batch, calling `invoke(payload)` for write-records, which
    may raise TaskFailed. Its output, or BatchFailed."""
    processor = definition["States"]["WriteEachBatch"]["ItemProcessor"]
    return run_states(processor["States"], processor["StartAt"], batch, {LAMBDA_INVOKE: invoke}, sizes)


def _import_definition() -> dict[str, Any]:
    return json.loads((INFRA_DIR / "statemachines" / "import.asl.json").read_text())


COUNTS = ("created", "updated", "upserted", "failed", "unknown")


def _answer(rows: int, start: int, done: list[tuple[int, str]], listed: str = "problems") -> dict[str, Any]:
    """write-records' answer for a round from `start` that settled `done` (row, status) and stopped after
    them when rows are left."""
    answer: dict[str, Any] = {"table": "account", "mode": "create", **{c: 0 for c in COUNTS}}
    for _, status in done:
        answer[status] += 1
    answer["rows"] = [{"row": row, "status": status} for row, status in done
                      if listed == "all" or status in ("failed", "unknown")]
    end = start + len(done)
    answer["not_attempted"] = rows - end
    if end < rows:
        answer["next_row"] = end
        answer["stopped"] = {"type": "Crm.Throttled", "message": "Dataverse answered 429"}
    return answer


class ImportBatchLoop(unittest.TestCase):
    """The import workflow writes every row of a batch once, however often write-records stops partway, and a
    batch that fails after writing says where to resume."""

    batch_input = {"dataset": "d", "table": "t", "mode": "create", "outcomes": "problems"}

    def test_a_batch_is_written_whole_and_no_row_twice(self) -> None:
        definition = _import_definition()
        items = [{"name": f"r{i}"} for i in range(7)]
        written: list[int] = []
        payloads: list[dict[str, Any]] = []

        def write_records(payload: dict[str, Any]) -> dict[str, Any]:
            # Writes at most three rows an invocation (row 4 is refused), then stops as at a deadline.
            payloads.append(payload)
            start = payload.get("start_row", 0)
            done = [(i, "failed" if i == 4 else "created") for i in range(start, min(start + 3, len(items)))]
            written.extend(i for i, _ in done)
            return _answer(len(items), start, done)

        batch = {"Items": items, "BatchInput": self.batch_input}
        output = run_batch(definition, batch, write_records)
        self.assertEqual(written, list(range(7)))
        self.assertEqual([p["start_row"] for p in payloads], [0, 3, 6])
        self.assertTrue(all(p["Items"] == items and p["BatchInput"] == batch["BatchInput"] for p in payloads))
        # The last answer, the counts of every round, and each earlier round's listed rows, latest first.
        self.assertEqual(output["answer"]["created"], 1)
        self.assertEqual(output["settled"], {"created": 6, "updated": 0, "upserted": 0, "failed": 1, "unknown": 0})
        self.assertEqual(output["earlier"]["start_row"], 3)
        self.assertEqual(output["earlier"]["rows"], [{"row": 4, "status": "failed"}])
        self.assertEqual(output["earlier"]["earlier"]["next_row"], 3)
        self.assertIsNone(output["earlier"]["earlier"]["earlier"])

    def test_the_workflow_asks_for_problems_only_and_batches_of_about_150_kb(self) -> None:
        batcher = _import_definition()["States"]["WriteEachBatch"]["ItemBatcher"]
        self.assertEqual(batcher["BatchInput"].get("outcomes"), "problems")
        self.assertLessEqual(batcher["MaxInputBytesPerBatch"], 150 * 1024)

    def test_a_batch_that_fails_after_writing_records_where_to_resume(self) -> None:
        # Round 1 writes rows 0-59 (one refused) and is throttled; round 2 is throttled until its retries run out.
        definition = _import_definition()
        items = [{"name": f"r{i}"} for i in range(100)]
        calls: list[int] = []

        def write_records(payload: dict[str, Any]) -> dict[str, Any]:
            start = payload["start_row"]
            calls.append(start)
            if start == 0:
                return _answer(100, 0, [(i, "failed" if i == 7 else "created") for i in range(60)])
            raise TaskFailed("Crm.Throttled", '{"errorType":"Crm.Throttled","errorMessage":"Dataverse answered 429"}')

        with self.assertRaises(BatchFailed) as failed:
            run_batch(definition, {"Items": items, "BatchInput": self.batch_input}, write_records)
        self.assertEqual(failed.exception.error, "Import.BatchStoppedPartway")
        record = json.loads(failed.exception.cause)
        self.assertEqual(record["next_row"], 60)
        self.assertEqual(record["settled"], {"created": 59, "updated": 0, "upserted": 0, "failed": 1, "unknown": 0})
        self.assertEqual(record["failure"]["Error"], "Crm.Throttled")
        self.assertIn("429", record["failure"]["Cause"])
        # Round 2 was retried (its 6 retries) and never started before row 60.
        self.assertEqual(calls, [0] + [60] * 7)

    def test_a_first_round_failure_passes_its_error_on(self) -> None:
        definition = _import_definition()
        batch = {"Items": [{"name": "a"}], "BatchInput": self.batch_input}
        for error, state in (("Crm.Forbidden", "BatchFailed"), ("Crm.NotFound", "NotFound")):
            def refuse(payload: dict[str, Any], error: str = error) -> dict[str, Any]:
                raise TaskFailed(error, "the original cause")

            with self.assertRaises(BatchFailed) as failed:
                run_batch(definition, batch, refuse)
            self.assertEqual((failed.exception.state, failed.exception.error), (state, error))
            self.assertIn("the original cause", failed.exception.cause)
        # A 404 may be for the table or for its bulk message: the cause says both, and that nothing was written.
        self.assertIn("no bulk message", failed.exception.cause)
        self.assertIn("No row of this batch was written", failed.exception.cause)

    def test_a_round_that_settles_nothing_does_not_loop(self) -> None:
        # write-records fails instead; should an answer of nothing done come, the batch stops with its record.
        definition = _import_definition()
        calls: list[int] = []

        def write_records(payload: dict[str, Any]) -> dict[str, Any]:
            start = payload["start_row"]
            calls.append(start)
            done = [(0, "created"), (1, "created")] if start == 0 else []
            return _answer(5, start, done)

        with self.assertRaises(BatchFailed) as failed:
            run_batch(definition, {"Items": [{}] * 5, "BatchInput": self.batch_input}, write_records)
        self.assertEqual(calls, [0, 2])
        self.assertEqual(failed.exception.error, "Import.BatchStoppedPartway")
        record = json.loads(failed.exception.cause)
        self.assertEqual((record["next_row"], record["failure"]["Error"], record["settled"]["created"]),
                         (2, "Import.NoProgress", 2))

    def test_the_state_stays_well_under_256_kb_in_the_worst_case(self) -> None:
        # The largest batch the batcher hands over (about MaxInputBytesPerBatch, in update mode), and the most
        # an answer can list: every row a problem with the longest message, each settled in a round of its own
        # (100 rounds: each round settles a row or fails).
        definition = _import_definition()
        limit = definition["States"]["WriteEachBatch"]["ItemBatcher"]["MaxInputBytesPerBatch"]
        batch_input = {**self.batch_input, "mode": "update"}
        width = (limit - _size({"Items": [], "BatchInput": batch_input})) // 100 - 80
        items = [{"accountid": f"3f2504e0-4f89-41d3-9a0c-0305e82c{i:04d}", "description": "x" * width}
                 for i in range(100)]
        self.assertLessEqual(_size({"Items": items, "BatchInput": batch_input}), limit)
        self.assertGreater(_size({"Items": items, "BatchInput": batch_input}), limit - 1024)
        # The longest message write-records keeps for a row is ROW_MESSAGE_BYTES of JSON text, escapes included
        # (rows.rs); quotes escape to two bytes each, so a message of quotes is the worst case per character kept.
        cap = int(re.search(r"const ROW_MESSAGE_BYTES: usize = (\d+);",
                            (REPO_DIR / "functions/write-records/src/rows.rs").read_text()).group(1))
        message = '"' * ((cap - 3) // 2) + "…"
        escaped = len(json.dumps(message, ensure_ascii=False).encode()) - 2
        self.assertTrue(cap - 3 <= escaped <= cap, escaped)

        def write_records(payload: dict[str, Any]) -> dict[str, Any]:
            start = payload["start_row"]
            answer = _answer(100, start, [(start, "unknown")])
            answer["mode"] = "update"
            answer["rows"] = [{"row": start, "status": "unknown", "id": items[start]["accountid"],
                               "error": {"type": "Crm.BadRequest", "message": message}}]
            if "stopped" in answer:
                answer["stopped"]["message"] = message
            return answer

        sizes: list[int] = []
        output = run_batch(definition, {"Items": items, "BatchInput": batch_input}, write_records, sizes)
        self.assertEqual(output["settled"]["unknown"], 100)
        # 256 KB is Step Functions' limit for a state's data and a task's payload; keep 20% of it free.
        self.assertLess(max(sizes), 256 * 1024 * 0.8, f"largest state: {max(sizes)} bytes")

    def test_no_rule_reads_next_row_when_an_answer_has_none(self) -> None:
        # Step Functions fails with States.Runtime, which no Catch sees, on a rule reading a missing variable,
        # and And is not documented to stop at its first false operand: the earlier RowsLeft would end every
        # batch's last round so.
        definition = _import_definition()
        rows_left = definition["States"]["WriteEachBatch"]["ItemProcessor"]["States"]["RowsLeft"]
        self.assertEqual(rows_left["Choices"][0], {"Variable": "$.round.answer.next_row", "IsPresent": False,
                                                   "Next": "BatchDone"})
        batch = {"Items": [{"name": "a"}], "BatchInput": self.batch_input}

        def write_records(payload: dict[str, Any]) -> dict[str, Any]:
            return _answer(1, 0, [(0, "created")])

        self.assertEqual(run_batch(definition, batch, write_records)["settled"]["created"], 1)
        rows_left["Choices"] = [
            {"And": [{"Variable": "$.round.answer.next_row", "IsPresent": True},
                     {"Variable": "$.round.answer.next_row", "NumericEqualsPath": "$.start_row"}],
             "Next": "NoProgress"},
            {"Variable": "$.round.answer.next_row", "IsPresent": True, "Next": "NextRound"}]
        rows_left["Default"] = "BatchDone"
        with self.assertRaises(BatchFailed) as failed:
            run_batch(definition, batch, write_records)
        self.assertEqual((failed.exception.state, failed.exception.error), ("RowsLeft", "States.Runtime"))

    def test_an_error_that_is_not_crm_leaves_the_rows_from_its_round_unknown(self) -> None:
        # A Lambda service error (after its retries), a timeout or a crash may come after the invocation wrote
        # rows: the record says from which row the outcome is unknown, never that the round wrote nothing.
        definition = _import_definition()
        items = [{"name": f"r{i}"} for i in range(100)]
        cases = [("Lambda.ServiceException", 60, "boom"), ("Sandbox.Timedout", 0, "Task timed out"),
                 ("Runtime.ExitError", 60, "exit status 137"), ("States.Timeout", 60, None)]
        for error, at, cause in cases:
            calls: list[int] = []

            def write_records(payload: dict[str, Any], error: str = error, at: int = at,
                              cause: str | None = cause) -> dict[str, Any]:
                start = payload["start_row"]
                calls.append(start)
                if start < at:
                    return _answer(100, 0, [(i, "created") for i in range(60)])
                raise TaskFailed(error, cause)

            with self.assertRaises(BatchFailed) as failed:
                run_batch(definition, {"Items": items, "BatchInput": self.batch_input}, write_records)
            self.assertEqual((failed.exception.state, failed.exception.error),
                             ("BatchOutcomeUnknown", "Import.BatchOutcomeUnknown"), error)
            record = json.loads(failed.exception.cause)
            self.assertEqual(record["unknown_from"], at, error)
            self.assertNotIn("next_row", record)
            self.assertEqual(record["settled"]["created"], 60 if at else 0, error)
            self.assertEqual(record["failure"]["Error"], error)
            self.assertIn("unknown_from", record["resume"])
        # The Lambda service errors were retried first, from the same row.
        self.assertTrue(calls)

    def test_data_over_256_kb_is_not_caught(self) -> None:
        # States.DataLimitExceeded is terminal: no Catch (States.ALL included) records the batch then.
        definition = _import_definition()

        def write_records(payload: dict[str, Any]) -> dict[str, Any]:
            answer = _answer(1, 0, [(0, "failed")])
            answer["rows"][0]["error"] = {"type": "Crm.BadRequest", "message": "x" * DATA_LIMIT}
            return answer

        with self.assertRaises(BatchFailed) as failed:
            run_batch(definition, {"Items": [{}], "BatchInput": self.batch_input}, write_records)
        self.assertEqual((failed.exception.state, failed.exception.error), ("WriteBatch", "States.DataLimitExceeded"))


MAP_RUN = "arn:aws:states:us-east-1:123456789012:mapRun:stack-import/WriteEachBatch:5d1c"


def run_import(counts: dict[str, int]) -> Any:
    """Runs the import workflow's top level: the Map (its children are ImportBatchLoop's) answers as a Map with
    a ResultWriter does, and DescribeMapRun with `counts` as its ExecutionCounts (PascalCase, as the AWS SDK
    integration answers)."""
    definition = _import_definition()
    described: list[Any] = []

    def describe(parameters: dict[str, Any]) -> dict[str, Any]:
        described.append(parameters)
        execution_counts = {"Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 0, "TimedOut": 0, "Aborted": 0,
                            "Total": 0, "ResultsWritten": 0, "FailuresNotRedrivable": 0, "PendingRedrive": 0}
        execution_counts.update(counts)
        return {"MapRunArn": MAP_RUN, "Status": "SUCCEEDED", "ExecutionCounts": execution_counts,
                "ItemCounts": execution_counts, "ToleratedFailurePercentage": 100.0}

    def map_state(data: Any) -> dict[str, Any]:
        return {"MapRunArn": MAP_RUN,
                "ResultWriterDetails": {"Bucket": "results", "Key": "import/results/5d1c/manifest.json"}}

    try:
        return run_states(definition["States"], definition["StartAt"], {"object": "import/a.jsonl", "mode": "create"},
                          {"Map": map_state, "arn:aws:states:::aws-sdk:sfn:describeMapRun": describe})
    finally:
        assert described in ([], [{"MapRunArn": MAP_RUN}]), described


class ImportOutcome(unittest.TestCase):
    """Every batch runs to its end and records its own outcome; the import then fails if any batch did."""

    def test_every_batch_runs_to_its_end(self) -> None:
        batches = _import_definition()["States"]["WriteEachBatch"]
        self.assertEqual(batches["ToleratedFailurePercentage"], 100)
        self.assertNotIn("ToleratedFailureCount", batches)

    def test_the_import_succeeds_only_when_every_batch_did(self) -> None:
        output = run_import({"Succeeded": 7, "Total": 7})
        self.assertEqual(output["counts"], {"total": 7, "succeeded": 7, "failed": 0, "timed_out": 0, "aborted": 0})
        causes = []
        for counts in ({"Succeeded": 5, "Failed": 2, "Total": 7}, {"Succeeded": 6, "TimedOut": 1, "Total": 7},
                       {"Succeeded": 6, "Aborted": 1, "Total": 7}, {"Succeeded": 6, "Running": 1, "Total": 7}):
            with self.assertRaises(BatchFailed) as failed:
                run_import(counts)
            self.assertEqual((failed.exception.state, failed.exception.error), ("BatchesFailed", "Import.BatchesFailed"))
            self.assertIn("s3://results/import/results/5d1c/manifest.json", failed.exception.cause)
            self.assertIn("never start the whole import again in create mode", failed.exception.cause)
            causes.append(failed.exception.cause)
        self.assertIn("Of 7 batches, 2 failed, 0 timed out and 0 were aborted", causes[0])


class Mutations(unittest.TestCase):
    """Each test breaks one rule in a copy of the translated template and expects a report."""

    def setUp(self) -> None:
        self.t = translated()
        self.r = self.t["Resources"]

    def assertReported(self, fragment: str) -> None:  # noqa: N802 (unittest style)
        problems = checks.all_problems(self.t)
        self.assertTrue(any(fragment in p for p in problems),
                        f"expected a problem containing {fragment!r}, got:\n" + "\n".join(problems))

    # IAM ---------------------------------------------------------------------------------------

    def test_resource_star_on_an_action_role_is_reported(self) -> None:
        add_statement(self.t, "ListRecordsRole", {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})
        self.assertReported('ListRecordsRole: Resource "*" is a wildcard')

    def test_dynamodb_on_an_action_role_is_reported(self) -> None:
        add_statement(self.t, "GetRecordRole", {"Effect": "Allow", "Action": "dynamodb:GetItem",
                                                "Resource": {"Fn::GetAtt": ["CursorTable", "Arn"]}})
        self.assertReported("GetRecordRole: action function get-record must not have dynamodb:GetItem")

    def test_put_events_on_an_action_role_is_reported(self) -> None:
        self.r["UpdateRecordRole"]["Properties"]["ManagedPolicyArns"].append({"Ref": "TriggerStatePolicy"})
        self.assertReported("UpdateRecordRole: action function update-record must not have events:PutEvents")

    def test_wildcard_action_is_reported(self) -> None:
        statement = self.r["TriggerStatePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        statement["Action"] = "dynamodb:*"
        self.assertReported('wildcard or non-literal action "dynamodb:*"')

    def test_a_trigger_that_does_not_sweep_reading_ranges_is_reported(self) -> None:
        add_statement(self.t, "WhenRecordUpdatedRole", {"Effect": "Allow", "Action": "dynamodb:Query",
                                                        "Resource": {"Fn::GetAtt": ["CursorTable", "Arn"]}})
        self.assertReported("WhenRecordUpdatedRole: action dynamodb:Query is not allowed")

    def test_the_deletion_trigger_without_its_sweep_right_is_reported(self) -> None:
        policies = self.r["WhenRecordDeletedRole"]["Properties"]["Policies"]
        policies[:] = [p for p in policies if p["PolicyName"] != "membership-sweep"]
        self.assertReported("WhenRecordDeletedRole: when-record-deleted needs dynamodb:Query")

    def test_trigger_reaching_another_table_is_reported(self) -> None:
        statement = self.r["TriggerStatePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/other"}
        self.assertReported("dynamodb:UpdateItem on")
        self.assertReported("WhenRecordCreatedRole: when-record-created needs dynamodb:UpdateItem")

    def test_trigger_missing_a_cursor_right_is_reported(self) -> None:
        statement = self.r["TriggerStatePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        statement["Action"].remove("dynamodb:BatchWriteItem")
        self.assertReported("when-record-deleted needs dynamodb:BatchWriteItem")

    def test_trigger_writing_to_another_bus_is_reported(self) -> None:
        statement = self.r["TriggerStatePolicy"]["Properties"]["PolicyDocument"]["Statement"][1]
        statement["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"}
        self.assertReported("events:PutEvents on")

    def test_wider_secrets_prefix_is_reported(self) -> None:
        statement = self.r["CrmSecretsReadPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:*"}
        self.assertReported("is a wildcard; name the resource")

    def test_extra_secrets_action_is_reported(self) -> None:
        statement = self.r["CrmSecretsReadPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        statement["Action"] = ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
        self.assertReported("action secretsmanager:PutSecretValue is not allowed for this role")

    def test_logs_on_another_log_group_are_reported(self) -> None:
        statement = self.r["ListRecordsRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = {"Fn::GetAtt": ["GetRecordLogGroup", "Arn"]}
        self.assertReported("ListRecordsRole: logs:PutLogEvents on")

    def test_aws_managed_basic_execution_role_is_reported(self) -> None:
        self.r["DeleteRecordRole"]["Properties"]["ManagedPolicyArns"].append(
            {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"})
        self.assertReported("DeleteRecordRole: attaches managed policy")

    def test_separate_policy_resource_attached_to_a_role_is_seen(self) -> None:
        self.r["Sneaky"] = {"Type": "AWS::IAM::Policy", "Properties": {
            "PolicyName": "sneaky", "Roles": [{"Ref": "CreateRecordRole"}],
            "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "events:PutEvents",
                                              "Resource": {"Fn::GetAtt": ["EventBus", "Arn"]}}]}}}
        self.assertReported("CreateRecordRole: action function create-record must not have events:PutEvents")

    def test_not_action_is_reported(self) -> None:
        add_statement(self.t, "ListRecordsRole", {"Effect": "Allow", "NotAction": "iam:*",
                                                  "Resource": {"Fn::GetAtt": ["CursorTable", "Arn"]}})
        self.assertReported("ListRecordsRole: statement uses NotAction")

    def test_shared_function_role_is_reported(self) -> None:
        self.r["GetRecordFunction"]["Properties"]["Role"] = {"Fn::GetAtt": ["ListRecordsRole", "Arn"]}
        self.assertReported("GetRecordFunction: shares role ListRecordsRole")

    def test_state_machine_invoking_any_function_is_reported(self) -> None:
        statement = self.r["RecordCreatedStateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = "*"
        self.assertReported('RecordCreatedStateMachineRole: Resource "*" is a wildcard')
        self.assertReported("RecordCreatedStateMachineRole: may not lambda:InvokeFunction on")

    def test_state_machine_invoking_an_uncalled_function_is_reported(self) -> None:
        statement = self.r["ScheduledPollStateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
        statement["Resource"].append({"Fn::GetAtt": ["DeleteRecordFunction", "Arn"]})
        self.assertReported("ScheduledPollStateMachineRole: lambda:InvokeFunction on")

    def test_scheduler_role_with_extra_rights_is_reported(self) -> None:
        add_statement(self.t, "WhenRecordCreatedFunctionPollRole", {
            "Effect": "Allow", "Action": "lambda:InvokeFunction",
            "Resource": {"Fn::GetAtt": ["DeleteRecordFunction", "Arn"]}})
        self.assertReported("WhenRecordCreatedFunctionPollRole: lambda:InvokeFunction on")

    def test_dynamodb_on_the_webhook_role_is_reported(self) -> None:
        add_statement(self.t, "DataverseWebhookRole", {"Effect": "Allow", "Action": "dynamodb:*",
                                                       "Resource": {"Fn::GetAtt": ["CursorTable", "Arn"]}})
        self.assertReported("DataverseWebhookRole: webhook function dataverse-webhook must not have dynamodb:*")
        self.assertReported('DataverseWebhookRole: wildcard or non-literal action "dynamodb:*"')

    def test_a_writer_reaching_the_cursor_table_is_reported(self) -> None:
        statement = self.r["IdempotencyPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = {"Fn::GetAtt": ["CursorTable", "Arn"]}
        self.assertReported("CreateRecordRole: dynamodb:PutItem on")
        self.assertReported("CreateRecordRole: create-record needs dynamodb:PutItem")

    def test_a_writer_without_its_idempotency_store_is_reported(self) -> None:
        del self.r["DeleteRecordFunction"]["Properties"]["Environment"]["Variables"]["CRM_IDEMPOTENCY"]
        self.assertReported("DeleteRecordFunction: CRM_IDEMPOTENCY must be dynamodb:<the idempotency table>")

    def test_idempotency_rights_on_a_reader_are_reported(self) -> None:
        self.r["GetRecordRole"]["Properties"]["ManagedPolicyArns"].append({"Ref": "IdempotencyPolicy"})
        self.assertReported("GetRecordRole: action function get-record must not have dynamodb:GetItem")

    def test_reading_results_from_list_records_is_reported(self) -> None:
        add_statement(self.t, "ListRecordsRole", {"Effect": "Allow", "Action": "s3:GetObject",
                                                  "Resource": checks.RESULTS_OBJECTS})
        self.assertReported("ListRecordsRole: action s3:GetObject is not allowed for this role")

    def test_write_records_reading_outside_the_import_prefix_is_reported(self) -> None:
        statement = self.r["WriteRecordsRole"]["Properties"]["Policies"][1]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = {"Fn::Sub": "${ResultsBucket.Arn}/export-and-update/*"}
        self.assertReported("WriteRecordsRole: s3:GetObject on")
        self.assertReported("WriteRecordsRole: write-records needs s3:GetObject")

    def test_write_records_without_its_import_read_is_reported(self) -> None:
        policies = self.r["WriteRecordsRole"]["Properties"]["Policies"]
        self.r["WriteRecordsRole"]["Properties"]["Policies"] = [
            p for p in policies if p["PolicyName"] != "read-imports"]
        self.assertReported("WriteRecordsRole: write-records needs s3:GetObject")

    def test_write_records_writing_to_s3_is_reported(self) -> None:
        add_statement(self.t, "WriteRecordsRole", {"Effect": "Allow", "Action": "s3:PutObject",
                                                   "Resource": checks.IMPORT_OBJECTS})
        self.assertReported("WriteRecordsRole: action s3:PutObject is not allowed for this role")

    def test_idempotency_rights_on_write_records_are_reported(self) -> None:
        self.r["WriteRecordsRole"]["Properties"]["ManagedPolicyArns"].append({"Ref": "IdempotencyPolicy"})
        self.assertReported("WriteRecordsRole: action function write-records must not have dynamodb:GetItem")

    def test_an_import_map_beyond_the_concurrency_limit_is_reported(self) -> None:
        definition = checks.definition_of(self.t, "ImportStateMachine")
        definition["States"]["WriteEachBatch"]["MaxConcurrency"] = 100
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteEachBatch: a Distributed Map needs a MaxConcurrency")

    def _import_batch(self) -> tuple[dict[str, Any], dict[str, Any]]:
        definition = checks.definition_of(self.t, "ImportStateMachine")
        return definition, definition["States"]["WriteEachBatch"]["ItemProcessor"]["States"]

    def test_an_import_batch_that_ends_without_writing_the_rest_is_reported(self) -> None:
        definition, batch = self._import_batch()
        batch["RowsLeft"]["Default"] = "BatchDone"
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteBatch: the Choice on next_row must lead back to WriteBatch")
        del batch["WriteBatch"]["Next"]
        batch["WriteBatch"]["End"] = True
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteBatch: write-records may stop partway")

    def test_an_import_batch_that_loops_without_progress_or_loses_its_record_is_reported(self) -> None:
        definition, batch = self._import_batch()
        batch["RowsLeft"]["Choices"][1]["Next"] = "NextRound"
        batch["WriteBatch"]["Catch"] = [c for c in batch["WriteBatch"]["Catch"] if "States.ALL" not in c["ErrorEquals"]]
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteBatch: before the rule that writes the rest, the Choice must")
        self.assertReported("ImportStateMachine/WriteBatch: write-records must Catch States.ALL")
        del batch["RowsLeft"]["Choices"][1]
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteBatch: before the rule that writes the rest, the Choice must")

    def test_an_import_batch_reading_a_missing_next_row_is_reported(self) -> None:
        definition, batch = self._import_batch()
        batch["RowsLeft"]["Choices"] = [
            {"And": [{"Variable": "$.round.answer.next_row", "IsPresent": True},
                     {"Variable": "$.round.answer.next_row", "NumericEqualsPath": "$.start_row"}],
             "Next": "NoProgress"}] + batch["RowsLeft"]["Choices"]
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteBatch: the Choice must read next_row only after its rule on "
                            "next_row IsPresent false, and never inside And")
        del batch["RowsLeft"]["Choices"][1]
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteBatch: write-records may stop partway")

    def test_an_import_batch_claiming_nothing_written_after_any_error_is_reported(self) -> None:
        definition, batch = self._import_batch()
        batch["RoundFailed"]["Default"] = "WroteNothing"
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteBatch: a caught error must go to a Choice that sends Crm.*")

    def test_an_import_map_aborting_batches_midway_is_reported(self) -> None:
        definition = checks.definition_of(self.t, "ImportStateMachine")
        definition["States"]["WriteEachBatch"]["ToleratedFailurePercentage"] = 0
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteEachBatch: ToleratedFailurePercentage must be 100")

    def test_an_import_that_succeeds_whatever_its_batches_did_is_reported(self) -> None:
        definition = checks.definition_of(self.t, "ImportStateMachine")
        definition["States"]["WriteEachBatch"]["Next"] = "Imported"
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteEachBatch: its Next must read its own Map Run's counts")
        definition = checks.definition_of(self.t, "ImportStateMachine")
        definition["States"]["AllBatchesSucceeded"]["Default"] = "Imported"
        set_definition(self.t, "ImportStateMachine", definition)
        self.assertReported("ImportStateMachine/WriteEachBatch: its Next must read its own Map Run's counts")

    def test_an_import_workflow_without_its_map_run_right_is_reported(self) -> None:
        policies = self.r["ImportStateMachineRole"]["Properties"]["Policies"]
        self.r["ImportStateMachineRole"]["Properties"]["Policies"] = [
            p for p in policies if p["PolicyName"] != "own-map-runs"]
        self.assertReported("ImportStateMachineRole: may not states:DescribeMapRun on")

    def test_an_import_workflow_describing_other_map_runs_is_reported(self) -> None:
        policy = next(p for p in self.r["ImportStateMachineRole"]["Properties"]["Policies"]
                      if p["PolicyName"] == "own-map-runs")
        statement = policy["PolicyDocument"]["Statement"][0]
        for resource, problem in (
                ("arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:mapRun:*", "is a wildcard"),
                ("arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:mapRun:${AWS::StackName}-export-and-update/UpdateEachRow:*",
                 "states:DescribeMapRun on")):
            statement["Resource"] = {"Fn::Sub": resource}
            self.assertReported(problem)
            self.assertReported("ImportStateMachineRole: may not states:DescribeMapRun on")
        statement["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:mapRun:${AWS::StackName}-import/WriteEachBatch:*"}
        statement["Action"] = ["states:DescribeMapRun", "states:UpdateMapRun"]
        self.assertReported("ImportStateMachineRole: action states:UpdateMapRun is not allowed for this role")

    def test_a_map_run_right_on_a_workflow_that_does_not_describe_it_is_reported(self) -> None:
        add_statement(self.t, "ExportAndUpdateStateMachineRole", {
            "Effect": "Allow", "Action": "states:DescribeMapRun",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:mapRun:"
                                    "${AWS::StackName}-export-and-update/UpdateEachRow:*"}})
        self.assertReported("ExportAndUpdateStateMachineRole: action states:DescribeMapRun is not allowed")

    def test_an_import_workflow_reading_another_prefix_is_reported(self) -> None:
        policy = next(p for p in self.r["ImportStateMachineRole"]["Properties"]["Policies"]
                      if p["PolicyName"] == "own-results")
        policy["PolicyDocument"]["Statement"][0]["Resource"] = {"Fn::Sub": "${ResultsBucket.Arn}/export-and-update/*"}
        self.assertReported("ImportStateMachineRole: s3:GetObject on")

    def test_writing_results_to_another_bucket_is_reported(self) -> None:
        statement = self.r["ListRecordsRole"]["Properties"]["Policies"][1]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = "arn:aws:s3:::someone-elses-bucket/*"
        self.assertReported("is a wildcard; name the resource")
        self.assertReported("ListRecordsRole: list-records needs s3:PutObject")

    def test_an_open_results_bucket_is_reported(self) -> None:
        self.r["ResultsBucket"]["Properties"]["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] = False
        del self.r["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"][0]
        self.assertReported("ResultsBucket: PublicAccessBlockConfiguration.RestrictPublicBuckets must be true")
        self.assertReported("ResultsBucket: a lifecycle rule must abort unfinished multipart uploads")

    def test_a_results_bucket_without_tls_only_is_reported(self) -> None:
        del self.r["ResultsBucketPolicy"]
        self.assertReported("ResultsBucket: a bucket policy must deny requests without TLS")

    def test_a_distributed_map_without_its_child_executions_is_reported(self) -> None:
        policies = self.r["ExportAndUpdateStateMachineRole"]["Properties"]["Policies"]
        self.r["ExportAndUpdateStateMachineRole"]["Properties"]["Policies"] = [
            p for p in policies if p["PolicyName"] != "child-executions"]
        self.assertReported("ExportAndUpdateStateMachineRole: may not states:StartExecution on")

    def test_a_distributed_map_reading_another_prefix_is_reported(self) -> None:
        policy = next(p for p in self.r["ExportAndUpdateStateMachineRole"]["Properties"]["Policies"]
                      if p["PolicyName"] == "own-results")
        policy["PolicyDocument"]["Statement"][0]["Resource"] = {"Fn::Sub": "${ResultsBucket.Arn}/sync-by-key/*"}
        self.assertReported("ExportAndUpdateStateMachineRole: s3:GetObject on")

    def test_an_unbounded_distributed_map_is_reported(self) -> None:
        definition = checks.definition_of(self.t, "ExportAndUpdateStateMachine")
        del definition["States"]["UpdateEachRow"]["MaxConcurrency"]
        set_definition(self.t, "ExportAndUpdateStateMachine", definition)
        self.assertReported("ExportAndUpdateStateMachine/UpdateEachRow: a Distributed Map needs a MaxConcurrency")

    # Alarms ------------------------------------------------------------------------------------

    def test_an_unwatched_dead_letter_queue_is_reported(self) -> None:
        del self.r["ScheduleDeadLetterAlarm"]
        self.assertReported("ScheduleDeadLetterQueue: a dead-letter queue needs an alarm")

    def test_a_lag_alarm_on_the_wrong_function_is_reported(self) -> None:
        dimension = self.r["WhenRecordDeletedLagAlarm"]["Properties"]["Dimensions"][0]
        dimension["Value"] = {"Ref": "WhenRecordUpdatedFunction"}
        self.assertReported("WhenRecordDeletedFunction: a trigger needs an alarm on its Lag metric")

    def test_alarms_in_another_namespace_are_reported(self) -> None:
        self.r["ThrottlesAlarm"]["Properties"]["Namespace"] = "DynamicsCrm"
        self.assertReported("no alarm on Throttles")

    def test_a_function_writing_metrics_elsewhere_is_reported(self) -> None:
        self.r["GetRecordFunction"]["Properties"]["Environment"]["Variables"]["CRM_METRICS_NAMESPACE"] = "Other"
        self.assertReported("every function needs the same CRM_METRICS_NAMESPACE")

    def test_an_unwatched_error_type_is_reported(self) -> None:
        metrics = self.r["ServiceErrorsAlarm"]["Properties"]["Metrics"]
        self.r["ServiceErrorsAlarm"]["Properties"]["Metrics"] = [m for m in metrics if m["Id"] != "throttled"]
        self.assertReported("no alarm on Errors of type Crm.Throttled")

    def test_an_alarm_missing_from_the_dashboard_is_reported(self) -> None:
        body = self.r["Dashboard"]["Properties"]["DashboardBody"]
        self.r["Dashboard"]["Properties"]["DashboardBody"] = json.loads(
            json.dumps(body).replace("${ThrottlesAlarm.Arn}", "${SetupErrorsAlarm.Arn}"))
        self.assertReported("Dashboard: does not show ThrottlesAlarm")

    def test_alarm_notifications_elsewhere_are_reported(self) -> None:
        self.r["SetupErrorsAlarm"]["Properties"]["AlarmActions"] = ["arn:aws:sns:us-east-1:123456789012:other"]
        self.assertReported("SetupErrorsAlarm: AlarmActions must be the AlarmTopicArn parameter")

    def test_cursor_rights_on_the_webhook_role_are_reported(self) -> None:
        self.r["DataverseWebhookRole"]["Properties"]["ManagedPolicyArns"].append({"Ref": "TriggerStatePolicy"})
        self.assertReported("DataverseWebhookRole: webhook function dataverse-webhook must not have dynamodb:UpdateItem")

    def test_webhook_writing_to_another_bus_is_reported(self) -> None:
        statement = self.r["DataverseWebhookRole"]["Properties"]["Policies"][1]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"}
        self.assertReported("DataverseWebhookRole: events:PutEvents on")
        self.assertReported("DataverseWebhookRole: dataverse-webhook needs events:PutEvents")

    def test_webhook_without_put_events_is_reported(self) -> None:
        del self.r["DataverseWebhookRole"]["Properties"]["Policies"][1]
        self.assertReported("DataverseWebhookRole: dataverse-webhook needs events:PutEvents")

    def test_secret_read_outside_the_shared_policy_is_reported(self) -> None:
        add_statement(self.t, "DataverseWebhookRole", {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                                                       "Resource": checks.SECRETS_RESOURCE})
        self.assertReported("DataverseWebhookRole: secretsmanager:GetSecretValue in inline policy mutation")

    def test_role_without_the_shared_secrets_policy_is_reported(self) -> None:
        self.r["DataverseWebhookRole"]["Properties"]["ManagedPolicyArns"] = []
        self.assertReported("DataverseWebhookRole: must attach CrmSecretsReadPolicy")
        self.assertReported("DataverseWebhookRole: dataverse-webhook needs secretsmanager:GetSecretValue")

    def test_webhook_logs_on_another_log_group_are_reported(self) -> None:
        statement = self.r["DataverseWebhookRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = {"Fn::GetAtt": ["WhenRecordCreatedLogGroup", "Arn"]}
        self.assertReported("DataverseWebhookRole: logs:PutLogEvents on")

    def test_function_role_assumable_by_another_service_is_reported(self) -> None:
        trust = self.r["ListRecordsRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
        trust["Principal"] = {"Service": ["lambda.amazonaws.com", "ec2.amazonaws.com"]}
        self.assertReported("ListRecordsRole: may be assumed by")

    # Functions ---------------------------------------------------------------------------------

    def test_bad_runtime_is_reported(self) -> None:
        self.r["GetRecordFunction"]["Properties"]["Runtime"] = "provided.al2099"
        self.assertReported('GetRecordFunction: Runtime must be provided.al2023, got "provided.al2099"')

    def test_bad_architecture_is_reported(self) -> None:
        self.r["WhenRecordDeletedFunction"]["Properties"]["Architectures"] = ["arm65"]
        self.assertReported("WhenRecordDeletedFunction: Architectures must be")

    def test_missing_memory_size_is_reported(self) -> None:
        del self.r["CreateRecordFunction"]["Properties"]["MemorySize"]
        self.assertReported("CreateRecordFunction: MemorySize must be set explicitly")

    def test_missing_timeout_is_reported(self) -> None:
        del self.r["CreateRecordFunction"]["Properties"]["Timeout"]
        self.assertReported("CreateRecordFunction: Timeout must be set explicitly")

    def test_hard_coded_trigger_timeout_is_reported(self) -> None:
        self.r["WhenRecordUpdatedFunction"]["Properties"]["Timeout"] = 120
        self.assertReported("WhenRecordUpdatedFunction: a trigger's Timeout must come from a Number parameter")

    def test_text_logs_are_reported(self) -> None:
        self.r["ListRecordsFunction"]["Properties"]["LoggingConfig"]["LogFormat"] = "Text"
        self.assertReported("ListRecordsFunction: LoggingConfig.LogFormat must be JSON")

    def test_log_group_without_retention_is_reported(self) -> None:
        del self.r["UpdateRecordLogGroup"]["Properties"]["RetentionInDays"]
        self.assertReported("UpdateRecordLogGroup: log group of UpdateRecordFunction needs RetentionInDays")

    def test_function_without_its_own_log_group_is_reported(self) -> None:
        del self.r["GetRecordFunction"]["Properties"]["LoggingConfig"]["LogGroup"]
        self.assertReported("GetRecordFunction: LoggingConfig.LogGroup must reference")

    def test_trigger_env_without_state_is_reported(self) -> None:
        del self.r["WhenRecordCreatedFunction"]["Properties"]["Environment"]["Variables"]["CRM_STATE"]
        self.assertReported("WhenRecordCreatedFunction: CRM_STATE must be")

    def test_action_env_with_events_is_reported(self) -> None:
        self.r["CreateRecordFunction"]["Properties"]["Environment"]["Variables"]["CRM_EVENTS"] = "none"
        self.assertReported("CreateRecordFunction: an action must not have CRM_EVENTS")

    def test_webhook_env_with_a_cursor_store_is_reported(self) -> None:
        self.r["DataverseWebhookFunction"]["Properties"]["Environment"]["Variables"]["CRM_STATE"] = {
            "Fn::Sub": "dynamodb:${CursorTable}"}
        self.assertReported("DataverseWebhookFunction: a webhook receiver keeps no cursor")

    def test_webhook_env_without_the_bus_is_reported(self) -> None:
        del self.r["DataverseWebhookFunction"]["Properties"]["Environment"]["Variables"]["CRM_EVENTS"]
        self.assertReported("DataverseWebhookFunction: CRM_EVENTS must be eventbridge:<the event bus>")

    def test_webhook_timeout_at_dataverse_limit_is_reported(self) -> None:
        self.r["DataverseWebhookFunction"]["Properties"]["Timeout"] = 60
        self.assertReported("DataverseWebhookFunction: a webhook receiver's Timeout must be at most")

    # Function URL ------------------------------------------------------------------------------

    def test_iam_auth_on_the_webhook_url_is_reported(self) -> None:
        self.r["DataverseWebhookFunctionUrl"]["Properties"]["AuthType"] = "AWS_IAM"
        self.assertReported("DataverseWebhookFunctionUrl: AuthType must be NONE")

    def test_missing_webhook_url_is_reported(self) -> None:
        del self.r["DataverseWebhookFunctionUrl"]
        self.assertReported("DataverseWebhookFunction: expected exactly one Function URL")

    def test_function_url_on_another_function_is_reported(self) -> None:
        self.r["ListRecordsFunctionUrl"] = {"Type": "AWS::Lambda::Url", "Properties": {
            "TargetFunctionArn": {"Ref": "ListRecordsFunction"}, "AuthType": "AWS_IAM"}}
        self.assertReported("ListRecordsFunctionUrl: only the webhook receiver may have a Function URL")

    def test_public_invoke_not_limited_to_the_url_is_reported(self) -> None:
        del self.r["DataverseWebhookFunctionURLInvokeAllowPublicAccess"]["Properties"]["InvokedViaFunctionUrl"]
        self.assertReported("DataverseWebhookFunctionURLInvokeAllowPublicAccess: lambda:InvokeFunction for any "
                            "principal needs InvokedViaFunctionUrl")
        self.assertReported("DataverseWebhookFunction: its public URL needs the permission lambda:InvokeFunction")

    def test_missing_url_permission_is_reported(self) -> None:
        del self.r["DataverseWebhookFunctionUrlPublicPermissions"]
        self.assertReported("DataverseWebhookFunction: its public URL needs the permission lambda:InvokeFunctionUrl")

    def test_public_permission_on_another_function_is_reported(self) -> None:
        permission = copy.deepcopy(self.r["DataverseWebhookFunctionURLInvokeAllowPublicAccess"])
        permission["Properties"]["FunctionName"] = {"Ref": "DeleteRecordFunction"}
        self.r["DeleteRecordPublic"] = permission
        self.assertReported("DeleteRecordPublic: lambda:InvokeFunction for any principal on DeleteRecordFunction")

    def test_cors_on_the_webhook_url_is_reported(self) -> None:
        self.r["DataverseWebhookFunctionUrl"]["Properties"]["Cors"] = {"AllowOrigins": ["*"]}
        self.assertReported("DataverseWebhookFunctionUrl: no Cors")

    def test_missing_webhook_url_output_is_reported(self) -> None:
        del self.t["Outputs"]["WebhookUrl"]
        self.assertReported("Outputs.WebhookUrl must be !GetAtt DataverseWebhookFunctionUrl.FunctionUrl")

    def test_unchecked_new_function_is_reported(self) -> None:
        self.r["BackfillFunction"] = copy.deepcopy(self.r["ListRecordsFunction"])
        self.assertReported("unexpected function BackfillFunction")

    # Schedules ---------------------------------------------------------------------------------

    def test_schedule_without_dead_letter_queue_is_reported(self) -> None:
        del self.r["WhenRecordCreatedFunctionPoll"]["Properties"]["Target"]["DeadLetterConfig"]
        self.assertReported("WhenRecordCreatedFunctionPoll: Target.DeadLetterConfig must name an SQS queue")

    def test_schedule_without_retry_policy_is_reported(self) -> None:
        del self.r["WhenRecordUpdatedFunctionPoll"]["Properties"]["Target"]["RetryPolicy"]
        self.assertReported("WhenRecordUpdatedFunctionPoll: Target.RetryPolicy needs")

    def test_bad_rate_expression_default_is_reported(self) -> None:
        self.t["Parameters"]["PollRate"]["Default"] = "rate(5 minutez)"
        self.assertReported('invalid schedule expression "rate(5 minutez)"')

    def test_literal_bad_rate_expression_is_reported(self) -> None:
        self.r["ScheduledPollStateMachineSchedule"]["Properties"]["ScheduleExpression"] = "rate(1 minutes)"
        self.assertReported('ScheduledPollStateMachineSchedule: invalid schedule expression "rate(1 minutes)"')

    def test_loose_rate_pattern_is_reported(self) -> None:
        self.t["Parameters"]["PollRate"]["AllowedPattern"] = "^rate\\(.+\\)$"
        self.assertReported("parameter PollRate accepts the invalid expression rate(5 minutez)")

    def test_invalid_json_input_is_reported(self) -> None:
        target = self.r["WhenRecordDeletedFunctionPoll"]["Properties"]["Target"]
        target["Input"] = {"Fn::Sub": '{"dataset": "${Dataset}", "table": "${DeletedTable}"'}
        self.assertReported("WhenRecordDeletedFunctionPoll: Target.Input is not valid JSON")

    def test_input_without_table_is_reported(self) -> None:
        target = self.r["WhenRecordCreatedFunctionPoll"]["Properties"]["Target"]
        target["Input"] = {"Fn::Sub": '{"dataset": "${Dataset}"}'}
        self.assertReported("WhenRecordCreatedFunctionPoll: Input needs a string table")

    def test_select_on_the_deleted_trigger_is_reported(self) -> None:
        target = self.r["WhenRecordDeletedFunctionPoll"]["Properties"]["Target"]
        target["Input"] = {"Fn::Sub": '{"dataset": "${Dataset}", "table": "${DeletedTable}", "$select": ""}'}
        self.assertReported("when-record-deleted does not accept ['$select']")

    def test_unescaped_parameter_in_input_is_reported(self) -> None:
        del self.t["Parameters"]["CreatedFilter"]["AllowedPattern"]
        self.assertReported("parameter CreatedFilter is substituted into the JSON Input")

    def test_trigger_without_schedule_is_reported(self) -> None:
        del self.r["WhenRecordUpdatedFunctionPoll"]
        self.assertReported("WhenRecordUpdatedFunction: expected exactly one schedule")

    # State machines ----------------------------------------------------------------------------

    def _edit_tasks(self, sm_id: str, edit) -> None:
        definition = checks.definition_of(self.t, sm_id)
        for _, state in checks.walk_states(definition["States"]):
            if state.get("Type") == "Task":
                edit(state)
        set_definition(self.t, sm_id, definition)

    def test_missing_throttled_retry_is_reported(self) -> None:
        def drop(state):
            state["Retry"] = [r for r in state["Retry"] if "Crm.Throttled" not in r["ErrorEquals"]]
        self._edit_tasks("RecordCreatedStateMachine", drop)
        self.assertReported("RecordCreatedStateMachine/GetRecord: Retry must cover Crm.Throttled")

    def test_server_error_retry_without_backoff_is_reported(self) -> None:
        def flatten(state):
            for retrier in state["Retry"]:
                if "Crm.ServerError" in retrier["ErrorEquals"]:
                    retrier["BackoffRate"] = 1.0
        self._edit_tasks("ScheduledPollStateMachine", flatten)
        self.assertReported("ScheduledPollStateMachine/ForEachRow/StampRow: Crm.ServerError must be retried with backoff")

    def test_missing_lambda_service_retry_is_reported(self) -> None:
        def drop(state):
            state["Retry"] = [r for r in state["Retry"] if "Lambda.ServiceException" not in r["ErrorEquals"]]
        self._edit_tasks("ScheduledPollStateMachine", drop)
        self.assertReported("ScheduledPollStateMachine/PollChangedRows: Retry must cover the Lambda service errors")

    def test_missing_not_found_catch_is_reported(self) -> None:
        def drop(state):
            state["Catch"] = [c for c in state.get("Catch", []) if "Crm.NotFound" not in c["ErrorEquals"]]
        self._edit_tasks("RecordCreatedStateMachine", drop)
        self.assertReported("RecordCreatedStateMachine/UpdateRecord: a task on one row must Catch Crm.NotFound")
        self.assertReported("RecordCreatedStateMachine: no state catches Crm.NotFound")

    def test_hard_coded_function_name_is_reported(self) -> None:
        def hard_code(state):
            state["Parameters"]["FunctionName"] = "arn:aws:lambda:us-east-1:123456789012:function:other"
        self._edit_tasks("RecordCreatedStateMachine", hard_code)
        self.assertReported("RecordCreatedStateMachine/GetRecord: FunctionName must be a DefinitionSubstitutions entry")

    def test_undocumented_key_in_a_workflows_trigger_payload_is_reported(self) -> None:
        definition = checks.definition_of(self.t, "ScheduledPollStateMachine")
        definition["States"]["PollChangedRows"]["Parameters"]["Payload"]["$expand.$"] = "$.expand"
        set_definition(self.t, "ScheduledPollStateMachine", definition)
        self.assertReported("ScheduledPollStateMachine/PollChangedRows: when-record-updated does not accept ['$expand']")

    def test_state_machine_role_missing_a_called_function_is_reported(self) -> None:
        statement = self.r["ScheduledPollStateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
        statement["Resource"] = [{"Fn::GetAtt": ["UpdateRecordFunction", "Arn"]}]
        self.assertReported("ScheduledPollStateMachineRole: may not lambda:InvokeFunction on")

    # Data stores -------------------------------------------------------------------------------

    def test_provisioned_cursor_table_is_reported(self) -> None:
        self.r["CursorTable"]["Properties"]["BillingMode"] = "PROVISIONED"
        self.assertReported("CursorTable: BillingMode must be PAY_PER_REQUEST")

    def test_cursor_table_without_pitr_or_ttl_is_reported(self) -> None:
        del self.r["CursorTable"]["Properties"]["PointInTimeRecoverySpecification"]
        self.r["CursorTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"] = "ttl"
        self.assertReported("CursorTable: point-in-time recovery must be on")
        self.assertReported("CursorTable: TTL must be enabled on expires_at")

    def test_queue_policy_without_source_arn_is_reported(self) -> None:
        statement = self.r["WorkflowDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        del statement["Condition"]
        self.assertReported("WorkflowDeadLetterQueuePolicy: queue policy statement without an aws:SourceArn")


if __name__ == "__main__":
    unittest.main()
