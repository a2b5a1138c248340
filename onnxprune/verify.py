"""Prune's postcondition: the pruned model computes what the input model computes.

Both models run in onnxruntime on the same seeded random probe inputs and every graph output is
compared, as the largest absolute difference relative to the output's largest magnitude. Outputs
that pass through a discontinuous op (NonMaxSuppression, TopK, ArgMax, comparisons, rounding)
are not compared, since float rounding may flip them; the float tensors those ops read are
compared instead. When the surgery called every removal exact or an exact fold, a deviation
beyond `tolerance` is a bug of onnxprune: `VerificationError` names the worst output and the
first node (in graph order) whose output deviates while its inputs do not, so a bad fold is
named where it happens.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from onnxprune.model_io import estimated_byte_size, shape_skeleton

__all__ = ["DISCONTINUOUS_OPS", "TOLERANCE", "ProbeReference", "Verification", "VerificationError", "probe_reference", "probe_reference_async",
           "verify_pruned"]

TOLERANCE = 1e-4  # relative to each compared tensor's largest magnitude; float32 sums differ ~1e-7
PROBES = 2
SPATIAL_FILL = 224  # size given to a dynamic spatial dimension (a multiple of 32, as detectors want)

DISCONTINUOUS_OPS = frozenset({
    "NonMaxSuppression", "TopK", "ArgMax", "ArgMin", "Round", "Floor", "Ceil", "Sign", "Mod",
    "Less", "Greater", "Equal", "LessOrEqual", "GreaterOrEqual", "Unique", "NonZero",
})  # fmt: skip


class VerificationError(RuntimeError):
    """The pruned model computes something else than the input model although every removal was
    called exact: an internal error of onnxprune, never the user's."""


@dataclass
class Verification:
    """What `verify_pruned` measured. status: "passed" (within tolerance), "deviates" (beyond it,
    as expected where some removals are approximate or border folds) or "skipped" (`reason`)."""

    status: str
    probes: int = 0
    tolerance: float = TOLERANCE
    max_deviation: float | None = None  # over the compared tensors, relative to their magnitude
    worst_output: str | None = None
    outputs: dict[str, float] = field(default_factory=dict)  # compared tensor -> relative deviation
    not_compared: list[str] = field(default_factory=list)  # outputs behind a discontinuous op
    reason: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _session(model: onnx.ModelProto | bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures are raised and reported, not logged
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
          "tensor(bool)": np.bool_}  # fmt: skip


