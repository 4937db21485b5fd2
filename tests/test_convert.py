"""ops.convert: which layers it swaps, what it keeps (parameters, buffers, hooks, state_dict keys,
optimizers), what it refuses and how it says so; and tritonprop.record().

Converted whole models (torchvision, torch's Transformer, BERT) are checked against the unconverted
ones in test_convert_models.py and test_integration_transformers.py.
"""
from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import tritonprop
from helpers import assert_close
from tritonprop import ops
from tritonprop.ops.convert import SWAPS

# The layers issue #16 names, each with a small instance.
LAYERS = {
    nn.Conv2d: lambda: nn.Conv2d(3, 4, 3),
    nn.BatchNorm1d: lambda: nn.BatchNorm1d(4),
    nn.BatchNorm2d: lambda: nn.BatchNorm2d(4),
    nn.BatchNorm3d: lambda: nn.BatchNorm3d(4),
    nn.Linear: lambda: nn.Linear(3, 4),
    nn.LayerNorm: lambda: nn.LayerNorm(4),
    nn.MultiheadAttention: lambda: nn.MultiheadAttention(4, 2),
    nn.RNN: lambda: nn.RNN(3, 4),
    nn.RNNCell: lambda: nn.RNNCell(3, 4),
    nn.LSTM: lambda: nn.LSTM(3, 4),
    nn.LSTMCell: lambda: nn.LSTMCell(3, 4),
    nn.GRU: lambda: nn.GRU(3, 4),
    nn.GRUCell: lambda: nn.GRUCell(3, 4),
    nn.ReLU: lambda: nn.ReLU(),
    nn.GELU: lambda: nn.GELU(approximate="tanh"),
    nn.Dropout: lambda: nn.Dropout(0.3),
    nn.CrossEntropyLoss: lambda: nn.CrossEntropyLoss(label_smoothing=0.1),
    nn.LogSoftmax: lambda: nn.LogSoftmax(dim=1),
    nn.NLLLoss: lambda: nn.NLLLoss(),
    nn.TransformerEncoderLayer: lambda: nn.TransformerEncoderLayer(4, 2, 8),
    nn.TransformerDecoderLayer: lambda: nn.TransformerDecoderLayer(4, 2, 8),
    nn.TransformerEncoder: lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 8), 1,
                                                         enable_nested_tensor=False),
    nn.TransformerDecoder: lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(4, 2, 8), 1),
    nn.Transformer: lambda: nn.Transformer(4, 2, 1, 1, 8),
}


def test_the_swap_table_covers_every_layer_the_issue_names():
    assert set(LAYERS) == set(SWAPS)
    for torch_class, ours in SWAPS.items():
        assert ours is getattr(ops, torch_class.__name__) and issubclass(ours, torch_class)


@pytest.mark.parametrize("torch_class", list(LAYERS), ids=lambda c: c.__name__)
def test_a_layer_becomes_ours_in_place_keeping_its_state(torch_class):
    layer = LAYERS[torch_class]()
    parameters = dict(layer.named_parameters())
    buffers = dict(layer.named_buffers())
    keys = list(layer.state_dict())
    training = layer.training

    converted = ops.convert(layer)

    # The root itself is swapped, and returned, as convert_sync_batchnorm returns its root.
    assert converted is layer and type(layer) is SWAPS[torch_class]
    assert all(a is b for a, b in zip(dict(layer.named_parameters()).values(), parameters.values()))
    assert all(a is b for a, b in zip(dict(layer.named_buffers()).values(), buffers.values()))
    assert list(layer.state_dict()) == keys
    assert layer.training == training
    # Every descendant of a container (the Transformer layers) is ours too.
    for name, child in layer.named_modules():
        if type(child) in SWAPS and not name.endswith("out_proj"):
            raise AssertionError(f"{name} is still {type(child).__name__} of torch")


def test_constructor_extras_take_their_defaults():
    model = ops.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2)))
    assert model[0].activation is None and model[1].fuse_relu is False and model[3].activation is None
    assert "activation" not in repr(model) and "fuse_relu" not in repr(model)


def test_recurrent_layers_become_traceable():
    torch._dynamo.config.allow_rnn = False
    try:
        ops.convert(nn.LSTM(3, 4))
        assert torch._dynamo.config.allow_rnn
    finally:
        torch._dynamo.config.allow_rnn = False


def test_an_optimizer_built_before_convert_trains_the_converted_model():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3))
    model = copy.deepcopy(reference)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0.9)
    ops.convert(model)
    x = torch.randn(7, 5)
    for _ in range(3):
        for net, opt in ((model, optimizer), (reference, reference_optimizer)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    # The optimizer, built before the conversion, moved the converted model's every parameter ...
    assert all(not torch.equal(initial[key], value) for key, value in model.state_dict().items())
    # ... exactly as torch's twin moved its own.
    for key, value in model.state_dict().items():
        assert_close(value, reference.state_dict()[key], name=key)


def test_hooks_survive_and_fire():
    layer = nn.Linear(3, 2)
    seen = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(type(module)))
    ops.convert(layer)
    layer(torch.randn(1, 3))
    assert seen == [ops.Linear]
    handle.remove()
    layer(torch.randn(1, 3))
    assert seen == [ops.Linear]


def test_a_shared_module_is_converted_once_and_stays_shared():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    ops.convert(model)
    assert model[0] is model[2] is shared and type(shared) is ops.Linear


