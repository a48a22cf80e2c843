"""serve/oip_proto.py's shipped descriptor is inference.proto compiled (regenerate it as its
docstring says when this fails), and its messages live apart from tritonclient's copy of package
`inference` in the same process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorProto, FileDescriptorSet

from splip_engine.serve import oip_proto

REPO = Path(__file__).resolve().parents[2]


def test_shipped_descriptor_is_the_compiled_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    out = tmp_path / "oip.pb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--descriptor_set_out={out}",
                    "splip_engine/serve/inference.proto"], cwd=REPO, check=True)
    compiled = FileDescriptorSet.FromString(out.read_bytes()).file[0]
    assert FileDescriptorProto.FromString(oip_proto.DESCRIPTOR) == compiled


def test_messages_coexist_with_tritonclient_and_share_its_wire_format():
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    ours = oip_proto.message("ModelInferRequest")(model_name="splip", raw_input_contents=[b"\1\2"])
    ours.parameters["k"].int64_param = 7
    ours.inputs.add(name="image", datatype="BYTES", shape=[1])
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.model_name == "splip" and theirs.parameters["k"].int64_param == 7
    assert list(theirs.inputs[0].shape) == [1] and theirs.raw_input_contents == [b"\1\2"]
    assert set(oip_proto.METHODS) <= {m.name for m in service_pb2.DESCRIPTOR.services_by_name[
        "GRPCInferenceService"].methods}
