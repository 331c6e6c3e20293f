"""Train the tiny float ViT and Swin-style models on scikit-learn's 8x8 digits (CPU, fixed seeds).

    .venv/bin/python scripts/train_digits.py            # both models -> checkpoints/digits_{vit,swin}.pt
    .venv/bin/python scripts/train_digits.py --arch vit --epochs 5 --out /tmp/ckpt

Each checkpoint holds the architecture, its constructor config, the float32 state dict, the
held-out top-1 and the training time; ``qflash.nn.tiny.load`` reads it back. The models live in
``qflash/nn/tiny.py`` (shared with the tests and ``analysis/accuracy.py``); the data split is
``qflash.nn.tiny.digits()``. Augmentation: random translations by up to one pixel.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import time

import torch
import torch.nn.functional as F

from qflash.nn import tiny

CONFIGS = {
    "vit": dict(embed_dim=64, depth=4, num_heads=4, patch_size=2, mlp_ratio=2.0),
    "swin": dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4, mlp_ratio=2.0),
}
ROOT = pathlib.Path(__file__).resolve().parents[1]


def shift_augment(x, g: torch.Generator):
    """Translate each image by (dy, dx) in {-1, 0, 1}^2, filling with the background value (-1)."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    d = torch.randint(0, 3, (x.shape[0], 2), generator=g)
    rows = (d[:, 0, None] + torch.arange(8))[:, :, None]
    cols = (d[:, 1, None] + torch.arange(8))[:, None, :]
    return padded[torch.arange(x.shape[0])[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def top1(model, x, y, batch: int = 256) -> float:
    model.eval()
    hits = sum((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum().item() for i in range(0, len(y), batch))
    return 100.0 * hits / len(y)


def train(arch: str, epochs: int, seed: int = 0, batch: int = 64, lr: float = 3e-3, log=print):
    """Train one model; returns ``(model, held-out top-1 %, seconds)``."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y, xt, yt = tiny.digits()
    model = tiny.build(arch, **CONFIGS[arch])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(y) / batch)
    warm = steps // 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm))))
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(y), generator=g).split(batch):
            loss = F.cross_entropy(model(shift_augment(x[idx], g)), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            log(f"{arch} epoch {epoch + 1:3d}  loss {total / len(y):.3f}  held-out top-1 {top1(model, xt, yt):.2f} %")
    seconds = time.perf_counter() - start
    return model.eval(), top1(model, xt, yt), seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["vit", "swin", "all"], default="all")
    ap.add_argument("--epochs", type=int, default=None, help="default: 120 (vit), 80 (swin)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "checkpoints")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for arch in (["vit", "swin"] if args.arch == "all" else [args.arch]):
        epochs = args.epochs or {"vit": 120, "swin": 80}[arch]
        model, acc, seconds = train(arch, epochs, args.seed)
        path = args.out / f"digits_{arch}.pt"
        torch.save({"arch": arch, "config": CONFIGS[arch], "state_dict": model.state_dict(), "top1": acc,
                    "train_seconds": round(seconds, 1), "epochs": epochs, "seed": args.seed,
                    "torch": str(torch.__version__)}, path)
        print(f"{arch}: held-out top-1 {acc:.2f} %, trained in {seconds:.0f} s -> {path} "
              f"({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
