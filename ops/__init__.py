"""Drop-in replacements for torch.nn and torch.nn.functional, computed by tritonprop's kernels.

    from tritonprop import ops
    bn = ops.BatchNorm2d(64)                 # instead of torch.nn.BatchNorm2d(64)
    y = ops.batch_norm(x, rm, rv, training=True)   # instead of F.batch_norm
    model = ops.convert(torchvision.models.resnet18())   # an existing model, converted in place
"""
from tritonprop.ops.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, batch_norm
from tritonprop.ops.activations import GELU, ReLU, gelu, relu
from tritonprop.ops.attention import MultiheadAttention, scaled_dot_product_attention
from tritonprop.ops.conv import Conv2d, conv2d, fuse_conv_bn_eval
from tritonprop.ops.cross_entropy import CrossEntropyLoss, LogSoftmax, NLLLoss, cross_entropy, log_softmax, nll_loss
from tritonprop.ops.dropout import Dropout, dropout
from tritonprop.ops.layernorm import LayerNorm, layer_norm
from tritonprop.ops.linear import Linear, linear
from tritonprop.ops.rnn import RNN, RNNCell, rnn, rnn_cell
from tritonprop.ops.lstm import LSTM, LSTMCell, lstm, lstm_cell
from tritonprop.ops.gru import GRU, GRUCell, gru, gru_cell
from tritonprop.ops.transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                                        TransformerEncoderLayer)

__all__ = [
    "batch_norm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "conv2d", "Conv2d", "fuse_conv_bn_eval",
    "dropout", "Dropout", "gelu", "GELU", "relu", "ReLU",
    "layer_norm", "LayerNorm", "linear", "Linear",
    "rnn", "RNN", "rnn_cell", "RNNCell", "lstm", "LSTM", "lstm_cell", "LSTMCell", "gru", "GRU", "gru_cell", "GRUCell",
    "scaled_dot_product_attention", "MultiheadAttention",
    "cross_entropy", "CrossEntropyLoss", "log_softmax", "LogSoftmax", "nll_loss", "NLLLoss",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder", "Transformer",
    "convert",
]

# convert's table is read off the module classes above (each subclasses the torch class it replaces).
from tritonprop.ops.convert import convert  # noqa: E402
