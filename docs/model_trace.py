"""Trace a model's blocks from one forward pass: what docs/figures.py draws as the architecture figures.

``trace_blocks(model, x)`` wraps each block's ``forward`` for one run and records its output shape and which
earlier block calls fed it, found by walking the autograd graph (``Tensor.creator``, ``Function.inputs``) back from
its input. A skip connection is then simply an edge from a call that is not the one just before, so the drawing
follows the code, whatever the code becomes.
"""
import minseg
from minseg import nn

__all__ = ["blocks", "describe", "trace_blocks"]


def blocks(model):
    """The named blocks a drawing shows: each top-level child, or the items of a list of blocks."""
    for name, child in model._modules.items():
        items = list(child._modules.items())
        if isinstance(child, nn.ModuleList) or (items and all(isinstance(c, nn.Sequential) for _, c in items)):
            yield from ((f"{name}.{index}", block) for index, block in items)
        else:
            yield name, child


def describe(block):
    """A short name for a block from its layers, e.g. ``(conv3×3 BN ReLU)×2`` or ``conv3×3/2 BN ReLU``."""
    words = []
    for module in block.modules():
        kind = type(module).__name__
        if kind in ("Conv2d", "ConvTranspose2d"):
            size = "×".join(map(str, module.kernel_size))
            stride = f"/{module.stride[0]}" if module.stride[0] > 1 else ""
            words.append(("upconv" if kind == "ConvTranspose2d" else "conv") + size + stride)
        elif kind in ("BatchNorm2d", "ReLU"):
            words.append({"BatchNorm2d": "BN"}.get(kind, kind))
        elif kind == "MaxPool2d":
            words.append(f"maxpool{module.kernel_size}")
    for repeat in (2, 3):  # a repeated pattern is written once with its count
        part = len(words) // repeat
        if part and len(words) % repeat == 0 and words == words[:part] * repeat:
            return f"({' '.join(words[:part])})×{repeat}" if part > 1 else f"{words[0]}×{repeat}"
    return " ".join(words)


def _sources(tensor, produced):
    """The calls (index into the trace; -1: the model's input) that ``tensor`` was computed from.

    Walks the autograd graph back from ``tensor`` and stops at every tensor in ``produced`` (id → call index).
    """
    found, stack, seen = set(), [tensor], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if id(current) in produced:
            found.add(produced[id(current)])
        elif current.creator is not None:  # other leaves are parameters and constants, not data flow
            stack.extend(current.creator.inputs)
    return found


def trace_blocks(model, x):
    """Run ``model`` on ``x`` and record each block call: (name, description, output shape, source calls).

    Every block's ``forward`` is wrapped for one run; the sources of a call are found from the autograd graph
    of its input, so a skip connection shows up as an edge from a call that is not the one just before.
    """
    calls, produced, keep = [], {}, []
    for name, block in blocks(model):
        def recording(*args, _name=name, _block=block, _forward=block.forward):
            sources = set().union(*(_sources(a, produced) for a in args if isinstance(a, minseg.Tensor)))
            out = _forward(*args)
            produced[id(out)] = len(calls)
            keep.append(out)  # ids stay unique while the outputs live
            calls.append((_name, describe(_block), out.shape, sources))
            return out
        object.__setattr__(block, "forward", recording)
    x = minseg.Tensor(x, requires_grad=True)
    produced[id(x)] = -1
    was_training = model.training
    model.eval()  # BatchNorm's running statistics stay untouched; the graph is still recorded (x requires grad)
    try:
        model(x)
    finally:
        model.train(was_training)
        for _, block in blocks(model):
            block.__dict__.pop("forward", None)
    return calls
