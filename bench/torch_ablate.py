"""PyTorch side of `carve bench extract`: ablate's greedy sweep written as the paper's code runs it,
one full forward (every position's logits) per candidate with hooks that put the ablation values
in, for a side-by-side comparison of time and decisions.

`carve bench extract --save-sweep FILE` writes the sweep it ran: the options, the token ids of the
discovery and patching prompts (and the corrupted ones, for resample ablation), and the reference
implementation's decisions. This script measures its own ablation values from those prompts,
runs the sweep (layers from the last down, each layer's heads in order, then its MLP; a component
goes when KL(P ‖ P_{S∪{c}}) − KL_cur < α, mean KL over the discovery prompts at their last
position) and checks that it takes carve's decisions. It exits 1 when they differ.

    carve bench extract --model DIR --task ioi --alpha 0.005 --mlps --discovery 16 --save-sweep /tmp/sweep.json
    python3 bench/torch_ablate.py --model DIR --inputs /tmp/sweep.json --device cuda

DIR is a model directory transformers loads (Llama or GPT-2), the same weights carve ran.
"""
import argparse, json, sys, time

import torch
from transformers import AutoModelForCausalLM


def sites(model):
    """Per layer: the module whose input is the heads' concatenated outputs before the output
    projection (z), and the MLP block."""
    if hasattr(model, "model") and hasattr(model.model, "layers"):  # Llama
        return [(l.self_attn.o_proj, l.mlp) for l in model.model.layers]
    if hasattr(model, "transformer") and hasattr(model.transformer, "h"):  # GPT-2
        return [(b.attn.c_proj, b.mlp) for b in model.transformer.h]
    sys.exit(f"{type(model).__name__}: only Llama and GPT-2 models are supported")


def padded(prompts, device):
    """Right-padded ids, the attention mask and the lengths (padding never reaches a real position:
    attention is causal)."""
    seq = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), seq, dtype=torch.long)
    mask = torch.zeros(len(prompts), seq, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p)
        mask[i, : len(p)] = 1
    return ids.to(device), mask.to(device), torch.tensor([len(p) for p in prompts], device=device)


