"""``Module``: a layer or a whole network, holding its parameters and sub-modules.

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it (as in PyTorch),
so ``parameters()``, ``state_dict()``, ``train()``/``eval()`` and ``to(device)`` reach
every part of a network without the author listing anything twice. Buffers
(``register_buffer``) are state that is saved but not trained, such as BatchNorm's
running statistics.
"""
from collections import OrderedDict

import numpy as np

from .. import backend
from ..autograd import Tensor

__all__ = ["Parameter", "Module", "Sequential", "ModuleList"]


class Parameter(Tensor):
    """A Tensor that a Module trains: ``requires_grad`` is on by default."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class of every layer and model; subclasses define ``forward``."""

    # The multiple that input height and width must be (models.sizes): any size, unless a model declares more.
    size_multiple = 1

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dictionaries to exist already.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- registration ----------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if isinstance(value, Parameter):
            home = self._parameters
        elif isinstance(value, Module):
            home = self._modules
        elif name in self._buffers and (value is None or isinstance(value, Tensor)):
            home = self._buffers  # reassigning a buffer keeps it a buffer
        else:
            home = None
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not home:
                registry.pop(name, None)
        if home is None:
            object.__setattr__(self, name, value)
        else:
            self.__dict__.pop(name, None)
            home[name] = value  # an existing key keeps its place, so parameters() order is stable

    def __getattr__(self, name):  # called only when normal lookup fails
        for registry in ("_parameters", "_buffers", "_modules"):
            found = self.__dict__.get(registry, {})
            if name in found:
                return found[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, value):
        """Keep ``value`` (a Tensor or array, or None) in ``state_dict`` but out of ``parameters()``."""
        self.__dict__.pop(name, None)
        self._buffers[name] = None if value is None else (value if isinstance(value, Tensor) else Tensor(value))

    # --- running ---------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def train(self, mode=True):
        """Training mode (BatchNorm uses batch statistics, Dropout drops); returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        """Evaluation mode: BatchNorm uses its running statistics, Dropout passes everything."""
        return self.train(False)

    # --- walking the tree --------------------------------------------------------
    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, parameter in module._parameters.items():
                yield (f"{module_name}.{name}" if module_name else name), parameter

    def parameters(self):
        for _, parameter in self.named_parameters():
            yield parameter

    def named_buffers(self):
        for module_name, module in self.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buffer

    def zero_grad(self):
        for parameter in self.parameters():
            parameter.grad = None

    def to(self, device):
        """Move every parameter and buffer to ``device`` ('cpu' or 'cuda') in place; returns self."""
        for module in self.modules():
            for registry in (module._parameters, module._buffers):
                for tensor in registry.values():
                    if tensor is not None:
                        tensor.data = backend.to_device(tensor.data, device)
                        if tensor.grad is not None:
                            tensor.grad = backend.to_device(tensor.grad, device)
        return self

    # --- saving and loading --------------------------------------------------------
    def state_dict(self):
        """Name → NumPy array copy, for every parameter and buffer (on the CPU, safe to save)."""
        state = OrderedDict()
        for name, tensor in list(self.named_parameters()) + list(self.named_buffers()):
            state[name] = tensor.numpy().copy()
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers of the same names, checking every shape."""
        own = OrderedDict(list(self.named_parameters()) + list(self.named_buffers()))
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, tensor in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            value = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
            if tuple(value.shape) != tensor.shape:
                raise ValueError(f"load_state_dict: {name} has shape {tensor.shape} in the model "
                                 f"but {tuple(value.shape)} in the state dict")
            xp = backend.get_array_module(tensor.data)
            tensor.data = xp.asarray(value, dtype=tensor.dtype).copy()
        return self

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_lines = repr(child).split("\n")
            lines.append(f"  ({name}): " + "\n  ".join(child_lines))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"

    def extra_repr(self):
        return ""


class _ModuleSequence(Module):
    """Modules registered in order under the names "0", "1", ...: what Sequential and ModuleList share."""

    def __init__(self, modules):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(_ModuleSequence):
    """Modules applied one after another: ``Sequential(conv, bn, relu)(x)``."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for module in self:
            x = module(x)
        return x


class ModuleList(_ModuleSequence):
    """A list of modules whose parameters are registered (a plain Python list would hide them)."""

    def __init__(self, modules=()):
        super().__init__(modules)
