"""A tiny "training" run for the demo: a least-squares fit with numpy, reporting its progress."""

import argparse
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 3))
true_w = np.array([1.5, -2.0, 0.5])
y = x @ true_w + rng.normal(scale=0.1, size=256)
w = np.zeros(3)
for epoch in range(1, args.epochs + 1):
    grad = 2 * x.T @ (x @ w - y) / len(y)
    w -= 0.3 * grad
    loss = float(np.mean((x @ w - y) ** 2))
    print(f"epoch {epoch}/{args.epochs} loss={loss:.4f}", flush=True)
    time.sleep(0.2)
print(f"learned weights: {np.round(w, 2).tolist()} (numpy {np.__version__})")
