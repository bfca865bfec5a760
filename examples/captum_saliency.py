"""Precomputed saliency from a PyTorch model with Captum, as shards ``sat-fast run --saliency-maps`` reads.

    pip install torch captum
    python examples/captum_saliency.py captum_maps
    sat-fast run --saliency-maps captum_maps --masks MASKS --names names.csv --out results

Each ``.npz`` shard holds ``maps`` (N, H, W), ``image_id`` (matched to the masks by id) and ``target`` (the
explained class); write one shard per few thousand images.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients

model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    torch.nn.Linear(8, 3),
).eval()  # fmt: skip  # your model
images = torch.rand(8, 3, 32, 32)  # your images, (N, C, H, W), at their masks' size
image_ids = [f"img{i:03d}" for i in range(len(images))]
targets = model(images).argmax(1)
attributions = IntegratedGradients(model).attribute(images, target=targets, n_steps=16)
out = Path(sys.argv[1] if len(sys.argv) > 1 else "captum_maps")
out.mkdir(parents=True, exist_ok=True)
maps = attributions.sum(1).detach().numpy().astype(np.float32)  # channels summed: one value per pixel
np.savez(out / "part-0000.npz", maps=maps, image_id=np.array(image_ids), target=targets.numpy())
