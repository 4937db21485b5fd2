"""Transformer blocks built from `layers` (tritonprop.ops by default, torch.nn for the twin in the tests).

Pre-norm blocks (LayerNorm before each sub-layer, the residual stream left un-normalised), which
train without a learning-rate warm-up at the small sizes used here:

    SelfAttentionBlock   x + Attn(LN(x)),  then  x + FFN(LN(x))
                         the encoder block (with a key-padding mask) and the decoder-only block
                         of the char LM (with a causal mask)
    DecoderBlock         x + CausalAttn(LN(x)),  x + CrossAttn(LN(x), memory),  x + FFN(LN(x))

    EncoderDecoder       seq2seq: source -> encoder blocks -> memory; target prefix -> decoder blocks
    DecoderOnly          the char LM: tokens -> causal blocks -> next-token logits

Attention is `layers.MultiheadAttention(batch_first=True)` with need_weights=False. Masks follow
torch's MultiheadAttention convention: a boolean True means "may not attend". Token and position
embeddings are torch's `Embedding` (a lookup, not a kernel).
"""
from __future__ import annotations

import torch


def causal_mask(length: int, device) -> torch.Tensor:
    """[length, length] boolean, True above the diagonal: position i may not attend to j > i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


class FeedForward(torch.nn.Module):
    def __init__(self, d_model, d_ff, dropout, layers):
        super().__init__()
        self.up = layers.Linear(d_model, d_ff)
        self.activation = layers.GELU()
        self.down = layers.Linear(d_ff, d_model)
        self.dropout = layers.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.down(self.activation(self.up(x))))


class SelfAttentionBlock(torch.nn.Module):
    def __init__(self, d_model, heads, d_ff, dropout, layers):
        super().__init__()
        self.norm_attention = layers.LayerNorm(d_model)
        self.attention = layers.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.dropout = layers.Dropout(dropout)
        self.norm_ff = layers.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout, layers)

    def forward(self, x, key_padding_mask=None, attn_mask=None):
        h = self.norm_attention(x)
        attended, _ = self.attention(h, h, h, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                     need_weights=False)
        x = x + self.dropout(attended)
        return x + self.ff(self.norm_ff(x))


class DecoderBlock(torch.nn.Module):
    def __init__(self, d_model, heads, d_ff, dropout, layers):
        super().__init__()
        self.norm_self = layers.LayerNorm(d_model)
        self.self_attention = layers.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm_cross = layers.LayerNorm(d_model)
        self.cross_attention = layers.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.dropout = layers.Dropout(dropout)
        self.norm_ff = layers.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout, layers)

    def forward(self, x, memory, memory_padding_mask):
        h = self.norm_self(x)
        attended, _ = self.self_attention(h, h, h, attn_mask=causal_mask(x.shape[1], x.device), need_weights=False)
        x = x + self.dropout(attended)
        h = self.norm_cross(x)
        attended, _ = self.cross_attention(h, memory, memory, key_padding_mask=memory_padding_mask,
                                           need_weights=False)
        x = x + self.dropout(attended)
        return x + self.ff(self.norm_ff(x))


class Embedder(torch.nn.Module):
    """Token embedding plus a learned position embedding (both torch lookups)."""

    def __init__(self, vocab_size, d_model, max_length, dropout, layers, padding_idx=None):
        super().__init__()
        self.tokens = torch.nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.positions = torch.nn.Embedding(max_length, d_model)
        self.dropout = layers.Dropout(dropout)
        self.max_length = max_length

    def forward(self, tokens):
        length = tokens.shape[1]
        if length > self.max_length:
            raise ValueError(f"a sequence of {length} tokens is longer than the model's max_length {self.max_length}")
        positions = torch.arange(length, device=tokens.device)
        return self.dropout(self.tokens(tokens) + self.positions(positions))


class EncoderDecoder(torch.nn.Module):
    def __init__(self, src_vocab, tgt_vocab, *, d_model, heads, d_ff, encoder_layers, decoder_layers,
                 max_src_length, max_tgt_length, dropout, layers, pad=0):
        super().__init__()
        self.pad = pad
        self.src_embed = Embedder(src_vocab, d_model, max_src_length, dropout, layers, padding_idx=pad)
        self.tgt_embed = Embedder(tgt_vocab, d_model, max_tgt_length, dropout, layers, padding_idx=pad)
        self.encoder = torch.nn.ModuleList(SelfAttentionBlock(d_model, heads, d_ff, dropout, layers)
                                           for _ in range(encoder_layers))
        self.encoder_norm = layers.LayerNorm(d_model)
        self.decoder = torch.nn.ModuleList(DecoderBlock(d_model, heads, d_ff, dropout, layers)
                                           for _ in range(decoder_layers))
        self.decoder_norm = layers.LayerNorm(d_model)
        self.head = layers.Linear(d_model, tgt_vocab)

    def encode(self, src):
        """(memory [B, S, d], padding mask [B, S]) of source tokens [B, S]."""
        padding = src == self.pad
        x = self.src_embed(src)
        for block in self.encoder:
            x = block(x, key_padding_mask=padding)
        return self.encoder_norm(x), padding

    def decode(self, memory, padding, tgt_in):
        """Next-token logits [B, T, tgt_vocab] for every prefix of tgt_in [B, T]."""
        x = self.tgt_embed(tgt_in)
        for block in self.decoder:
            x = block(x, memory, padding)
        return self.head(self.decoder_norm(x))

    def forward(self, src, tgt_in):
        memory, padding = self.encode(src)
        return self.decode(memory, padding, tgt_in)

    @torch.no_grad()
    def greedy_decode(self, src, bos: int, length: int):
        """The most likely token at each step, fed back, for `length` steps: [B, length] (BOS excluded)."""
        memory, padding = self.encode(src)
        out = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
        for _ in range(length):
            next_token = self.decode(memory, padding, out)[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, next_token], dim=1)
        return out[:, 1:]


class DecoderOnly(torch.nn.Module):
    def __init__(self, vocab, *, d_model, heads, d_ff, num_layers, max_length, dropout, layers):
        super().__init__()
        self.embed = Embedder(vocab, d_model, max_length, dropout, layers)
        self.blocks = torch.nn.ModuleList(SelfAttentionBlock(d_model, heads, d_ff, dropout, layers)
                                          for _ in range(num_layers))
        self.norm = layers.LayerNorm(d_model)
        self.head = layers.Linear(d_model, vocab)
        self.max_length = max_length

    def forward(self, tokens):
        """Next-token logits [B, T, vocab] of tokens [B, T]."""
        x = self.embed(tokens)
        mask = causal_mask(tokens.shape[1], tokens.device)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        return self.head(self.norm(x))
