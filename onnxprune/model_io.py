"""Loading and saving ONNX models safely: clear errors for bad files, atomic writes, external data.

Every problem with the user's file is an `InputError` (a ValueError) whose message is one sentence
naming the file and what to do; the CLI turns it into exit code 2. Writes go to a temporary file
in the destination folder and are renamed into place, so a failed run never leaves a partial
model, and the input model is never written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, external_data_helper

__all__ = ["MIN_OPSET", "InputError", "check_model", "estimated_byte_size", "load_model", "save_model", "shape_skeleton"]

# The oldest default-domain opset onnxruntime runs; older models must be converted first.
MIN_OPSET = 7
# Protobuf cannot serialise a message of 2 GiB or more: larger models keep tensors in a side file.
PROTOBUF_LIMIT = 2**31 - 1


class InputError(ValueError):
    """Bad input from the user (file, argument, data): reported in one sentence, exit code 2."""


def load_model(model: str | os.PathLike | onnx.ModelProto, *, check: bool = True) -> onnx.ModelProto:
    """The model at `model` (or the given proto), with external data loaded and, if `check`,
    validated by `onnx.checker` (full check). Raises InputError for anything wrong with the file."""
    if isinstance(model, onnx.ModelProto):
        if check:
            _check(model, "the given model")
        return model
    path = Path(model)
    if not path.is_file():
        raise InputError(f"{path}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as err:
        raise InputError(f"{path}: not a readable ONNX model ({_first_line(err)})") from err
    if not proto.HasField("graph") or proto.ir_version == 0:
        raise InputError(f"{path}: not an ONNX model (no graph or IR version in the file)")
    _load_external_data(proto, path)
    _check_opset(proto, path)
    if check:
        _check(proto, str(path))
    return proto


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    input_path: str | os.PathLike | None = None,
    external_data_threshold: int = PROTOBUF_LIMIT,
) -> Path:
    """Write `model` to `path` atomically and return the path. Models of `external_data_threshold`
    bytes or more (by default those protobuf cannot hold) keep their tensors in `<name>.data` beside
    the model. Refuses to overwrite `input_path`; the caller's proto is not modified."""
    out = Path(path)
    if input_path is not None and _same_file(out, Path(input_path)):
        raise InputError(f"{out}: the output path is the input model; choose another output path")
    if not out.parent.is_dir():
        raise InputError(f"{out}: the output folder {out.parent} does not exist")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give a file name for the output model")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / out.name
        if estimated_byte_size(model) >= external_data_threshold:
            data_name = f"{out.name}.data"
            try:
                onnx.save_model(
                    model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=0,
                )  # fmt: skip
            finally:
                # Saving moved the tensors' data out of the caller's proto: read it back.
                if any(external_data_helper.uses_external_data(t) for t in _all_tensors(model.graph)):
                    external_data_helper.load_external_data_for_model(model, tmp)
            os.replace(staged.with_name(data_name), out.with_name(data_name))
        else:
            with open(staged, "wb") as f:
                f.write(model.SerializeToString())
        os.replace(staged, out)
    return out


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    folder = path.parent.resolve()
    for tensor in _all_tensors(proto.graph):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = external_data_helper.ExternalDataInfo(tensor).location
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            raise InputError(
                f"{path}: tensor {tensor.name!r} keeps its data at {location!r}, outside the model's "
                "folder; refusing to read it (move the data file next to the model)"
            )
        if not target.is_file():
            raise InputError(f"{path}: tensor {tensor.name!r} needs the external data file {location!r}, "
                             "which is missing")  # fmt: skip
    try:
        external_data_helper.load_external_data_for_model(proto, str(folder))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read its external data ({_first_line(err)})") from err


def _all_tensors(graph: onnx.GraphProto):
    """Every TensorProto of the graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def _check_opset(proto: onnx.ModelProto, path: Path) -> None:
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < MIN_OPSET:
            raise InputError(
                f"{path}: opset {opset.version} is too old for onnxruntime (it needs {MIN_OPSET} or newer); "
                "convert the model first, e.g. with onnx.version_converter.convert_version(model, 13)"
            )


def _check(proto: onnx.ModelProto, name: str) -> None:
    """`onnx.checker` full check of the graph. It runs on the shape skeleton: the checker
    serialises the model it checks, and copying every weight (gigabytes for VGG16-size models)
    would cost more than the rest of a prune; the weights' types and shapes are still checked."""
    try:
        onnx.checker.check_model(shape_skeleton(proto), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise InputError(f"{name}: invalid ONNX model ({_first_line(err)})") from err


def check_model(proto: onnx.ModelProto) -> None:
    """Full check of a model this package made (a failure is a bug: AssertionError)."""
    try:
        onnx.checker.check_model(shape_skeleton(proto), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise AssertionError(f"onnxprune produced an invalid model: {err}") from err


def estimated_byte_size(model: onnx.ModelProto) -> int:
    """Serialized size, estimated from the tensors (protobuf cannot size a message over 2 GiB)
    plus a margin for everything else (reading raw_data or ByteSize() would copy the data)."""
    total = 16 << 20
    for t in _all_tensors(model.graph):
        if t.data_type == TensorProto.STRING:
            total += sum(len(x) for x in t.string_data)
        else:
            total += int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def shape_skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `proto` whose large float initializers are graph inputs of the same type and
    shape: shape inference reads only their dims, and copying 500 MB of weights costs seconds."""
    skeleton = onnx.ModelProto(
        ir_version=proto.ir_version, opset_import=proto.opset_import, functions=proto.functions
    )
    g, src = skeleton.graph, proto.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    inputs = {i.name for i in src.input}
    for t in src.initializer:
        if t.data_type in FLOAT_TYPES and _elements(t) > 1024:
            if t.name not in inputs:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    return skeleton


FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def _elements(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64))
