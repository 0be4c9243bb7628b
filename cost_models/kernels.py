"""Kernels as the target runs them: the fused PrimFuncs of a lowered module, in call order, with features.

The module is lowered through the target's pipeline (:mod:`hanasc.targets.pipelines`): TVM's default
fusion (LegalizeOps, FoldConstant, FuseOps, FuseTIR) or the shipped build's; each ``call_tir`` of ``main``
is one kernel call. Features are read from the TIR itself (the anchor block: the reduction with the most
iterations), so any transformed module works.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from hanasc.core.relax_params import bind_weights
from hanasc.cost_models.target_info import get_target
from hanasc.targets.late_binding import fused_as_shipped
from hanasc.targets.pipelines import default_fusion_passes

OP_KINDS = ("conv2d", "depthwise", "group_conv", "dense", "pool", "reduce", "elementwise", "copy")
DTYPE_BITS = {"int8": 8, "uint8": 8, "int16": 16, "float16": 16, "bfloat16": 16, "int32": 32, "float32": 32}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str

    @property
    def bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _dtype_bytes(self.dtype)


@dataclass(frozen=True)
class KernelFeatures:
    """What the latency model sees of one fused kernel."""

    op_kind: str
    ops: tuple[str, ...]  # block names in the kernel (conv2d_nchw, T_add, T_maximum, ...)
    inputs: tuple[TensorInfo, ...]
    output: TensorInfo
    weight: TensorInfo | None
    kernel_size: tuple[int, int]
    stride: int
    groups: int
    compute_dtype: str  # dtype the anchor block reads (int8 for integer convs)
    weight_bits: int
    act_bits: int
    flops: float
    anchor_macs: int  # iterations of the anchor block (MACs for conv/dense)
    bytes_moved: int  # inputs + weights + output, each read/written once
    scratch_bytes: int  # buffers allocated inside the kernel (pad_temp, unfused intermediates)
    lowering: str = "default"  # which lowering made the kernel (LOWERINGS)

    @property
    def intensity(self) -> float:
        return self.flops / max(self.bytes_moved, 1)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> KernelFeatures:
        data = dict(data)
        data["inputs"] = tuple(TensorInfo(tuple(t["shape"]), t["dtype"]) for t in data["inputs"])
        data["output"] = TensorInfo(tuple(data["output"]["shape"]), data["output"]["dtype"])
        if data["weight"] is not None:
            data["weight"] = TensorInfo(tuple(data["weight"]["shape"]), data["weight"]["dtype"])
        data["ops"] = tuple(data["ops"])
        data["kernel_size"] = tuple(data["kernel_size"])
        return cls(**data)


FEATURE_NAMES: tuple[str, ...] = (
    "log_flops",
    "log_bytes",
    "log_intensity",
    "log_anchor_macs",
    "log_out_elems",
    "log_scratch",
    "kh",
    "kw",
    "stride",
    "log_groups",
    "log_cin",
    "log_cout",
    "log_hout",
    "log_wout",
    "weight_bits",
    "act_bits",
    "is_float",
    "n_ops",
    *(f"kind_{k}" for k in OP_KINDS),
)


def feature_vector(f: KernelFeatures) -> list[float]:
    """The numeric vector (order: FEATURE_NAMES) the XGBoost model is trained on."""
    out_shape = f.output.shape
    cout = out_shape[1] if len(out_shape) >= 2 else 1
    hout = out_shape[2] if len(out_shape) == 4 else 1
    wout = out_shape[3] if len(out_shape) == 4 else 1
    first = f.inputs[0].shape if f.inputs else ()
    cin = first[1] if len(first) >= 2 else 1
    lg = math.log2
    return [
        lg(f.flops + 1),
        lg(f.bytes_moved + 1),
        lg(f.intensity + 1e-3),
        lg(f.anchor_macs + 1),
        lg(int(np.prod(out_shape, dtype=np.int64)) + 1),
        lg(f.scratch_bytes + 1),
        f.kernel_size[0],
        f.kernel_size[1],
        f.stride,
        lg(max(f.groups, 1)),
        lg(max(cin, 1)),
        lg(max(cout, 1)),
        lg(max(hout, 1)),
        lg(max(wout, 1)),
        f.weight_bits,
        f.act_bits,
        float(f.compute_dtype.startswith(("float", "bfloat"))),
        len(f.ops),
        *(float(f.op_kind == k) for k in OP_KINDS),
    ]


@dataclass
class Kernel:
    """One distinct fused kernel of a lowered module."""

    name: str  # the PrimFunc's name in the lowered module
    signature: str  # sha256 of target key + structural hash of the PrimFunc
    features: KernelFeatures
    calls: int  # how many times ``main`` calls it per inference
    prim_func: object = field(repr=False)  # tvm.tirx.PrimFunc (unscheduled)


@dataclass
class LoweredModel:
    """The kernels of a module as one target runs them, in first-call order."""

    target: str
    kernels: list[Kernel]
    call_order: list[str]  # kernel names, one per call_tir in main

    @property
    def total_calls(self) -> int:
        return len(self.call_order)

    @property
    def flops(self) -> float:
        return sum(k.features.flops * k.calls for k in self.kernels)

    @property
    def bytes_moved(self) -> int:
        return sum(k.features.bytes_moved * k.calls for k in self.kernels)

    def subset(self, keep) -> LoweredModel:
        """The kernels for which ``keep(kernel)`` holds, with their calls."""
        kernels = [k for k in self.kernels if keep(k)]
        names = {k.name for k in kernels}
        return LoweredModel(self.target, kernels, [n for n in self.call_order if n in names])


LOWERINGS = ("default", "shipped")  # TVM's default NCHW fusion, or the shipped build's (targets/pipelines.py)


def with_bound_weights(mod):
    """``mod`` with its weights bound as constants if they are still parameters (``main`` has
    ``num_input``); a module already bound as it is."""
    main = mod["main"]
    if main.attrs and "num_input" in main.attrs:
        return bind_weights(mod)
    return mod


def lower_for_costs(mod, target_name: str, lowering: str) -> LoweredModel:
    """:func:`lower_to_kernels` of ``mod`` (weights as parameters or bound) with its weights as
    ``lowering`` takes them: the shipped lowering binds them itself (integer ones late, as the build does),
    TVM's default one reads them bound."""
    return lower_to_kernels(mod if lowering == "shipped" else with_bound_weights(mod), target_name, lowering)


