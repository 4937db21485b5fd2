"""A Hugging Face BERT on tritonprop: attn_implementation="tritonprop" (tritonprop.integrations.transformers)
plus ops.convert, against the same weights on transformers' "sdpa" attention.

The models are tiny and built from a config: nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import tritonprop
from helpers import assert_close, assert_matches
from tritonprop import ops

# Read when transformers (huggingface_hub) is imported: nothing here may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"

if importlib.util.find_spec("transformers") is None:
    pytest.skip("transformers is not installed", allow_module_level=True)

# First: it imports torchvision through tritonprop.torchvision_import before transformers, which
# otherwise fails on torchvision beside the CPU build of torch.
from tritonprop.integrations import transformers as tritonprop_transformers  # noqa: E402
from transformers import AttentionInterface, BertConfig, BertModel  # noqa: E402
from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask  # noqa: E402

# fp32 parity is checked in full precision (tests/conftest.py: strict_float32).
pytestmark = pytest.mark.usefixtures("strict_float32")

NAME = tritonprop_transformers.register()
SIZES = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50,
             max_position_embeddings=16)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
BATCH, LENGTH = 2, 5


def bert_pair(**config):
    """A BertModel on sdpa, and its twin with the same weights on tritonprop's attention, converted."""
    reference = BertModel(BertConfig(**SIZES, **config, attn_implementation="sdpa"))
    twin = BertModel(BertConfig(**SIZES, **config, attn_implementation=NAME))
    twin.load_state_dict(reference.state_dict())
    return reference, ops.convert(twin)


def padded_attention_mask():
    """Transformers' 2-D mask, 1 = a token: the last sequence ends in two pads."""
    mask = torch.ones(BATCH, LENGTH, dtype=torch.long)
    mask[-1, -2:] = 0
    return mask


def count(model, cls):
    return sum(isinstance(module, cls) for module in model.modules())


def spy_on_attention(monkeypatch) -> list:
    """The keyword arguments of every call the integration makes to ops.scaled_dot_product_attention."""
    calls = []
    attention = ops.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return attention(*args, **kwargs)

    monkeypatch.setattr(ops, "scaled_dot_product_attention", spy)
    return calls