class Hooks:
    """Captures every layer's z and MLP output, or replaces the ablated components' values."""

    def __init__(self, model, n_heads):
        self.n_heads, self.capture, self.ablated, self.values = n_heads, None, set(), None
        for l, (proj, mlp) in enumerate(sites(model)):
            proj.register_forward_pre_hook(self.z_hook(l))
            mlp.register_forward_hook(self.mlp_hook(l))

    def z_hook(self, l):
        def hook(_, args):
            x = args[0]
            if self.capture is not None:
                self.capture[("z", l)] = x.detach()
            heads = [h for h in range(self.n_heads) if ("head", l, h) in self.ablated]
            if not heads:
                return None
            b, t, d = x.shape
            x = x.view(b, t, self.n_heads, d // self.n_heads).clone()
            for h in heads:
                if self.values is None:  # zero ablation
                    x[:, :, h, :] = 0
                else:
                    v = self.values[("z", l)]
                    x[:, :, h, :] = v.view(*v.shape[:-1], self.n_heads, d // self.n_heads)[..., h, :]
            return (x.view(b, t, d),)
        return hook

    def mlp_hook(self, l):
        def hook(_, args, out):
            if self.capture is not None:
                self.capture[("mlp", l)] = out.detach()
            if ("mlp", l) not in self.ablated:
                return None
            if self.values is None:  # zero ablation
                return torch.zeros_like(out)
            return self.values[("mlp", l)].expand_as(out).clone()
        return hook


def last_logprobs(model, ids, mask, lens):
    # The paper's loop: the full forward with every position's logits, then each prompt's last.
    logits = model(ids, attention_mask=mask).logits
    last = logits[torch.arange(len(lens), device=ids.device), lens - 1]
    return torch.log_softmax(last.float(), -1)


def mean_kl(p_log, q_log):
    return (p_log.exp().double() * (p_log.double() - q_log.double())).sum(-1).mean().item()


def ablation_values(model, hooks, sweep, kind, device, seq):
    """a for every site: zero, the mean over the patching prompts' real positions (one row, or a
    row per position), or each discovery prompt's own corrupted activations."""
    if kind == "zero":
        return None
    prompts = sweep["corrupted"] if kind == "resample" else sweep["patching"]
    if not prompts:
        sys.exit(f"{kind} ablation needs {'corrupted' if kind == 'resample' else 'patching'} prompts; the file has none")
    ids, mask, _ = padded(prompts, device)
    hooks.capture = {}
    with torch.no_grad():
        model(ids, attention_mask=mask)
    cap, hooks.capture = hooks.capture, None
    out = {}
    w = mask.unsqueeze(-1).double()
    for key, x in cap.items():
        x = x.double()
        if kind == "resample":
            out[key] = x.float()
        elif kind == "mean":
            out[key] = ((x * w).sum((0, 1)) / w.sum()).float()
        else:  # mean-per-position: a row per position, over the prompts that have it
            if x.shape[1] < seq:
                sys.exit(f"per-position means cover {x.shape[1]} positions, but a discovery prompt has {seq}")
            out[key] = ((x * w).sum(0) / w.sum(0)).float()[:seq]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True, help="the JSON file `carve bench extract --save-sweep` wrote")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    sweep = json.load(open(a.inputs))
    if sweep.get("format") != "carve-ablate-sweep" or sweep.get("version") != 1:
        sys.exit(f"{a.inputs}: not a sweep written by `carve bench extract --save-sweep` (version 1)")
    opts = sweep["options"]
    if opts.get("neurons"):
        sys.exit("the sweep decides on neurons; this loop decides on heads and MLPs only")
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32, attn_implementation="eager").to(a.device).eval()
    cfg = model.config
    n_layers = cfg.num_hidden_layers
    n_heads = cfg.num_attention_heads
    hooks = Hooks(model, n_heads)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    ids, mask, lens = padded(sweep["discovery"], a.device)
    print(f"torch {torch.__version__} on {a.device} ({torch.cuda.get_device_name() if a.device == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"fp32, task {sweep['task']} · {len(lens)} discovery prompts · α {opts['alpha']} · {opts['ablation']} ablation · "
          f"{'heads and MLPs' if opts['mlps'] else 'heads'}")

    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        hooks.values = ablation_values(model, hooks, sweep, opts["ablation"], a.device, ids.shape[1])
        p = last_logprobs(model, ids, mask, lens)
        forwards, kl_cur, decisions, closest = 1, 0.0, [], float("inf")
        for l in reversed(range(n_layers)):
            for c in [("head", l, h) for h in range(n_heads)] + ([("mlp", l)] if opts["mlps"] else []):
                hooks.ablated.add(c)
                kl_new = mean_kl(p, last_logprobs(model, ids, mask, lens))
                forwards += 1
                accepted = kl_new - kl_cur < opts["alpha"]
                closest = min(closest, abs(kl_new - kl_cur - opts["alpha"]))
                if accepted:
                    kl_cur = kl_new
                else:
                    hooks.ablated.discard(c)
                decisions.append((f"L{l}H{c[2]}" if c[0] == "head" else f"L{l}MLP", kl_new, accepted))
        sync()
        secs = time.perf_counter() - t0

    removed = sum(d[2] for d in decisions)
    print(f"{'implementation':<24} {'time (s)':>10} {'forwards':>9} {'removed':>8} {'KL':>10}")
    print(f"{'PyTorch, paper-style':<24} {secs:>10.2f} {forwards:>9} {removed:>8} {kl_cur:>10.5f}")
    theirs = sweep["decisions"]
    same = [(c, acc) for c, _, acc in decisions] == [(d["component"], d["accepted"]) for d in theirs]
    worst = max((abs(k - d["kl"]) for (c, k, _), d in zip(decisions, theirs) if c == d["component"]), default=0.0)
    print(f"same decisions as carve's: {'yes' if same else 'NO'} ({len(theirs)} in the file; "
          f"largest |KL_new − carve's| where both decided the same component: {worst:.2e}; "
          f"closest call: KL_new − KL_cur within {closest:.2e} of α)")
    if not same:
        for i, ((c, k, acc), d) in enumerate(zip(decisions, theirs)):
            if (c, acc) != (d["component"], d["accepted"]):
                prev = next((x[1] for x in reversed(decisions[:i]) if x[2]), 0.0)
                print(f"first difference at decision {i}, {c}: KL_new − KL_cur = {k - prev:.6g} here, carve's KL_new {d['kl']:.6g} "
                      f"(accepted: here {acc}, carve {d['accepted']}), α {opts['alpha']}")
                break
        sys.exit(1)


if __name__ == "__main__":
    main()