def lower_to_kernels(mod, target_name: str = "host", lowering: str = "default") -> LoweredModel:
    """Lower a Relax module (weights bound, or as inputs) and list its fused kernels with features.

    ``lowering``: ``"default"``, TVM's fusion of the NCHW module
    (:func:`hanasc.targets.pipelines.default_fusion_passes`); ``"shipped"``, the
    kernels the shipped artifact runs (blocked layouts, int8 pair kernels, run-time unpacking of packed
    weights; :func:`hanasc.targets.late_binding.fused_as_shipped`), named as its VM calls them."""
    import tvm

    if lowering not in LOWERINGS:
        raise ValueError(f"unknown lowering '{lowering}' (one of {', '.join(LOWERINGS)})")
    target = get_target(target_name)
    tvm_target = target.tvm_target()
    if lowering == "shipped":
        lowered = fused_as_shipped(mod, tvm_target)
    else:
        with tvm_target:
            lowered = tvm.transform.Sequential(default_fusion_passes(tvm_target))(mod)
    return kernels_of(lowered, target.name, target.key(), lowering)


def kernels_of(lowered, target_name: str, target_key: str, lowering: str = "default") -> LoweredModel:
    """The kernels of a fused module (``call_tir`` in ``main``), with features, in first-call order."""
    from tvm import relax

    key = target_key if lowering == "default" else f"{target_key}|{lowering}"
    order = _call_order(lowered["main"], relax)
    kernels: dict[str, Kernel] = {}
    for name in order:
        if name in kernels:
            kernels[name].calls += 1
            continue
        prim = lowered[name]
        kernels[name] = Kernel(
            name=name,
            signature=kernel_signature(prim, key),
            features=extract_features(prim, lowering),
            calls=1,
            prim_func=prim,
        )
    return LoweredModel(target=target_name, kernels=list(kernels.values()), call_order=order)