def test_import_tritonprop_imports_no_transformers():
    # A fresh interpreter: this one has imported transformers already.
    program = ("import sys, tritonprop, tritonprop.integrations; "
               "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"import tritonprop imported {result.stdout.strip()}"


def test_register_is_idempotent_and_registers_the_sdpa_masks():
    assert tritonprop_transformers.register() == NAME == "tritonprop"
    assert AttentionInterface()[NAME] is tritonprop_transformers.attention_forward
    # Without a mask builder under our name transformers would build no mask, and padding would be attended.
    assert AttentionMaskInterface()[NAME] is sdpa_mask


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bert_matches_sdpa_and_runs_on_our_kernels(mode):
    """Outputs and every gradient match, with padding (a 4-D bool mask); each Linear, LayerNorm and
    attention of the forward is ours. Dropout probabilities are 0 in both modes: our random streams
    are not torch's."""
    reference, twin = bert_pair(**NO_DROPOUT)
    embeddings = torch.randn(BATCH, LENGTH, SIZES["hidden_size"])
    weights = torch.randn(BATCH, LENGTH, SIZES["hidden_size"]), torch.randn(BATCH, SIZES["hidden_size"])
    results = []
    for model in (reference, twin):
        model.train(mode == "train")
        inputs_embeds = embeddings.clone().requires_grad_()
        with tritonprop.record() as ran:
            out = model(inputs_embeds=inputs_embeds, attention_mask=padded_attention_mask())
        ((out.last_hidden_state * weights[0]).sum() + (out.pooler_output * weights[1]).sum()).backward()
        results.append((out, inputs_embeds.grad, ran))
    (expected, expected_grad, _), (actual, actual_grad, ran) = results
    assert_close(actual.last_hidden_state, expected.last_hidden_state, name="last_hidden_state")
    assert_close(actual.pooler_output, expected.pooler_output, name="pooler_output")
    assert_close(actual_grad, expected_grad, name="gradient of inputs_embeds")
    for (name, theirs), ours in zip(reference.named_parameters(), twin.parameters()):
        assert (ours.grad is None) == (theirs.grad is None), name
        if theirs.grad is not None:
            assert_close(ours.grad, theirs.grad, name=f"gradient of {name}")
    assert ran.calls("linear") == count(reference, torch.nn.Linear) > 0
    assert ran.calls("layer_norm") == count(reference, torch.nn.LayerNorm) > 0
    assert ran.calls("attention") == SIZES["num_hidden_layers"]


def test_causal_bert_matches_sdpa(monkeypatch):
    """A decoder without padding: transformers passes no mask, and our kernel's is_causal does the
    masking (gradients under is_causal are checked on the attention function below)."""
    reference, twin = bert_pair(**NO_DROPOUT, is_decoder=True)
    attention_calls = spy_on_attention(monkeypatch)
    input_ids = torch.randint(0, SIZES["vocab_size"], (BATCH, LENGTH))
    reference.eval()
    twin.eval()
    with torch.no_grad(), tritonprop.record() as ran:
        expected = reference(input_ids=input_ids).last_hidden_state
        actual = twin(input_ids=input_ids).last_hidden_state
    assert_close(actual, expected, name="last_hidden_state")
    assert ran.calls("attention") == SIZES["num_hidden_layers"]
    assert len(attention_calls) == SIZES["num_hidden_layers"]
    assert all(call["attn_mask"] is None and call["is_causal"] for call in attention_calls)


def test_bert_dropout_runs_on_our_kernels(monkeypatch):
    """Train mode with dropout: each Dropout module call runs our kernel, and the attention's
    dropout probability reaches our attention kernel."""
    _, twin = bert_pair(hidden_dropout_prob=0.25, attention_probs_dropout_prob=0.25)
    assert all(isinstance(m, ops.Dropout) for m in twin.modules() if isinstance(m, torch.nn.Dropout))
    dropout_calls = []
    for module in twin.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(lambda *_: dropout_calls.append(1))
    attention_calls = spy_on_attention(monkeypatch)
    twin.train()
    with tritonprop.record() as ran:
        out = twin(input_ids=torch.randint(0, SIZES["vocab_size"], (BATCH, LENGTH)),
                   attention_mask=padded_attention_mask())
    assert ran.calls("dropout") == len(dropout_calls) > 0
    assert [call["dropout_p"] for call in attention_calls] == [0.25] * SIZES["num_hidden_layers"]
    assert ran.calls("attention") == SIZES["num_hidden_layers"]
    assert out.last_hidden_state.isfinite().all()


def module_with(**attributes):
    module = torch.nn.Module()
    for name, value in attributes.items():
        setattr(module, name, value)
    return module


def padding_4d(batch, q_length, kv_length):
    """sdpa_mask's form: bool (batch, 1, q, kv), True = may attend; the last sequence's last two keys are pads."""
    mask = torch.ones(batch, 1, q_length, kv_length, dtype=torch.bool)
    mask[-1, ..., -2:] = False
    return mask


# (name, module attributes, query heads, key/value heads, q length, kv length, mask, with position_bias)
CASES = [
    ("grouped, causal", dict(num_key_value_groups=2, is_causal=True), 4, 2, 5, 5, None, False),
    ("grouped, padded", dict(num_key_value_groups=2, is_causal=False), 4, 2, 5, 5, "bool", False),
    ("grouped, one query", dict(num_key_value_groups=2, is_causal=True), 4, 2, 1, 5, "bool", False),
    ("empty static cache prefill", dict(is_causal=True), 2, 2, 3, 6, None, False),
    ("additive mask", dict(is_causal=False), 2, 2, 5, 5, "float", False),
    ("position bias, padded", dict(is_causal=False), 2, 2, 5, 5, "bool", True),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_attention_function_matches_transformers_sdpa(case):
    """The function itself against sdpa_attention_forward: GQA, is_causal, the masks and position_bias
    (transformers' T5-style learned bias, which gets a gradient)."""
    _, attributes, heads, kv_heads, q_length, kv_length, mask_kind, with_bias = case
    module = module_with(**attributes)
    query = torch.randn(BATCH, heads, q_length, 8, requires_grad=True)
    key = torch.randn(BATCH, kv_heads, kv_length, 8, requires_grad=True)
    value = torch.randn(BATCH, kv_heads, kv_length, 8, requires_grad=True)
    mask = None if mask_kind is None else padding_4d(BATCH, q_length, kv_length)
    if mask_kind == "float":
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    bias = torch.randn(1, heads, q_length, kv_length, requires_grad=True) if with_bias else None

    def attention(function):
        return lambda q, k, v, bias: function(module, q, k, v, mask, scaling=0.3, position_bias=bias)[0]

    out = assert_matches(attention(tritonprop_transformers.attention_forward),
                         {"transformers sdpa": attention(sdpa_attention_forward)}, query, key, value, bias)
    assert out.shape == (BATCH, q_length, heads, 8) and out.is_contiguous()


def test_output_attentions_is_refused_by_name():
    _, twin = bert_pair(**NO_DROPOUT)
    twin.eval()
    with pytest.raises(NotImplementedError, match="output_attentions"):
        twin(input_ids=torch.randint(0, SIZES["vocab_size"], (BATCH, LENGTH)), output_attentions=True)


@pytest.mark.parametrize("argument, value", [("softcap", 50.0), ("s_aux", torch.zeros(2)), ("window_size", (2, 2))])
def test_arguments_that_change_attention_are_refused_by_name(argument, value):
    q = k = v = torch.randn(1, 2, 3, 8)
    with pytest.raises(NotImplementedError, match=argument):
        tritonprop_transformers.attention_forward(module_with(), q, k, v, None, **{argument: value})


def test_arguments_the_mask_already_encodes_are_accepted():
    q = k = v = torch.randn(1, 2, 3, 8)
    arguments = dict(sliding_window=2, position_ids=torch.arange(3)[None], output_attentions=False)
    out, weights = tritonprop_transformers.attention_forward(module_with(is_causal=True), q, k, v, None, **arguments)
    assert weights is None
    assert_close(out, sdpa_attention_forward(module_with(is_causal=True), q, k, v, None, **arguments)[0])


def test_bad_inputs_are_refused_by_name():
    q = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="query must be a 4-D tensor"):
        tritonprop_transformers.attention_forward(module_with(), q, q, q, None)
    q = torch.randn(1, 2, 3, 8)
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor"):
        tritonprop_transformers.attention_forward(module_with(), q, q, q, object())
