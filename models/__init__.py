"""Models built only on tritonprop.ops (the CNN, the RNN name classifier, the Transformer, the char LM)."""