def probe_inputs(session, shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Seeded standard-normal floats (zeros for other types) for every input of `session`; a
    dynamic dimension is 1 on the batch axis, 3 on the channel axis, SPATIAL_FILL elsewhere,
    unless `shapes` gives the input's shape."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        fill = (1, 3) + (SPATIAL_FILL,) * max(len(i.shape) - 2, 0)
        shape = shapes.get(i.name) or [d if isinstance(d, int) and d > 0 else fill[k] for k, d in enumerate(i.shape)]
        dtype = _TYPES.get(i.type)
        if dtype is None:
            raise ValueError(f"input {i.name!r} has type {i.type}")
        floating = np.issubdtype(dtype, np.floating)
        feeds[i.name] = rng.standard_normal(shape).astype(dtype) if floating else np.zeros(shape, dtype)
    return feeds


_SHAPE_OPS = ("Shape", "Size")  # their outputs do not depend on the values they read


def _reads(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads: its inputs and what the nodes of its subgraphs (If, Loop) read."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
            for inner in sub.node:
                names |= _reads(inner)
    return names


def _downstream(graph: onnx.GraphProto, starts: set[str]) -> set[str]:
    """Tensors whose values depend on the values of `starts` (not only on their shapes)."""
    reached = set(starts)
    for node in graph.node:
        if node.op_type not in _SHAPE_OPS and _reads(node) & reached:
            reached.update(node.output)
    return reached


def _checkpoints(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(tensors to compare, graph outputs left out because a discontinuous op computes them).
    A discontinuous op counts only where it reads values computed from the inputs' values: the
    Ceil or Floor of a size computed from shapes is the same in both models."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    varying = _downstream(graph, {i.name for i in graph.input if i.name not in initializers})
    cut = [n for n in graph.node if _discontinuous(n) and _reads(n) & varying]
    behind = _downstream(graph, {o for n in cut for o in n.output})
    outputs = [o.name for o in graph.output]
    compare = [o for o in outputs if o not in behind]
    float_types = _float_tensors(model)
    for n in graph.node:  # what goes into the discontinuous part: scores, and the boxes gathered by them
        if n in cut or set(n.output) & behind:
            compare += [i for i in n.input if i in varying and i not in behind and i in float_types and i not in compare]
    return compare, [o for o in outputs if o in behind]


def _discontinuous(node: onnx.NodeProto) -> bool:
    if node.op_type in DISCONTINUOUS_OPS:
        return True
    subgraphs = [g for a in node.attribute for g in (*([a.g] if a.HasField("g") else []), *a.graphs)]
    return any(_discontinuous(n) for g in subgraphs for n in g.node)


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(shape_skeleton(model))
    infos = (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    return {i.name for i in infos if i.type.HasField("tensor_type") and i.type.tensor_type.elem_type in floats}


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs are `names` (any tensors of the graph), without the
    nodes they do not need (a post-processing that fails on no detections must not hide them);
    `model` itself when that is what it is already (no copy of a large model)."""
    needed, nodes = set(names), []
    for node in reversed(model.graph.node):
        if needed & set(node.output):
            nodes.append(node)
            needed |= _reads(node)
    if names == [o.name for o in model.graph.output] and len(nodes) == len(model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.output[:], out.graph.node[:]
    out.graph.node.extend(reversed(nodes))
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return out


def _deviation(reference: np.ndarray, pruned: np.ndarray, keep: np.ndarray | None) -> float:
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(pruned, dtype=np.float64)
    if keep is not None and ref.ndim == got.ndim:
        # The channel axis (1, or the last of a channels-last tensor) is the one the prune shrank.
        axes = [i for i in range(ref.ndim) if ref.shape[i] == len(keep) and got.shape[i] == int(keep.sum())]
        if len(axes) == 1 and ref.shape[axes[0]] != got.shape[axes[0]]:
            ref = np.compress(keep, ref, axis=axes[0])
    if ref.shape != got.shape:
        return float("inf")
    if not ref.size:
        return 0.0
    same = (ref == got) | (np.isnan(ref) & np.isnan(got))
    scale = float(np.max(np.abs(np.where(np.isfinite(ref), ref, 0.0)), initial=0.0))
    diff = np.where(same, 0.0, np.abs(ref - got))
    worst = float(np.max(np.where(np.isnan(diff), np.inf, diff)))
    return worst / scale if scale > 0 else (0.0 if worst == 0 else float("inf"))


@dataclass
class ProbeReference:
    """The input model's outputs on the probe inputs, taken before the surgery edits the model:
    `skipped` says why there is nothing to compare against."""

    model_bytes: bytes = b""
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    compare: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)
    outputs: list[list[np.ndarray]] = field(default_factory=list)
    skipped: str | None = None
    run: list[str] = field(default_factory=list)  # what the pruned model must compute: compare first


def probe_reference(
    original: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None, probes: int = PROBES
) -> ProbeReference:
    """Run the input model on `probes` seeded inputs (shapes of dynamic inputs from `shapes`)."""
    return probe_reference_async(original, shapes, probes).result()


def probe_reference_async(
    original: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None, probes: int = PROBES
) -> Future:
    """`probe_reference` in a background thread, so onnxruntime runs the input model while the
    surgery works (both release the GIL in their heavy parts). What the thread needs is
    serialized here first: the surgery may then edit `original`."""
    if estimated_byte_size(original) > 2**31 - 1:
        return _done(ProbeReference(skipped="models of 2 GB or more are not run for verification"))
    try:
        model_bytes = original.SerializeToString()
        compare, not_compared = _checkpoints(original)
        if not compare:
            return _done(ProbeReference(not_compared=not_compared, skipped="every graph output comes through a discontinuous op"))
        probed = _with_outputs(original, compare)
        first = model_bytes if probed is original else probed.SerializeToString()
        everything = _with_outputs(original, compare + not_compared).SerializeToString() if not_compared else None
    except Exception as err:  # noqa: BLE001 - a model onnxruntime cannot run on probes is not verified
        return _done(_unrunnable(err))
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxprune-probe")
    future = executor.submit(_run_probes, model_bytes, first, everything, compare, not_compared, shapes or {}, probes)
    executor.shutdown(wait=False)
    return future


def _run_probes(model_bytes, first, everything, compare, not_compared, shapes, probes) -> ProbeReference:
    try:
        session = _session(first)
        feeds = [probe_inputs(session, shapes, seed) for seed in range(probes)]
        outputs = [session.run(compare, f) for f in feeds]
        run = compare
        if everything is not None:  # the pruned model must run them too, where the input model does
            try:
                session = _session(everything)
                for f in feeds:
                    session.run(compare + not_compared, f)
                run = compare + not_compared
            except Exception:  # noqa: BLE001 - then only the compared tensors are asked of the pruned model
                pass
    except Exception as err:  # noqa: BLE001 - a model onnxruntime cannot run on probes is not verified
        return _unrunnable(err)
    return ProbeReference(model_bytes, feeds, compare, not_compared, outputs, run=run)


def _unrunnable(err: Exception) -> ProbeReference:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ProbeReference(skipped=f"onnxruntime cannot run the input model on probe inputs ({first[:300]}); "
                                  "give its input shapes with --shape")  # fmt: skip


def _done(reference: ProbeReference) -> Future:
    future: Future = Future()
    future.set_result(reference)
    return future


def verify_pruned(
    reference: ProbeReference,
    pruned: onnx.ModelProto,
    *,
    keep: dict[str, np.ndarray],
    expect_exact: bool,
    changed_nodes: dict[str, str] | None = None,
    tolerance: float = TOLERANCE,
) -> Verification:
    """Run the pruned model on the reference's probes and compare. `keep` maps a tensor name to
    the channels (on its channel axis) the pruned model kept of it, to compare intermediate tensors;
    `changed_nodes` maps a node name to what the surgery did to it (named in the error). Raises
    VerificationError when `expect_exact` and a deviation exceeds `tolerance`."""
    if reference.skipped:
        return Verification("skipped", not_compared=reference.not_compared, reason=reference.skipped)
    compare = reference.compare
    try:
        session = _session(_with_outputs(pruned, reference.run))
        results = [session.run(reference.run, f)[: len(compare)] for f in reference.feeds]
    except Exception as err:
        raise VerificationError(f"onnxruntime cannot run the pruned model, though it runs the input model: {err}") from err
    deviations = {name: 0.0 for name in compare}
    for ref_values, values in zip(reference.outputs, results, strict=True):
        for name, a, b in zip(compare, ref_values, values, strict=True):
            deviations[name] = max(deviations[name], _deviation(a, b, keep.get(name)))
    worst = max(deviations, key=deviations.get)
    result = Verification(
        "passed" if deviations[worst] <= tolerance else "deviates", len(reference.feeds), tolerance, deviations[worst],
        worst, deviations, reference.not_compared,
    )  # fmt: skip
    if expect_exact and result.status == "deviates":
        original = onnx.load_from_string(reference.model_bytes)
        where = _first_deviating_node(original, pruned, reference.feeds[0], keep, tolerance)
        what = ""
        if where is not None:
            node, tensor, dev = where
            done = (changed_nodes or {}).get(node.name)
            what = (f"; the first deviating tensor is {tensor!r} ({dev:.3g}), made by {node.op_type} node "
                    f"{node.name!r}" + (f", where the surgery {done}" if done else "") + ", while its inputs agree")
        raise VerificationError(
            f"the pruned model's output {worst!r} deviates from the input model's by {deviations[worst]:.3g} of its "
            f"magnitude (tolerance {tolerance:g}) although every removal was reported exact{what}. This is a bug in "
            "onnxprune; nothing was written. Please report it with the model; --no-verify writes the model anyway."
        )
    return result


def _first_deviating_node(original, pruned, feeds, keep, tolerance):
    """(node, tensor, deviation) of the first pruned-graph node whose float output deviates while
    every compared input of it does not; None when none can be found."""
    floats = _float_tensors(original) & _float_tensors(pruned)
    produced = {o for n in original.graph.node for o in n.output}
    names = [o for n in pruned.graph.node for o in n.output if o in floats and o in produced]
    if not names:
        return None
    try:
        a = dict(zip(names, _session(_with_outputs(original, names)).run(names, feeds), strict=True))
        b = dict(zip(names, _session(_with_outputs(pruned, names)).run(names, feeds), strict=True))
    except Exception:  # noqa: BLE001 - localisation is a courtesy: the error is raised regardless
        return None
    dev = {n: _deviation(a[n], b[n], keep.get(n)) for n in names}
    for node in pruned.graph.node:
        bad = [o for o in node.output if dev.get(o, 0.0) > tolerance]
        if bad and all(dev.get(i, 0.0) <= tolerance for i in node.input):
            return node, bad[0], dev[bad[0]]
    return None
