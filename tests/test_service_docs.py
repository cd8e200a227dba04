"""The grpcurl walkthrough in docs/service.md works: every call in it, in order, against a real
server (bodies parsed as grpcurl would, ids carried from one reply to the next)."""

import re
from pathlib import Path

import grpc
from google.protobuf import json_format

from server.client import Client, error_code
from server.testing import running_server

DOC = Path(__file__).resolve().parent.parent / "docs" / "service.md"
CALL = re.compile(
    r"""grpcurl -plaintext -H "\$(?P<who>OWNER|INGEST)" -d '(?P<body>.*?)' \\?\s*localhost:50051 """
    r"""conversion_matcher\.v1\.(?P<service>\w+)/(?P<method>\w+)""",
    re.S,
)
STUBS = {"PixelService": "pixels", "CustomConversionService": "custom_conversions", "ClassificationService": "classification"}


def walkthrough_calls():
    text = DOC.read_text()
    section = text[text.index("## Walkthrough with grpcurl"):]
    return [m.groupdict() for m in CALL.finditer(section)]


def test_the_walkthrough_runs(tmp_path):
    calls = walkthrough_calls()
    assert [c["method"] for c in calls] == [
        "CreatePixel", "CreateCustomConversion", "ClassifyPixelEvents", "GetCustomConversionStats", "GetPixel",
        "CreateCustomConversion",
    ]
    ids = {}
    rejected = []
    with running_server(tmp_path / "matcher.db") as (_, target):
        clients = {"OWNER": Client(target, "owner-token"), "INGEST": Client(target, "ingest-token")}
        try:
            for call in calls:
                # A shell '...'$VAR'...' splice: the variable's value inside the JSON text.
                body = re.sub(r"'\$(\w+)'", lambda m: ids[m.group(1)], call["body"])
                client = clients[call["who"]]
                method = getattr(getattr(client, STUBS[call["service"]]), call["method"])
                request = json_format.Parse(body, _request_class(call["service"], call["method"])())
                try:
                    reply = client.call(method, request)
                except grpc.RpcError as error:
                    # The walkthrough's last call shows an error on purpose.
                    assert error_code(error) == 100 and "rule.value" in error.details()
                    rejected.append(call)
                    continue
                if call["method"] == "CreatePixel":
                    ids["PIXEL"] = reply.id
                elif call["method"] == "CreateCustomConversion":
                    ids["CC"] = reply.id
                    assert reply.is_custom_event_type_predicted and reply.custom_conversion.custom_event_type == "PURCHASE"
                elif call["method"] == "ClassifyPixelEvents":
                    assert list(reply.conversion_counts) == [1, 0] and list(reply.conversion_values) == [150]
                elif call["method"] == "GetCustomConversionStats":
                    assert [row.value for row in reply.rows] == [1]
                elif call["method"] == "GetPixel":
                    assert reply.status == "ACTIVE"
        finally:
            for client in clients.values():
                client.close()
    assert rejected == [calls[-1]]


def _request_class(service: str, method: str):
    from server.gen.conversion_matcher.v1 import classification_pb2, custom_conversions_pb2, pixels_pb2

    for module in (pixels_pb2, custom_conversions_pb2, classification_pb2):
        descriptor = module.DESCRIPTOR.services_by_name.get(service)
        if descriptor is not None:
            return getattr(module, descriptor.methods_by_name[method].input_type.name)
    raise LookupError(f"{service}/{method}")


def test_the_python_example_runs(tmp_path, capsys):
    text = DOC.read_text()
    start = text.index("```python", text.index("The same from Python"))
    code = text[start + len("```python"): text.index("```", start + 3)]
    with running_server(tmp_path / "matcher.db") as (_, target):
        exec(compile(code.replace("127.0.0.1:50051", target), str(DOC), "exec"), {})
    printed = capsys.readouterr().out
    assert "ConversionMatch(" in printed and "value=150.0" in printed
    assert "timestamp:" in printed and "value: 1" in printed