def kernel_signature(prim, target_key: str) -> str:
    """A stable id of a kernel on a target: the PrimFunc's structural hash (names ignored) + target key."""
    import tvm_ffi

    structural = tvm_ffi.structural_hash(prim.without_attr("global_symbol"))
    return hashlib.sha256(f"{target_key}|{structural}".encode()).hexdigest()[:24]


def _call_order(main, relax) -> list[str]:
    """Names of the PrimFuncs ``main`` calls through call_tir, one entry per call, in order."""
    calls: list[str] = []
    call_tir = tvm_op("relax.call_tir")

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            calls.append(_gvar_name(expr.args[0]))

    relax.analysis.post_order_visit(main.body, visit)
    return calls


def tvm_op(name: str):
    import tvm

    return tvm.ir.Op.get(name)


def _gvar_name(gvar) -> str:
    return str(getattr(gvar, "name_hint", None) or gvar.name)


def _dtype_bytes(dtype: str) -> int:
    return max(DTYPE_BITS.get(str(dtype), 32) // 8, 1)


def allocated_bytes(root) -> int:
    """Bytes of the buffers a PrimFunc's root block allocates outside registers (scope ``local``: a
    scheduled kernel's register tiles; an unscheduled one has none)."""
    return sum(_tensor(b).bytes for b in root.alloc_buffers if b.scope() != "local")


def _tensor(buffer) -> TensorInfo:
    """A buffer's shape and dtype; a channel-blocked activation ``(N, C/c, H, W, c)`` reads as its NCHW
    shape ``(N, C, H, W)``, so blocked and NCHW kernels share features."""
    shape = tuple(int(d) for d in buffer.shape)
    if len(shape) == 5:
        n, outer, h, w, inner = shape
        shape = (n, outer * inner, h, w)
    return TensorInfo(shape, str(buffer.dtype))


def _anchor(blocks) -> tuple[object | None, int]:
    """The reduction block with the most iterations (the conv / matmul / pool), and its iteration count."""
    anchor, anchor_iters = None, 0
    for blk in blocks:
        has_reduce = any(int(iv.iter_type) == 2 for iv in blk.iter_vars)
        iters = int(np.prod([int(iv.dom.extent) for iv in blk.iter_vars], dtype=np.int64))
        if has_reduce and iters >= anchor_iters:
            anchor, anchor_iters = blk, iters
    return anchor, anchor_iters


def extract_features(prim, lowering: str = "default") -> KernelFeatures:
    """Read the features of one fused, unscheduled PrimFunc from its blocks and buffers."""
    import tvm
    from tvm import s_tir

    module = tvm.IRModule({"main": prim})
    flops = float(s_tir.analysis.estimate_tir_flops(module))
    sch = s_tir.Schedule(module)
    blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    root = sch.get(sch.get_sblock("root"))
    params = [_tensor(p) for p in prim.params]
    param_names = [str(p.name) for p in prim.params]
    inputs, output = tuple(params[:-1]), params[-1]
    scratch = allocated_bytes(root)

    anchor, anchor_iters = _anchor(blocks)
    ops = tuple(str(b.name_hint) for b in blocks)
    weight, kind, compute_dtype = None, "elementwise", output.dtype
    kernel_size, groups, stride = (1, 1), 1, 1
    if anchor is None:
        if all(
            n.startswith(("T_reshape", "T_transpose", "T_layout", "T_strided_slice", "T_concat", "te_layout"))
            for n in ops
        ):
            kind = "copy"
        anchor_iters = int(np.prod(output.shape, dtype=np.int64))
    else:
        name = str(anchor.name_hint).lower()
        reads = [r.source for r in anchor.reads]
        read_params = [_tensor(r) for r in reads if str(r.name) in param_names]
        compute_dtype = str(reads[0].dtype) if reads else output.dtype
        if "conv" in name and lowering != "default":  # blocked, packed or pre-packed weight layouts
            weight = _weight_param(params, inputs[0], output)
            kind, kernel_size, groups, stride = _blocked_conv_attrs(name, anchor, inputs[0], output)
        elif "conv" in name:
            weight = next((t for t in read_params if len(t.shape) == 4), None)
            kind, kernel_size, groups, stride = _conv_attrs(name, inputs[0], output, weight)
        elif "matmul" in name or "dense" in name:
            kind = "dense"
            weight = next((t for t in read_params[1:] if len(t.shape) == 2), None) or (
                read_params[-1] if len(read_params) > 1 else None
            )
        elif "pool" in name:
            kind = "pool"
        else:
            kind = "reduce"
    act_dtype = inputs[0].dtype if inputs else output.dtype
    return KernelFeatures(
        op_kind=kind,
        ops=ops,
        inputs=inputs,
        output=output,
        weight=weight,
        kernel_size=kernel_size,
        stride=stride,
        groups=groups,
        compute_dtype=compute_dtype,
        weight_bits=DTYPE_BITS.get(weight.dtype, 32) if weight else 0,
        act_bits=DTYPE_BITS.get(act_dtype, 32),
        flops=flops,
        anchor_macs=anchor_iters,
        bytes_moved=sum(t.bytes for t in params),
        scratch_bytes=scratch,
        lowering=lowering,
    )


def _weight_param(params: list[TensorInfo], data: TensorInfo, out: TensorInfo) -> TensorInfo | None:
    """A fused convolution's weight among its parameters, whatever its layout: the largest one that is
    neither the data, nor shaped like the data or the output (a residual operand)."""
    candidates = [t for t in params[1:-1] if len(t.shape) >= 2 and t.shape not in (data.shape, out.shape)]
    return max(candidates, key=lambda t: int(np.prod(t.shape, dtype=np.int64)), default=None)


def _blocked_conv_attrs(name: str, anchor, data: TensorInfo, out: TensorInfo):
    """Kind, kernel size, groups and stride of a convolution whose weight is not OIHW, from its anchor
    block: the kernel window is the extent of the reduction axes named ``ry`` / ``rx``, the input channels
    per group the remaining reduction iterations."""
    if len(data.shape) != 4 or len(out.shape) != 4:
        return "conv2d", (1, 1), 1, 1
    reduce = {str(iv.var.name): int(iv.dom.extent) for iv in anchor.iter_vars if int(iv.iter_type) == 2}
    kh = next((v for k, v in reduce.items() if k.endswith("ry")), 1)
    # a row's taps: ``rx``, or ``rxo`` x ``rxi`` (groups of four taps, passes.quad_depthwise)
    kw = int(np.prod([v for k, v in reduce.items() if k.endswith(("rx", "rxo", "rxi"))], dtype=np.int64))
    per_group = max(int(np.prod(list(reduce.values()), dtype=np.int64)) // max(kh * kw, 1), 1)
    groups = max(data.shape[1] // per_group, 1)
    stride = max(round(data.shape[2] / max(out.shape[2], 1)), 1)
    if groups == 1:
        kind = "conv2d"
    elif "depthwise" in name or per_group == 1:
        kind = "depthwise"
    else:
        kind = "group_conv"
    return kind, (kh, kw), groups, stride


def _conv_attrs(name: str, data: TensorInfo, out: TensorInfo, weight: TensorInfo | None):
    """Kind, kernel size, groups and stride of a 2-D convolution from its NCHW buffers."""
    if weight is None or len(data.shape) != 4 or len(out.shape) != 4:
        return "conv2d", (1, 1), 1, 1
    cin = data.shape[1]
    groups = max(cin // max(weight.shape[1], 1), 1)
    stride = max(round(data.shape[2] / max(out.shape[2], 1)), 1)
    kernel = (weight.shape[2], weight.shape[3])
    if groups == 1:
        kind = "conv2d"
    elif groups == cin and weight.shape[1] == 1:
        kind = "depthwise"
    else:
        kind = "group_conv"
    return kind, kernel, groups, stride