def test_convert_is_idempotent_and_leaves_other_layers_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU6(), nn.MaxPool2d(2), nn.Flatten(), nn.Embedding(3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # layers we do not implement stay torch's silently
        ops.convert(model)
        ops.convert(model)
    assert [type(m) for m in model] == [ops.Conv2d, nn.ReLU6, nn.MaxPool2d, nn.Flatten, nn.Embedding]


def _unsupported_model():
    return nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
                         nn.MultiheadAttention(4, 2, add_bias_kv=True), nn.MultiheadAttention(4, 2, add_zero_attn=True),
                         nn.LSTM(3, 4, proj_size=2), nn.Linear(2, 2))


def test_unsupported_configurations_stay_torchs_with_one_warning_naming_each():
    model = _unsupported_model()
    with pytest.warns(UserWarning) as caught:
        ops.convert(model)
    messages = [str(w.message) for w in caught if "stay torch's" in str(w.message)]
    assert len(messages) == 1
    for fragment in ("0 (Conv2d): tritonprop Conv2d: padding_mode='reflect'", "1 (MultiheadAttention)", "add_bias_kv",
                     "2 (MultiheadAttention)", "add_zero_attn", "3 (LSTM)", "proj_size"):
        assert fragment in messages[0]
    assert [type(m) for m in model] == [nn.Conv2d, nn.MultiheadAttention, nn.MultiheadAttention, nn.LSTM, ops.Linear]


def test_strict_raises_before_converting_anything():
    model = _unsupported_model()
    with pytest.raises(NotImplementedError, match=r"(?s)strict=True.*padding_mode='reflect'.*proj_size"):
        ops.convert(model, strict=True)
    assert type(model[4]) is nn.Linear


def test_a_subclass_keeps_its_own_forward_and_is_reported():
    class ScaledLinear(nn.Linear):
        def forward(self, input):
            return 2 * super().forward(input)

    model = nn.Sequential(ScaledLinear(2, 2), nn.Linear(2, 2))
    with pytest.warns(UserWarning, match="0 \\(ScaledLinear\\): a subclass of torch.nn.Linear"):
        ops.convert(model)
    assert type(model[0]) is ScaledLinear and type(model[1]) is ops.Linear
    with pytest.raises(NotImplementedError, match="ScaledLinear"):
        ops.convert(nn.Sequential(ScaledLinear(2, 2)), strict=True)


def test_the_out_projection_inside_attention_is_left_alone():
    # It only holds weights (MultiheadAttention's forward never calls it), and is torch's own subclass.
    attention = nn.MultiheadAttention(4, 2)
    out_proj_type = type(attention.out_proj)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.convert(nn.Sequential(attention))
    assert type(attention) is ops.MultiheadAttention and type(attention.out_proj) is out_proj_type


def test_include_and_exclude_choose_classes():
    def model():
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))

    included = ops.convert(model(), include=[nn.Conv2d, nn.BatchNorm2d])
    assert [type(m) for m in included] == [ops.Conv2d, ops.BatchNorm2d, nn.ReLU, nn.Flatten, nn.Linear]
    excluded = ops.convert(model(), exclude=nn.ReLU)
    assert [type(m) for m in excluded] == [ops.Conv2d, ops.BatchNorm2d, nn.ReLU, nn.Flatten, ops.Linear]
    # A base class reaches every layer below it.
    normed = ops.convert(model(), include=[nn.modules.batchnorm._BatchNorm])
    assert [type(m) for m in normed][:2] == [nn.Conv2d, ops.BatchNorm2d]


@pytest.mark.parametrize("arguments, error, match", [
    (dict(include=[nn.MaxPool2d]), ValueError, r"include holds torch.nn.modules.pooling.MaxPool2d, which convert never"),
    (dict(exclude=["Linear"]), TypeError, r"exclude must hold torch.nn.Module classes, got 'Linear'"),
    (dict(include=3), TypeError, r"include must be a module class or an iterable of them, not int"),
    (dict(strict=1), TypeError, r"strict must be a bool, not int"),
])
def test_bad_arguments_are_named(arguments, error, match):
    with pytest.raises(error, match=match):
        ops.convert(nn.Linear(2, 2), **arguments)


def test_module_must_be_a_module():
    with pytest.raises(TypeError, match="module must be a torch.nn.Module, not function"):
        ops.convert(lambda x: x)


def test_record_counts_ops_and_their_launches():
    conv = ops.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    with tritonprop.record() as ran:
        ops.relu(conv(x)).sum().backward()
    assert ran.calls("conv2d") == 1 and ran.calls("activation") == 1 and ran.calls("activation_backward") == 1
    assert ran.calls("conv2d_backward_input") == 1 and ran.calls("conv2d_backward_weight") == 1
    assert ran.launches("conv2d") >= 1 and ran.launches() == sum(ran.kernels.values())
    assert ran.calls("linear") == 0
    table = ran.table()
    assert table.splitlines()[0].split() == ["tritonprop", "op", "calls", "launches"]
    assert any(line.split()[:2] == ["conv2d", "1"] for line in table.splitlines())
    # Nothing is counted once the block has ended.
    conv(x)
    assert ran.calls("conv2d") == 1


def test_record_shows_its_table_and_counts_nothing_torch_runs():
    out = io.StringIO()
    with tritonprop.record(show=True, file=out) as ran:
        nn.Linear(2, 2)(torch.randn(1, 2))
    assert ran.ops == {} and out.getvalue().strip() == "no tritonprop op ran"


def test_record_counts_inside_a_compiled_graph():
    linear = ops.Linear(3, 2)
    compiled = torch.compile(linear, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 3)
    compiled(x)  # compiles: shape inference runs on fake tensors, which is not a run
    with tritonprop.record() as ran:
        compiled(x)
    assert ran.calls("linear") == 1 and ran.launches("linear") >= 1
