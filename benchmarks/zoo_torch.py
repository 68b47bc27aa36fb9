"""The zoo's PyTorch side: segmentation_models_pytorch's models trained with exactly benchmarks/zoo.py's recipe.

    python benchmarks/zoo_torch.py                # UNet and DeepLabV3+ on ResNet-18
    python benchmarks/zoo_torch.py --seed 1       # a second seed: the noise
    python benchmarks/zoo_torch.py --init minseg  # from minseg's very first weights
    python benchmarks/zoo_torch.py --smoke        # 1 epoch on 16+8 images, temp dir

The question it answers: trained from scratch the same way, does a minseg model reach what the same model reaches
in PyTorch? So everything but the framework is shared. The batches are minseg's own: ``zoo.open_data`` (the
example's split), ``channel_stats`` of the training images, ``DataLoader`` with the recipe's seed, batch size and
``RandomHorizontalFlip``, each batch handed to torch with ``torch.from_numpy``. The model is smp 0.6.0's
(``encoder_weights=None``), whose state dict is the one ``minseg.models.create(name, 32, encoder=...)`` has. The
loss is ``torch.nn.functional.cross_entropy`` with minseg's defaults (ignore_index -100, mean over the counted
pixels; CamVid's Void is a class like the others). AdamW and OneCycleLR are torch's with the arguments minseg's
take (lr 3e-3, weight decay 1e-2, betas (0.9, 0.999), eps 1e-8; one cycle over epochs × batches steps, pct_start
0.3, cosine, div factors 25 and 1e4, β₁ cycled between 0.95 and 0.85); before training, both schedules are run
side by side and the script stops if their lr or β₁ differ at any step. Validation is ``Learner.evaluate`` itself,
fed the torch model's eval-mode logits as NumPy arrays, so pixel accuracy and mean IoU come from the same code.
"training time" counts the training epochs only; "step" is the median of a few AdamW steps on one batch of 8.

What differs: the random numbers, and for some models how the first weights are drawn. ``--init smp`` (the
default) is smp's own initialization after ``torch.manual_seed(seed)``. Its encoder is torchvision's ResNet
(convolutions N(0, 2/fan_out), BatchNorm 1 and 0), the scheme minseg's ``ResNetEncoder`` uses. Its UNet, LinkNet,
FPN and PSPNet then re-initialize decoder and head (Kaiming-uniform for ReLU and Xavier-uniform, biases 0) where
minseg keeps PyTorch's default layer initialization; its DeepLabV3 and DeepLabV3+ do not, so there the schemes
are the same and only the draws differ. ``--init minseg`` loads the weights ``create`` draws after
``minseg.manual_seed(seed)``, the very ones the zoo's run starts from. DeepLabV3+'s dropout draws its masks from
torch's generator either way.

Results go to ``<out>`` (default ``runs/zoo_torch.json``) after every model, one entry per model, seed and init, so
a stopped run continues where it stopped (``--fresh`` starts over). ``--minseg`` adds the zoo's own rows (its
``zoo_results.json``) to the table. torch and smp are comparison points only: minseg and its tests never import them.
"""
import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from _common import SMP_CLASSES, median_ms

import minseg
import minseg.functional as F
from minseg.data import DataLoader, RandomHorizontalFlip, channel_stats
from minseg.models import create
from minseg.optim import AdamW, OneCycleLR
from minseg.train import Learner

try:
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as TF
except ImportError as error:
    sys.exit(f"error: {error}; this comparison needs torch and segmentation-models-pytorch "
             "(pip install torch segmentation-models-pytorch==0.6.0)")

import zoo  # benchmarks/zoo.py, beside this script: the recipe, the data and the file helpers

ROOT = Path(__file__).resolve().parent.parent

# The zoo's models that smp has too: those on an encoder.
MODELS = [key for key, (name, options, _, _) in zoo.ZOO.items() if "encoder" in options and name in SMP_CLASSES]
DEFAULT_MODELS = ("unet_resnet18", "deeplabv3plus_resnet18")
DEFAULT_EPOCHS = 25  # the epochs of the zoo run this one is compared with
THREADS = 2
# minseg.optim.AdamW's defaults, passed to torch's explicitly so that a change on either side shows here.
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


