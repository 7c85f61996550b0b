#!/usr/bin/env python3
"""Writes a random BF16 Llama checkpoint (config.json, index, N shards) for measuring
`dsc quantize-weights` (peak memory per shard). Standard library only.

usage: make_bf16_checkpoint.py OUT_DIR [--hidden 2048] [--inter 5632] [--layers 4] [--vocab 32000]
"""
import argparse, json, os, struct

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--hidden", type=int, default=2048)
p.add_argument("--inter", type=int, default=5632)
p.add_argument("--layers", type=int, default=4)
p.add_argument("--heads", type=int, default=16)
p.add_argument("--kv-heads", type=int, default=4)
p.add_argument("--vocab", type=int, default=32000)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
h, hd = a.hidden, a.hidden // a.heads
config = {
    "model_type": "llama", "hidden_size": h, "intermediate_size": a.inter,
    "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
    "num_hidden_layers": a.layers, "vocab_size": a.vocab, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
}
json.dump(config, open(os.path.join(a.out, "config.json"), "w"), indent=2)

# High byte of a bf16: keep the sign, exponent near 2^-7 (finite, no NaN/Inf).
HIGH = bytes(((b & 0x80) | 0x3C) for b in range(256))

def bf16(n):
    data = bytearray(os.urandom(2 * n))
    data[1::2] = bytes(data[1::2]).translate(HIGH)
    return data

def shard(tensors, path):
    header, offset = {}, 0
    for name, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + 2 * n]}
        offset += 2 * n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape in tensors:
            n = 1
            for d in shape:
                n *= d
            f.write(bf16(n))

def layer(i):
    pre = f"model.layers.{i}"
    return [
        (f"{pre}.input_layernorm.weight", [h]),
        (f"{pre}.self_attn.q_proj.weight", [h, h]),
        (f"{pre}.self_attn.k_proj.weight", [a.kv_heads * hd, h]),
        (f"{pre}.self_attn.v_proj.weight", [a.kv_heads * hd, h]),
        (f"{pre}.self_attn.o_proj.weight", [h, h]),
        (f"{pre}.post_attention_layernorm.weight", [h]),
        (f"{pre}.mlp.gate_proj.weight", [a.inter, h]),
        (f"{pre}.mlp.up_proj.weight", [a.inter, h]),
        (f"{pre}.mlp.down_proj.weight", [h, a.inter]),
    ]

groups = [[("model.embed_tokens.weight", [a.vocab, h])]]
groups += [layer(i) for i in range(a.layers)]
groups += [[("model.norm.weight", [h]), ("lm_head.weight", [a.vocab, h])]]
weight_map = {}
for k, g in enumerate(groups):
    file = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
    shard(g, os.path.join(a.out, file))
    weight_map.update({name: file for name, _ in g})
json.dump({"metadata": {}, "weight_map": weight_map},
          open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
