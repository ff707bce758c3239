"""PyTorch side of `carve bench train --method edge-prune`: the edge forward of a Llama model written
out in PyTorch as the paper's code does it, and its backward to the gates through autograd, for a
side-by-side comparison in one run.

Writers: the embedding, each head's output (its slice of W_O applied to its z), each MLP's output.
Readers: each head's query input, each KV head's key and value inputs, each MLP's input, the final
logits. Reader r's input is Σ_w z_wr·h_w + (1 − z_wr)·a_w over the writers before it, computed as
carve computes it, Σ_w z_wr·(h_w − a_w) + Σ_w a_w, with one product per layer's readers (a GEMM of
their gates against every earlier writer's output). a_w are per-writer constants (mean ablation),
the gates fractional. KL(full ‖ circuit) at the last position; the backward to the gates only.
Speed does not depend on the weights' or tokens' values: use the random SmolLM2-shaped model of
torch_forward.py and the batch shape carve's bench prints.

    python3 bench/torch_edge_step.py --model /tmp/smol --batch 32 --seq 20
"""
import argparse, resource

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from torch_forward import ids, time_kl_step


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=20)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mix", choices=["cat", "groups"], default="groups",
                    help="cat: the earlier writers' outputs joined, one GEMM per layer's readers; groups: one "
                         "GEMM per earlier layer's writers, added into the readers' inputs in place")
    ap.add_argument("--check", action="store_true", help="first check that every gate at 1 gives the plain forward's logits")
    a = ap.parse_args()
    dev = a.device
    model = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32, attn_implementation="eager").to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = model.config
    L, H, G, d = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size
    hd, eps = d // H, cfg.rms_norm_eps
    B, T = a.batch, a.seq
    x_ids = ids(B, T, cfg.vocab_size).to(dev)
    gen = torch.Generator().manual_seed(0)
    n_writers = 1 + L * (H + 1)
    means = (0.1 * torch.randn(n_writers, d, generator=gen)).to(dev)
    # Gates per layer: the attention readers (H queries, G keys, G values) and the MLP reader, on the
    # writers before them; the logits reader on all. Fractional, as carve's bench sets them.
    def gate(r, w):
        return (0.3 + 0.6 * torch.rand(r, w, generator=gen)).to(dev).requires_grad_(True)
    attn_gates = [gate(H + 2 * G, 1 + l * (H + 1)) for l in range(L)]
    mlp_gates = [gate(1, 1 + l * (H + 1) + H) for l in range(L)]
    out_gate = gate(1, n_writers)
    edges = sum(g.numel() for g in attn_gates + mlp_gates) + out_gate.numel()
    print(f"torch {torch.__version__} on {dev} ({torch.cuda.get_device_name() if dev == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"batch {B} x seq {T}, fp32, {edges} edges, gates fractional, median of {a.iters}")

    def mixed(z, diffs, a_sum):
        # z [R, W] · diffs [W, B·T·d] + Σ a: the R readers' inputs, [R, B, T, d]; diffs is a list
        # of blocks of writers, in order.
        if a.mix == "cat":
            x = z @ torch.cat(diffs)
        else:
            x, at = None, 0
            for blk in diffs:
                zb = z[:, at:at + blk.shape[0]]
                x = zb @ blk if x is None else x.addmm_(zb, blk)
                at += blk.shape[0]
        return x.view(z.shape[0], B, T, d) + a_sum

    def edge_forward():
        lm = model.model
        pos = torch.arange(T, device=dev)[None]
        h = lm.embed_tokens(x_ids)
        cos, sin = lm.rotary_emb(h, pos)
        diffs = [(h - means[0]).reshape(1, -1)]
        a_sum = means[0].clone()
        w = 1
        for l, layer in enumerate(lm.layers):
            at = layer.self_attn
            xin = rms(mixed(attn_gates[l], diffs, a_sum), layer.input_layernorm.weight, eps)
            q_in, k_in, v_in = xin[:H], xin[H:H + G], xin[H + G:]
            wq = at.q_proj.weight.view(H, hd, d)
            wk = at.k_proj.weight.view(G, hd, d)
            wv = at.v_proj.weight.view(G, hd, d)
            q = torch.einsum("hbtd,hed->bhte", q_in, wq)
            k = torch.einsum("gbtd,ged->bgte", k_in, wk)
            v = torch.einsum("gbtd,ged->bgte", v_in, wv)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k = k.repeat_interleave(H // G, dim=1)
            v = v.repeat_interleave(H // G, dim=1)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, hd]
            wo = at.o_proj.weight.view(d, H, hd)
            heads = torch.einsum("bhte,dhe->hbtd", z, wo)  # each head's output, [H, B, T, d]
            m = means[w:w + H]
            diffs.append((heads - m[:, None, None, :]).reshape(H, -1))
            a_sum = a_sum + m.sum(0)
            w += H
            xm = rms(mixed(mlp_gates[l], diffs, a_sum)[0], layer.post_attention_layernorm.weight, eps)
            mlp = layer.mlp.down_proj(F.silu(layer.mlp.gate_proj(xm)) * layer.mlp.up_proj(xm))
            diffs.append((mlp - means[w]).reshape(1, -1))
            a_sum = a_sum + means[w]
            w += 1
        last = mixed(out_gate, diffs, a_sum)[0][:, -1, :]
        return model.lm_head(rms(last, lm.norm.weight, eps))

    if a.check:
        with torch.no_grad():
            saved = [g.clone() for g in attn_gates + mlp_gates + [out_gate]]
            for g in attn_gates + mlp_gates + [out_gate]:
                g.fill_(1.0)
            got = edge_forward()
            want = model(x_ids, logits_to_keep=1).logits[:, -1, :]
            err = ((got - want).abs().max() / want.abs().max()).item()
            print(f"every gate 1 vs the plain forward: max relative difference {err:.2e}")
            assert err < 1e-4, "the edge forward is wrong"
            for g, s in zip(attn_gates + mlp_gates + [out_gate], saved):
                g.copy_(s)

    print(f"mixing: {a.mix}")
    time_kl_step(lambda: model(x_ids, logits_to_keep=1).logits[:, -1, :], edge_forward, attn_gates + mlp_gates + [out_gate],
                 a.iters, dev, "edge forward (autograd graph)", "backward to the gates")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")

if __name__ == "__main__":
    main()
