"""A tiny training under ``accelerate launch`` (or plain python): writes rank 0's loss curve and final weights.

    accelerate launch --multi_gpu --num_processes 2   # no CUDA: gloo on the CPU tests/unit/train/launch_tiny.py --batch 4 --out run2.json
    python tests/unit/train/launch_tiny.py --batch 8 --out run1.json      # same global batch, one process

The loss mixes a pointwise MSE with an in-batch-negatives InfoNCE over the batch gathered across processes
(lab.train.gather_with_grad), so equal curves need both DDP gradient averaging and a correct gather.
"""

import argparse
import json

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    from lab.train import TrainSettings, fit, gather_with_grad

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)                 # [32, 6] queries
    t = torch.randn(32, 4, generator=g)                 # [32, 4] their targets
    data = [{"x": x[i], "t": t[i]} for i in range(32)]

    def collate(items):
        return {"x": torch.stack([d["x"] for d in items]), "t": torch.stack([d["t"] for d in items])}

    def loss_fn(model, batch):
        q = model(batch["x"])                                           # [b, 4]
        qa, ta = gather_with_grad(q), gather_with_grad(batch["t"])      # [B, 4] global batch
        scores = qa @ ta.T                                              # [B, B] in-batch negatives
        nce = torch.nn.functional.cross_entropy(scores, torch.arange(len(qa)))
        mse = torch.nn.functional.mse_loss(qa, ta)
        return {"loss": nce + mse, "nce": nce, "mse": mse}

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    res = fit(model, data, collate, loss_fn, TrainSettings(epochs=2, batch_size=args.batch, lr=0.05,
                                                           scheduler="linear", progress=False, seed=1))
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        out = {"world": dist.get_world_size() if dist.is_initialized() else 1,
               "curve": [{k: r[k] for k in ("step", "loss", "nce", "mse")} for r in res.records()],
               "weights": {k: v.flatten().tolist() for k, v in res.model.state_dict().items()}}
        with open(args.out, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
