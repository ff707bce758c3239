"""PyTorch side of `carve bench train --method node-prune`: the same training step through HF
transformers and autograd, for a side-by-side comparison in one run. Masks on every head (before
the output projection) and every MLP neuron (before the down projection), at the same fractional
values as carve's bench, mixed with zero ablation values as m·x + (1 − m)·a; KL(full ‖ masked) at
the last position; the backward to the masks only (the weights are frozen). Speed does not depend
on the weights' or tokens' values: use the random SmolLM2-shaped model of torch_forward.py and the
batch shape carve's bench prints.

    python3 bench/torch_train_step.py --model /tmp/smol --batch 32 --seq 17
"""
import argparse

import torch
from transformers import LlamaForCausalLM

from torch_forward import ids, time_kl_step


def fractional(n):
    # carve's `fractional_masks`: 0.5 + 0.4·(i mod 7)/7 over the heads, then the neurons.
    return torch.tensor([0.5 + 0.4 * ((i % 7) / 7.0) for i in range(n)], dtype=torch.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=17)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    model = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32, attn_implementation="eager").to(a.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = model.config
    n_layers, n_heads, d_ff = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size
    head_dim = cfg.hidden_size // n_heads
    values = fractional(n_layers * n_heads + n_layers * d_ff).to(a.device)
    heads = values[: n_layers * n_heads].view(n_layers, n_heads).clone().requires_grad_(True)
    neurons = values[n_layers * n_heads:].view(n_layers, d_ff).clone().requires_grad_(True)
    zero_heads = torch.zeros(n_heads, head_dim, device=a.device)
    zero_neurons = torch.zeros(d_ff, device=a.device)
    masked = [False]

    def head_mix(l):
        def hook(_, args):
            if not masked[0]:
                return None
            x = args[0]
            b, t, _ = x.shape
            m = heads[l].view(1, 1, n_heads, 1)
            x = x.view(b, t, n_heads, head_dim) * m + (1 - m) * zero_heads
            return (x.view(b, t, n_heads * head_dim),)
        return hook

    def neuron_mix(l):
        def hook(_, args):
            if not masked[0]:
                return None
            m = neurons[l]
            return (args[0] * m + (1 - m) * zero_neurons,)
        return hook

    for l, layer in enumerate(model.model.layers):
        layer.self_attn.o_proj.register_forward_pre_hook(head_mix(l))
        layer.mlp.down_proj.register_forward_pre_hook(neuron_mix(l))

    x = ids(a.batch, a.seq, cfg.vocab_size).to(a.device)
    print(f"torch {torch.__version__} on {a.device} ({torch.cuda.get_device_name() if a.device == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"batch {a.batch} x seq {a.seq}, fp32, masks on {n_layers * n_heads} heads and {n_layers * d_ff} neurons, median of {a.iters}")

    def logits(mask):
        masked[0] = mask
        return model(x, logits_to_keep=1).logits[:, -1, :]

    time_kl_step(lambda: logits(False), lambda: logits(True), [heads, neurons], a.iters, a.device,
                 "masked forward (autograd graph)", "backward to the masks")

if __name__ == "__main__":
    main()
