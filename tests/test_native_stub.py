"""The hand-written stub onnxprune/_native.pyi must describe the compiled module exactly."""

import ast
import re
from importlib import resources

import pytest

from onnxprune import _native


def _stub_functions() -> tuple[dict[str, list[tuple[str, str | None]]], set[str]]:
    tree = ast.parse(resources.files("onnxprune").joinpath("_native.pyi").read_text())
    functions, attributes = {}, set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args.args
            defaults = [None] * (len(args) - len(node.args.defaults)) + [
                ast.unparse(d) for d in node.args.defaults
            ]
            functions[node.name] = [(a.arg, d) for a, d in zip(args, defaults, strict=True)]
        elif isinstance(node, ast.AnnAssign):
            attributes.add(node.target.id)
    return functions, attributes


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def _module_signature(name: str) -> list[tuple[str, str | None]]:
    first_line = getattr(_native, name).__doc__.splitlines()[0]
    params = re.fullmatch(rf"{name}\((.*)\) -> .*", first_line).group(1)
    result = []
    for part in _split_top_level(params):
        arg = part.split(":")[0].strip()
        default = part.split(" = ")[1].strip() if " = " in part else None
        result.append((arg, default))
    return result


def test_stub_names_match_module():
    functions, attributes = _stub_functions()
    public = {n for n in dir(_native) if not n.startswith("_")}
    assert set(functions) | attributes == public


@pytest.mark.parametrize("name", sorted(_stub_functions()[0]))
def test_stub_signature_matches_module(name):
    assert _stub_functions()[0][name] == _module_signature(name)
