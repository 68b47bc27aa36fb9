"""nn.Module (minseg/nn/module.py): registration, parameter order, state_dict round trips, modes, containers."""
from collections import OrderedDict

import numpy as np
import pytest

import minseg
from minseg import Tensor, nn


class Block(nn.Module):
    """conv → bn → relu, with an extra plain attribute that must not be registered."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()
        self.note = "not a parameter"

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(1, np.float32))
        self.encoder = Block(3, 4)
        self.heads = nn.ModuleList([nn.Conv2d(4, 2, 1), nn.Conv2d(4, 1, 1)])

    def forward(self, x):
        features = self.encoder(x) * self.scale
        return [head(features) for head in self.heads]


def image(seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal((2, 3, 6, 5)).astype(np.float32))


def test_named_parameters_follow_registration_order_depth_first():
    assert [name for name, _ in Net().named_parameters()] == [
        "scale", "encoder.conv.weight", "encoder.conv.bias", "encoder.bn.weight", "encoder.bn.bias",
        "heads.0.weight", "heads.0.bias", "heads.1.weight", "heads.1.bias"]
    net = Net()
    assert [p is q for p, (_, q) in zip(net.parameters(), net.named_parameters())] == [True] * 9


def test_children_are_registered_by_assignment_and_replaced_by_reassignment():
    net = Net()
    assert [type(child).__name__ for child in net.children()] == ["Block", "ModuleList"]
    assert "note" not in dict(net.encoder.named_parameters())
    replacement = nn.Conv2d(3, 4, 1, bias=False)
    net.encoder.conv = replacement
    assert net.encoder.conv is replacement
    assert sorted(name for name, _ in net.encoder.named_parameters()) == ["bn.bias", "bn.weight", "conv.weight"]
    del net.heads
    assert [name for name, _ in net.named_modules()][:2] == ["", "encoder"]
    assert all(not name.startswith("heads") for name, _ in net.named_parameters())


def test_buffers_are_saved_but_not_trained():
    net = Net()
    params = {name for name, _ in net.named_parameters()}
    buffers = {name for name, _ in net.named_buffers()}
    assert buffers == {"encoder.bn.running_mean", "encoder.bn.running_var", "encoder.bn.num_batches_tracked"}
    assert not params & buffers
    assert set(net.state_dict()) == params | buffers


def test_state_dict_round_trip_reproduces_the_model_exactly():
    minseg.manual_seed(1)
    source = Net()
    source(image(1))  # training step: moves the running statistics away from their initial values
    minseg.manual_seed(2)
    target = Net()
    state = source.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    target.load_state_dict(state)
    source.eval()
    target.eval()
    for a, b in zip(source(image(3)), target(image(3))):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(target.encoder.bn.running_mean.numpy(), source.encoder.bn.running_mean.numpy())
    assert target.encoder.bn.num_batches_tracked.item() == 1


def test_state_dict_holds_copies_and_loading_copies_too():
    net = Net()
    state = net.state_dict()
    state["scale"][...] = 5.0
    assert net.scale.numpy()[0] == 1.0  # editing the saved dict does not touch the model
    net.load_state_dict(state)
    state["scale"][...] = 7.0
    assert net.scale.numpy()[0] == 5.0  # nor does editing it after loading
    assert net.scale.dtype == np.float32


def test_load_state_dict_shape_mismatch_names_the_key():
    net = Net()
    state = net.state_dict()
    state["heads.0.weight"] = np.zeros((3, 4, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"heads\.0\.weight"):
        net.load_state_dict(state)


def test_load_state_dict_missing_and_unexpected_keys():
    net = Net()
    state = net.state_dict()
    del state["encoder.bn.running_var"]
    with pytest.raises(KeyError, match=r"missing keys \['encoder\.bn\.running_var'\]"):
        net.load_state_dict(state)
    state = net.state_dict()
    state["extra.weight"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"unexpected keys \['extra\.weight'\]"):
        net.load_state_dict(state)
    # strict=False loads what matches and ignores the rest
    state = OrderedDict(scale=np.full(1, 3.0, np.float32), extra=np.zeros(2))
    net.load_state_dict(state, strict=False)
    assert net.scale.numpy()[0] == 3.0


def test_train_and_eval_reach_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.encoder.eval()
    assert net.training and not net.encoder.bn.training and net.heads.training


def test_eval_mode_changes_batchnorm_and_dropout_behaviour():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Dropout(0.5))
    x = image()
    train_out = model(x).numpy()
    model.eval()
    eval_a, eval_b = model(x).numpy(), model(x).numpy()
    np.testing.assert_array_equal(eval_a, eval_b)  # deterministic: no dropout, fixed statistics
    assert not np.allclose(train_out, eval_a)


def test_sequential_applies_in_order_and_indexes_like_a_list():
    first, second = nn.Conv2d(3, 4, 1), nn.ReLU()
    model = nn.Sequential(first, second)
    assert len(model) == 2 and model[0] is first and model[-1] is second and list(model) == [first, second]
    np.testing.assert_array_equal(model(image()).numpy(), second(first(image())).numpy())
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias"]


def test_module_list_registers_appended_modules():
    layers = nn.ModuleList()
    layers.append(nn.Conv2d(1, 1, 1)).append(nn.Conv2d(1, 2, 1))
    assert len(layers) == 2 and [name for name, _ in layers.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias"]
    plain = nn.Module()
    plain.items = [nn.Conv2d(1, 1, 1)]  # a Python list hides its modules, which is why ModuleList exists
    assert list(plain.parameters()) == []


def test_sequential_and_module_list_index_append_and_iterate_alike():
    conv, relu = nn.Conv2d(3, 4, 1), nn.ReLU()
    for container in (nn.Sequential(conv), nn.ModuleList([conv])):
        container.append(relu)
        assert len(container) == 2 and container[1] is relu and list(container) == [conv, relu]
        assert [name for name, _ in container.named_parameters()] == ["0.weight", "0.bias"]


def test_zero_grad_clears_every_parameter_gradient():
    net = Net()
    for out in net(image()):
        out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_assigning_before_super_init_is_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.weight = nn.Parameter(np.ones(1))

    with pytest.raises(RuntimeError, match="super"):
        Broken()


def test_repr_nests_children():
    text = repr(Net())
    assert "(encoder): Block(" in text and "(conv): Conv2d(3, 4, kernel_size=(3, 3)" in text
    assert "(heads): ModuleList(" in text and "(0): Conv2d(4, 2" in text


def test_reassigning_a_child_or_buffer_keeps_its_place_and_kind():
    import minseg.nn as nn
    from minseg import Tensor

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(1, 2, 1)
            self.second = nn.Conv2d(2, 2, 1)
            self.register_buffer("count", Tensor(np.zeros(1)))

    net = Net()
    before = [name for name, _ in net.named_parameters()]
    net.first = nn.Conv2d(1, 2, 1)
    assert [name for name, _ in net.named_parameters()] == before
    net.count = Tensor(np.ones(1))
    assert "count" in net.state_dict() and net.state_dict()["count"][0] == 1.0