# ---------------------------------------------------------------------------------------------
# The recipe in torch: the schedule checked against minseg's, the model, the training loop
# ---------------------------------------------------------------------------------------------
def torch_optimizer(parameters, total_steps):
    optimizer = torch.optim.AdamW(parameters, lr=zoo.RECIPE["lr"], betas=ADAM_BETAS, eps=ADAM_EPS,
                                  weight_decay=zoo.RECIPE["weight_decay"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=zoo.RECIPE["lr"], total_steps=total_steps)
    return optimizer, scheduler


def both_schedules(total_steps):
    """[(step, minseg lr, torch lr, minseg β₁, torch β₁)] for steps 0 … total_steps, both built as in training."""
    ours = AdamW([minseg.nn.Parameter(np.zeros(1, np.float32))], lr=zoo.RECIPE["lr"],
                 weight_decay=zoo.RECIPE["weight_decay"])
    our_schedule = OneCycleLR(ours, max_lr=zoo.RECIPE["lr"], total_steps=total_steps)
    theirs, their_schedule = torch_optimizer([torch.zeros(1, requires_grad=True)], total_steps)
    rows = []
    for step in range(total_steps + 1):
        ours_group, theirs_group = ours.param_groups[0], theirs.param_groups[0]
        rows.append((step, ours_group["lr"], theirs_group["lr"], ours_group["betas"][0], theirs_group["betas"][0]))
        if step < total_steps:
            ours.step()
            theirs.step()  # no gradients: nothing moves, but torch wants a step before the schedule's
            our_schedule.step()
            their_schedule.step()
    return rows


def check_schedules(total_steps, show=0):
    """Stop unless torch's one-cycle lr and β₁ equal minseg's at every step; print ``show`` sample steps."""
    rows = both_schedules(total_steps)
    worst = max(max(abs(a - b) / b, abs(c - d) / d) for _, a, b, c, d in rows)
    if show:
        print(f"one-cycle over {total_steps} steps, minseg against torch (worst relative difference {worst:.1e}):")
        picks = sorted({0, 1, int(0.3 * total_steps) - 1, int(0.3 * total_steps), total_steps // 2,
                        total_steps - 1, total_steps})
        for step, lr, torch_lr, beta1, torch_beta1 in (rows[k] for k in picks[:show]):
            print(f"  step {step:>4}  lr {lr:.6e} / {torch_lr:.6e}   beta1 {beta1:.6f} / {torch_beta1:.6f}")
    if worst > 1e-9:
        sys.exit(f"error: torch's OneCycleLR differs from minseg's by {worst:.1e} (relative) over {total_steps} "
                 "steps; the recipes no longer match: read minseg/schedule.py and fix torch_optimizer")
    return worst


def build_model(key, num_classes, seed, init):
    """smp's model for the zoo's ``key``, seeded; with init "minseg", holding the weights minseg's create draws."""
    name, options, _, _ = zoo.ZOO[key]
    torch.manual_seed(seed)
    model = getattr(smp, SMP_CLASSES[name])(options["encoder"], encoder_weights=None, classes=num_classes)
    if init == "minseg":
        minseg.manual_seed(seed)
        weights = create(name, num_classes, **options).state_dict()
        model.load_state_dict({entry: torch.from_numpy(value) for entry, value in weights.items()}, strict=True)
    return model


def cross_entropy(logits, targets):
    """minseg's ``F.cross_entropy`` with its defaults, in torch: -100 ignored, the mean over the counted pixels."""
    return TF.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")


def as_torch(images, targets):
    return torch.from_numpy(images.numpy()), torch.from_numpy(targets.numpy())


def train_one_epoch(model, loader, optimizer, scheduler):
    """``Learner.train_one_epoch`` in torch: forward, loss, zero_grad, backward, step, schedule step."""
    model.train()
    total, count = 0.0, 0
    for images, targets in loader:
        images, targets = as_torch(images, targets)
        loss = cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(images)
        count += len(images)
    return total / max(count, 1)


class EvalLogits:
    """The torch model as ``Learner.evaluate`` calls a model: its logits, as a minseg Tensor, without a graph."""

    def __init__(self, model):
        self.model = model

    @property
    def training(self):
        return self.model.training

    def train(self, mode=True):
        self.model.train(mode)

    def eval(self):
        self.model.eval()

    def __call__(self, images):
        with torch.no_grad():
            return minseg.Tensor(self.model(torch.from_numpy(images.numpy())).numpy())


def train_and_measure(key, dataset, train, valid, epochs, runs, seed, init):
    """zoo.train_and_measure with the model, loss and optimizer in torch. A dict of results."""
    mean, std = channel_stats(train)
    train_loader = DataLoader(train, batch_size=zoo.RECIPE["batch_size"], shuffle=True,
                              augment=RandomHorizontalFlip(), mean=mean, std=std, seed=seed)
    valid_loader = DataLoader(valid, batch_size=zoo.RECIPE["batch_size"], mean=mean, std=std)
    model = build_model(key, dataset.num_classes, seed, init)
    optimizer, scheduler = torch_optimizer(model.parameters(), epochs * len(train_loader))
    start = time.perf_counter()
    for _ in range(epochs):
        train_loss = train_one_epoch(model, train_loader, optimizer, scheduler)
    training_seconds = time.perf_counter() - start
    void = dataset.classes.index("Void") if "Void" in dataset.classes else None
    results = Learner(EvalLogits(model), train_loader, valid_loader, F.cross_entropy, optimizer=None,
                      num_classes=dataset.num_classes, void_class=void, progress=False).evaluate()

    images, targets = as_torch(*next(iter(train_loader)))
    one_image = images[:1]

    def step():
        optimizer.zero_grad()
        cross_entropy(model(images), targets).backward()
        optimizer.step()

    def inference():
        with torch.no_grad():
            model(one_image)

    model.train()
    step_ms = median_ms(step, runs, warmup=1)
    model.eval()
    inference_ms = median_ms(inference, runs, warmup=1)
    return {"model": key, "seed": seed, "init": init, "parameters": int(sum(p.numel() for p in model.parameters())),
            "epochs": epochs, "final_train_loss": float(train_loss), "valid_loss": float(results["valid_loss"]),
            "pixel_accuracy": float(results["pixel_accuracy"]), "mean_iou": float(results["mean_iou"]),
            "training_seconds": training_seconds, "step_ms": step_ms, "step_batch": len(images),
            "inference_ms": inference_ms}


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
def table(run, minseg_run=None):
    """Markdown: the torch rows of ``run``, and before each model the zoo's minseg row when ``minseg_run`` has it."""
    lines = ["| model | framework | init | seed | epochs | pixel accuracy | mean IoU | training time (s) "
             "| step (ms, batch 8) | inference (ms / image) |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = sorted(run["results"].values(), key=lambda r: (MODELS.index(r["model"]), r["init"], r["seed"]))
    shown = set()
    for r in rows:
        if minseg_run is not None and r["model"] in minseg_run["results"] and r["model"] not in shown:
            shown.add(r["model"])
            lines.append(row(dict(minseg_run["results"][r["model"]], model=r["model"], init="minseg",
                                  seed=zoo.RECIPE["seed"]), "minseg"))
        lines.append(row(r, f"PyTorch (smp) {THREADS} threads"))
    return "\n".join(lines)


def row(r, framework):
    return (f"| {r['model']} | {framework} | {r['init']} | {r['seed']} | {r['epochs']} | {r['pixel_accuracy']:.3f} | "
            f"{r['mean_iou']:.3f} | {r['training_seconds']:.0f} | {r['step_ms']:.0f} | {r['inference_ms']:.0f} |")


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=zoo.DATA, help="CamVid tiny folder (fastai layout)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated subset of: {', '.join(MODELS)} (default {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--seed", type=int, default=zoo.RECIPE["seed"],
                        help=f"seeds the weights and the batches (default {zoo.RECIPE['seed']}, the zoo's)")
    parser.add_argument("--init", choices=("smp", "minseg"), default="smp",
                        help="smp's own initial weights, or the ones minseg's create draws (default smp)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls for the step and inference medians")
    parser.add_argument("--out", type=Path, default=None, help="results file (default runs/zoo_torch.json)")
    parser.add_argument("--minseg", type=Path, default=None, help="the zoo's zoo_results.json, shown beside")
    parser.add_argument("--smoke", action="store_true",
                        help="prove the script: 1 epoch on 16+8 images, 1 timed call, into a temporary folder")
    parser.add_argument("--fresh", action="store_true", help="ignore results saved by an earlier run")
    args = parser.parse_args(argv)
    args.models = args.models.split(",")
    unknown = [key for key in args.models if key not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    for option in ("epochs", "runs"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1, got {getattr(args, option)}")
    if args.seed < 0:
        parser.error(f"--seed must be an integer >= 0 (the DataLoader's seed), got {args.seed}")
    if args.minseg is not None and not args.minseg.is_file():
        parser.error(f"--minseg {args.minseg}: no such file (the zoo writes runs/zoo/zoo_results.json)")
    if not (args.data / "codes.txt").is_file():
        parser.error(f"--data {args.data}: no CamVid tiny there (codes.txt, images/, labels/)")
    if args.smoke:
        args.out = args.out or Path(tempfile.mkdtemp(prefix="minseg-zoo-torch-smoke-")) / "zoo_torch.json"
        args.epochs, args.runs = zoo.SMOKE["epochs"], zoo.SMOKE["runs"]
    args.out = args.out or ROOT / "runs" / "zoo_torch.json"
    return args


def batches_per_epoch(train):
    return -(-len(train) // zoo.RECIPE["batch_size"])  # the DataLoader keeps the last, smaller batch


def saved_run(path, args):
    run = json.loads(path.read_text()) if path.is_file() and not args.fresh else None
    if run is not None and (run["epochs"] != args.epochs or run["smoke"] != args.smoke):
        sys.exit(f"error: {path} holds a run with {run['epochs']} epochs (smoke: {run['smoke']}); pass the same "
                 "--epochs, another --out, or --fresh to start over")
    return run or {"epochs": args.epochs, "smoke": args.smoke, "results": {}}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(THREADS)
    run = saved_run(args.out, args)
    sizes = (zoo.SMOKE["train_images"], zoo.SMOKE["valid_images"]) if args.smoke else (None, None)
    dataset, train, valid = zoo.open_data(args.data, *sizes)
    if args.smoke:  # the full run's schedule, printed: the smoke run's own has only a few steps
        full_train, _ = dataset.split(valid_every=zoo.RECIPE["valid_every"])
        check_schedules(DEFAULT_EPOCHS * batches_per_epoch(full_train), show=7)
    run["schedule_worst_relative_difference"] = check_schedules(args.epochs * batches_per_epoch(train))
    command = "python benchmarks/zoo_torch.py " + " ".join(argv if argv is not None else sys.argv[1:])
    run.update(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), command=command.strip(),
               machine=f"{zoo.machine()}, torch {torch.__version__} ({THREADS} threads), smp {smp.__version__}",
               train_images=len(train), valid_images=len(valid))
    try:
        for key in args.models:
            entry = f"{key} seed={args.seed} init={args.init}"
            if entry in run["results"]:
                print(f"{entry}: already in {args.out}, skipped")
                continue
            result = train_and_measure(key, dataset, train, valid, args.epochs, args.runs, args.seed, args.init)
            run["results"][entry] = result
            zoo.write_atomically(args.out, json.dumps(run, indent=1) + "\n")
            print(f"{entry:<40} step {result['step_ms']:6.0f} ms  pixel acc {result['pixel_accuracy']:.3f}  mIoU "
                  f"{result['mean_iou']:.3f}  trained {result['training_seconds']:6.0f} s", flush=True)
    except KeyboardInterrupt:
        sys.exit(f"error: interrupted; the models finished so far are in {args.out}, the same command continues")
    minseg_run = json.loads(args.minseg.read_text()) if args.minseg else None
    print(f"\n{run['machine']}; {run['train_images']} training, {run['valid_images']} validation images; "
          f"results in {args.out}\n\n{table(run, minseg_run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
