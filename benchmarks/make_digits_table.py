"""Build the digits-MLP learning-curve table (``hpo_slurm/benchmarks/data/digits_mlp.json.gz``) by
actually training: what ``hpo_slurm.benchmarks.digits`` looks up.

How it was made: scikit-learn's ``load_digits`` (1,797 8x8 images, 10 classes, shipped with
scikit-learn: nothing downloads), pixels scaled to [0, 1], split once with a fixed seed into 1,437
training and 360 validation images (stratified). For every configuration of the grid

    lr            8 values log-spaced 1e-4 .. 1e-1      (10 ** (-4 + 3 k / 7), k = 0..7)
    width         16, 32, 64, 128                       hidden units per layer
    depth         1, 2, 3                               hidden layers (Linear + ReLU each)
    weight_decay  0, 1e-4, 1e-2                         Adam's (coupled, L2) weight decay
    batch_size    32, 128

(8 x 4 x 3 x 3 x 2 = 576 configurations) an MLP 64 -> width (x depth) -> 10 is trained with
``torch.optim.Adam`` (betas 0.9, 0.999) on cross-entropy for ``EPOCHS`` = 30 epochs, reshuffling the
training set every epoch (last batch kept, smaller). After every epoch the table records the
validation loss (mean cross-entropy over the 360 held-out images, model in eval mode) and the
measured wall-clock seconds of that epoch's training (``time.perf_counter`` around the training loop
only, validation excluded); ``loss0`` is the validation loss of the untrained network. Each
configuration is seeded by its index in the grid order below (``torch.manual_seed`` for the
initialisation, a seeded ``torch.Generator`` for the shuffles), with ``torch.set_num_threads(1)``, so
a configuration's losses do not depend on the others or on the order they are trained in.

Stored: losses rounded to 6 significant digits, per-epoch seconds to 4; gzip'd JSON (mtime 0). A
non-finite loss (a diverged run) would be stored as ``DIVERGED_LOSS``; none occurred in the shipped
table.

Rerun (one core, about 5 minutes; needs torch and scikit-learn, not needed to *use* the table):

    python benchmarks/make_digits_table.py                       # rewrites the shipped table
    python benchmarks/make_digits_table.py --out /tmp/t.json.gz  # elsewhere
    python benchmarks/make_digits_table.py --check               # retrain, compare losses with the shipped table

Running it again with the same torch version on the same kind of CPU reproduces the losses exactly
(the shipped table was made with torch 2.13.0+cpu, scikit-learn 1.9.1); the seconds will differ.
"""

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import json
import math
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "hpo_slurm" / "benchmarks" / "data" / "digits_mlp.json.gz"
EPOCHS = 30
SPLIT_SEED = 0
VALIDATION = 360
DIVERGED_LOSS = 100.0
GRID = {
    "lr": [float(f"{10 ** (-4 + 3 * k / 7):.6g}") for k in range(8)],
    "width": [16, 32, 64, 128],
    "depth": [1, 2, 3],
    "weight_decay": [0.0, 1e-4, 1e-2],
    "batch_size": [32, 128],
}
NAMES = tuple(GRID)


def sig(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def load_data():
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.data.astype("float32") / 16.0
    y = data.target.astype("int64")
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=VALIDATION, random_state=SPLIT_SEED,
                                                      stratify=y)
    return (torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_val),
            torch.from_numpy(y_val))


def train(config: dict, seed: int, data) -> dict:
    import torch
    from torch import nn

    x_train, y_train, x_val, y_val = data
    torch.manual_seed(seed)
    layers, width_in = [], x_train.shape[1]
    for _ in range(config["depth"]):
        layers += [nn.Linear(width_in, config["width"]), nn.ReLU()]
        width_in = config["width"]
    model = nn.Sequential(*layers, nn.Linear(width_in, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    n, batch = x_train.shape[0], config["batch_size"]

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            value = float(loss_fn(model(x_val), y_val))
        model.train()
        return sig(value, 6) if math.isfinite(value) else DIVERGED_LOSS

    loss0, losses, seconds = validate(), [], []
    for _ in range(EPOCHS):
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        for first in range(0, n, batch):
            index = order[first:first + batch]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x_train[index]), y_train[index]).backward()
            optimizer.step()
        seconds.append(sig(time.perf_counter() - start, 4))
        losses.append(validate())
    return {"loss0": loss0, "loss": losses, "seconds": seconds}


def build(verbose: bool = True) -> dict:
    import sklearn
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    data = load_data()
    configs = [dict(zip(NAMES, values)) for values in itertools.product(*GRID.values())]
    rows, start = [], time.time()
    for seed, config in enumerate(configs):
        rows.append({**config, **train(config, seed, data)})
        if verbose and (seed + 1) % 48 == 0:
            print(f"{seed + 1}/{len(configs)} configurations, {time.time() - start:.0f} s", file=sys.stderr)
    return {
        "format": 1,
        "description": "Validation cross-entropy of an MLP on scikit-learn's digits after each epoch, "
                       "with measured seconds per epoch (benchmarks/make_digits_table.py).",
        "epochs": EPOCHS,
        "optimizer": "Adam (torch.optim.Adam, betas 0.9/0.999, coupled L2 weight_decay)",
        "grid": GRID,
        "names": list(NAMES),
        "split": {"train": int(data[0].shape[0]), "validation": int(data[2].shape[0]), "seed": SPLIT_SEED},
        "versions": {"torch": torch.__version__, "sklearn": sklearn.__version__},
        "configs": rows,
    }


def write(table: dict, path: Path) -> None:
    text = json.dumps(table, separators=(",", ":")).encode()
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as handle:
        handle.write(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the table (default {OUT})")
    parser.add_argument("--check", action="store_true",
                        help="retrain and compare the losses with the table at --out instead of writing it")
    args = parser.parse_args(argv)
    table = build()
    if not args.check:
        write(table, args.out)
        print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes, {len(table['configs'])} configurations)")
        return 0
    old = json.loads(gzip.decompress(args.out.read_bytes()))
    differ = [i for i, (a, b) in enumerate(zip(old["configs"], table["configs"]))
              if (a["loss0"], a["loss"]) != (b["loss0"], b["loss"])]
    same = len(old["configs"]) == len(table["configs"]) and not differ
    print("losses reproduced exactly" if same else f"{len(differ)} configurations differ: {differ[:10]}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
