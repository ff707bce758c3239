"""PyTorch side of `carve bench forward`: the same batch shape through HF transformers, for a
side-by-side comparison in one run. With --make DIR it first writes a random-weight Llama with the
shapes of SmolLM2-135M (speed does not depend on the weights' values) that carve can load too.

    python3 bench/torch_forward.py --make /tmp/smol --batch 100 --seq 20 --device cuda
"""
import argparse, json, os, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def smollm2_shaped(path):
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)


def ids(batch, seq, vocab):
    # The same LCG as `carve bench forward`, so both run the same prompts.
    s, out = 12345, []
    for _ in range(batch):
        row = []
        for _ in range(seq):
            s = (s * 6364136223846793005 + 1442695040888963407) % 2**64
            row.append((s >> 33) % vocab)
        out.append(row)
    return torch.tensor(out)


def time_kl_step(plain, masked, params, iters, device, forward_name, backward_name):
    """Times a training step of the benches: `plain()` (no gradient) gives the full model's
    last-position logits, `masked()` the circuit's, then KL(full ‖ circuit) is backpropagated to
    `params`. Medians over `iters` steps after one warm-up, printed as a table."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        t0 = time.perf_counter()
        with torch.no_grad():
            full = torch.log_softmax(plain(), -1)
        sync()
        t1 = time.perf_counter()
        loss = torch.nn.functional.kl_div(torch.log_softmax(masked(), -1), full, reduction="batchmean", log_target=True)
        sync()
        t2 = time.perf_counter()
        for p in params:
            p.grad = None
        loss.backward()
        sync()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    step()
    runs = [step() for _ in range(iters)]
    plain_t, fwd, bwd = (sorted(r[i] for r in runs)[len(runs) // 2] for i in range(3))
    print("\n| part | ms | × plain forward |\n|---|---:|---:|")
    for name, t in [("plain forward", plain_t), (forward_name, fwd), (backward_name, bwd), ("training step (forward + backward)", fwd + bwd)]:
        print(f"| {name} | {t * 1e3:.1f} | {t / plain_t:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make")
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seq", type=int, default=20)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--logits-out", help="write the last-position logits of the batch (.safetensors)")
    a = ap.parse_args()
    path = a.model or a.make
    if a.make and not os.path.exists(os.path.join(a.make, "config.json")):
        smollm2_shaped(a.make)
    model = LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager").to(a.device).eval()
    x = ids(a.batch, a.seq, model.config.vocab_size).to(a.device)
    print(f"torch {torch.__version__} on {a.device} ({torch.cuda.get_device_name() if a.device == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"batch {a.batch} x seq {a.seq}, fp32, median of {a.iters}")
    for name, keep in [("all positions", 0), ("last position", 1)]:
        def once():
            t = time.perf_counter()
            with torch.no_grad():
                out = model(x, logits_to_keep=keep).logits
            if a.device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t, out
        once()
        times = sorted(once()[0] for _ in range(a.iters))
        t = times[len(times) // 2]
        print(f"{name:<16} {t:>10.4f} s {a.batch * a.seq / t:>12.0f} tokens/s")
    if a.logits_out:
        from safetensors.torch import save_file
        with torch.no_grad():
            last = model(x, logits_to_keep=1).logits[:, -1, :].float().cpu().contiguous()
        save_file({"logits": last}, a.logits_out)


if __name__ == "__main__":
    main()
