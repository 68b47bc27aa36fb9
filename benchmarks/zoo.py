"""The zoo: every model in minseg trained on CamVid tiny with one recipe, measured on one machine -> docs/zoo.md.

    python benchmarks/zoo.py                              # the full table (about an hour on 2 cores, docs/zoo.md)
    python benchmarks/zoo.py --smoke                      # 1 epoch on 16 images, into a temp dir
    python benchmarks/zoo.py --doc-only --notes notes.md  # rewrite zoo.md from the saved results
    python benchmarks/zoo.py --import-doc                 # rebuild the saved results from the committed zoo.md

One recipe for every model, the CamVid example's: AdamW (weight decay 0.01), a one-cycle schedule peaking at lr
3e-3, batch 8, random horizontal flips, the example's split (every 5th image validates: 80 train, 20 valid), seed 0
and the same number of epochs for all. Each model is trained in turn, evaluated once at the end (validation pixel
accuracy and mean IoU over the 32 classes, as ``Learner.evaluate``), then timed: the median of a few training
steps (AdamW) on one batch of 8 images of 96×128, and of a few eval forwards of ONE 96×128 image. "training time"
counts the training epochs only (no validation in between). PointRend trains with its own loss (``model.loss``).

Results go to ``<out>/zoo_results.json`` after every model, so a stopped run continues where it stopped (models
already there are skipped; ``--redo`` trains the ``--models`` again, ``--fresh`` starts over; a row keeps the date,
commit and command of the run that measured it). The table ``<doc>`` is rewritten from those results at the
end, with the date, the machine and the command, and ``docs/figures.py``'s ``zoo_png`` draws ``img/zoo.png`` beside
it (mean IoU against training time, one labelled point per model). A model below the naive one is flagged in the
table; why, is for the person who ran it to say: ``--notes FILE`` puts their markdown under the table, and the
results keep it for later rewrites.

The results folder is not committed, the table is: ``--import-doc`` reads the table's rows, runs, machine and notes
back into ``zoo_results.json`` (rows already saved there win), so that a checkout can continue the committed zoo.
Imported rows keep the table's rounding and have no final training loss.
"""
import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from _common import median_ms

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "camvid_tiny"
RECIPE = dict(lr=3e-3, weight_decay=1e-2, batch_size=8, seed=0, valid_every=5)
# The same for every model; the whole table trains in about an hour on 2 cores (the run's wall time is in docs/zoo.md).
DEFAULT_EPOCHS = 25

# name: (create name, create options, year of the paper (None: no paper), idea) in the course's order. The
# from-scratch models use the CamVid example's widths (base 16); the segmentation_models family and FCN/PointRend
# use ResNet-18.
ZOO = {
    "naive": ("naive", {"widths": (16, 32, 64, 128)}, None, "conv down, transposed conv up, no skips"),
    "fcn8s": ("fcn8s", {}, 2014, "score maps from 3 depths, learned bilinear x2, added"),
    "unet": ("unet", {"base": 16}, 2015, "skips by concatenation (paper UNet)"),
    "unet_noskip": ("unet", {"base": 16, "skips": False}, None, "the paper UNet, zeros in place of its skips"),
    "segnet_basic": ("segnet_basic", {}, 2015, "decoder unpools with the pooling indices (4 stages)"),
    "segnet": ("segnet", {}, 2015, "the same on VGG-16's shape"),
    "enet": ("enet", {}, 2016, "early downsampling, bottlenecks, dilated/asymmetric convs"),
    "pspnet_resnet18": ("pspnet", {"encoder": "resnet18"}, 2016, "pyramid pooling of the whole image"),
    "deeplabv2_resnet18": ("deeplabv2", {"encoder": "resnet18"}, 2016, "output stride 8, 4 dilated classifiers summed"),
    "linknet": ("linknet", {"base": 16}, 2017, "skips by addition (paper LinkNet)"),
    "unet_resnet18": ("unet", {"encoder": "resnet18"}, 2015, "UNet's decoder on a ResNet-18"),
    "linknet_resnet18": ("linknet", {"encoder": "resnet18"}, 2017, "LinkNet's decoder on a ResNet-18"),
    "fpn_resnet18": ("fpn", {"encoder": "resnet18"}, 2017, "feature pyramid, every level to 1/4, summed"),
    "deeplabv3_resnet18": ("deeplabv3", {"encoder": "resnet18"}, 2017, "atrous convolution + ASPP"),
    "deeplabv3plus_resnet18": ("deeplabv3plus", {"encoder": "resnet18"}, 2018, "ASPP + a light decoder"),
    "pointrend": ("pointrend", {}, 2019, "re-predict the uncertain points (on FPN)"),
}
SMOKE = dict(epochs=1, train_images=16, valid_images=8, runs=1)


# ---------------------------------------------------------------------------------------------
# Data and one model
# ---------------------------------------------------------------------------------------------
def open_data(root, train_images=None, valid_images=None):
    from minseg.data import layouts
    dataset = layouts.fastai(root)
    train, valid = dataset.split(valid_every=RECIPE["valid_every"])
    if train_images is not None:
        train, valid = train.subset(np.arange(train_images)), valid.subset(np.arange(valid_images))
    return dataset, train, valid


def train_and_measure(key, dataset, train, valid, epochs, runs):
    """Build, train and evaluate one model; then time its training step and its inference. A dict of results."""
    import minseg
    import minseg.functional as F
    from minseg.data import DataLoader, RandomHorizontalFlip, channel_stats
    from minseg.models import create
    from minseg.optim import AdamW, OneCycleLR
    from minseg.train import Learner

    name, options, _, _ = ZOO[key]
    mean, std = channel_stats(train)
    train_loader = DataLoader(train, batch_size=RECIPE["batch_size"], shuffle=True, augment=RandomHorizontalFlip(),
                              mean=mean, std=std, seed=RECIPE["seed"])
    valid_loader = DataLoader(valid, batch_size=RECIPE["batch_size"], mean=mean, std=std)
    minseg.manual_seed(RECIPE["seed"])
    model = create(name, dataset.num_classes, **options)
    loss_fn = model.loss if hasattr(model, "loss") and callable(model.loss) else F.cross_entropy
    optimizer = AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    scheduler = OneCycleLR(optimizer, max_lr=RECIPE["lr"], total_steps=epochs * len(train_loader))
    void = dataset.classes.index("Void") if "Void" in dataset.classes else None
    learner = Learner(model, train_loader, valid_loader, loss_fn, optimizer, scheduler,
                      num_classes=dataset.num_classes, void_class=void, progress=False)
    start = time.perf_counter()
    for epoch in range(epochs):
        train_loss = learner.train_one_epoch(description=f"{key} epoch {epoch + 1}/{epochs}")
    training_seconds = time.perf_counter() - start
    results = learner.evaluate()

    images, targets = next(iter(train_loader))
    one_image = images[:1]

    def step():
        optimizer.zero_grad()
        loss_fn(model(images), targets).backward()
        optimizer.step()

    def inference():
        with minseg.no_grad():
            model(one_image)

    model.train()
    step_ms = median_ms(step, runs, warmup=1)
    model.eval()
    inference_ms = median_ms(inference, runs, warmup=1)
    return {"parameters": int(sum(p.size for p in model.parameters())), "epochs": epochs,
            "final_train_loss": float(train_loss), "pixel_accuracy": float(results["pixel_accuracy"]),
            "mean_iou": float(results["mean_iou"]), "training_seconds": training_seconds,
            "step_ms": step_ms, "step_batch": len(images), "inference_ms": inference_ms}


# ---------------------------------------------------------------------------------------------
# Files: results after every model, the table at the end (both written atomically)
# ---------------------------------------------------------------------------------------------
def write_atomically(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def git_commit():
    """The checkout's short commit, with "+edits" when files differ from it; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        edited = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+edits" if edited else "")


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            model = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, no GPU used; Python {platform.python_version()}, " \
           f"NumPy {np.__version__}"


def one_machine(run):
    """Whether every row was measured on the machine the table names (a row's run may name another)."""
    return all(result.get("run", {}).get("machine", run["machine"]) == run["machine"]
               for result in run["results"].values())


def provenance_lines(run):
    """The command behind the table; when its rows come from several runs (a continued zoo), each run and its rows.

    A row of an earlier run keeps that run's date, commit and command (``result["run"]``), and its machine when
    that is not the table's.
    """
    runs = {}
    for key, result in run["results"].items():
        source = result.get("run", run)
        commit = f" at commit {source['commit']}" if source.get("commit") else ""
        elsewhere = source.get("machine", run["machine"])
        where = f" on {elsewhere}" if elsewhere != run["machine"] else ""
        runs.setdefault(f"`{source['command']}`, {source['date']}{commit}{where}", []).append(key)
    if len(runs) == 1:
        return [f"Command: {next(iter(runs))}."]
    machines = "on this machine" if one_machine(run) else "on this machine unless named"
    return [f"The rows come from {len(runs)} runs of this script {machines}:", "",
            *(f"- {described}: {', '.join(keys)}." for described, keys in runs.items())]


def zoo_markdown(run, notes):
    """docs/zoo.md: how it was made, the table (by year), the figure, the models below the naive one, notes."""
    rows = sorted(run["results"].items(), key=lambda item: (ZOO[item[0]][2] or 0, list(ZOO).index(item[0])))
    naive_iou = run["results"].get("naive", {}).get("mean_iou")
    below = [key for key, r in rows if naive_iou is not None and key != "naive" and r["mean_iou"] < naive_iou]
    title = "# The zoo: every minseg model, one recipe" + (", one machine" if one_machine(run) else "")
    lines = [title, "",
             f"Written by `benchmarks/zoo.py` on {run['date']}. Machine: {run['machine']}.", "",
             *provenance_lines(run),
             "", f"Recipe: CamVid tiny, the example's split ({run['train_images']} training and {run['valid_images']} "
             f"validation images of 96×128, 32 classes), {run['epochs']} epoch(s) for every model, AdamW (weight decay "
             f"{RECIPE['weight_decay']}), one-cycle to lr {RECIPE['lr']}, batch {RECIPE['batch_size']}, random "
             f"horizontal flips, seed {RECIPE['seed']}. Pixel accuracy and mean IoU on the validation images after "
             "the last epoch. Step: one AdamW training step on a batch of 8 (median). Inference: an eval forward of "
             "one 96×128 image (median). Training time: the training epochs only.", "",
             "| model | year | idea | parameters | step (ms, batch 8) | inference (ms / image) | pixel accuracy "
             "| mean IoU | training time (s) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, r in rows:
        flag = " (below naive)" if key in below else ""
        lines.append(f"| {key} | {ZOO[key][2] or '—'} | {ZOO[key][3]} | {r['parameters']:,} | {r['step_ms']:.0f} | "
                     f"{r['inference_ms']:.0f} | {r['pixel_accuracy']:.3f} | {r['mean_iou']:.3f}{flag} | "
                     f"{r['training_seconds']:.{0 if r['training_seconds'] >= 10 else 1}f} |")
    lines += ["", "![mean IoU against training time](img/zoo.png)", "", "## Below the naive model", ""]
    lines.append(", ".join(f"`{key}`" for key in below) + "." if below else "None.")
    lines += ["", notes.strip() if notes else "(No notes were written for this run: `--notes FILE` adds them.)", ""]
    return "\n".join(lines)


def docs_figures():
    """docs/figures.py, loaded from its file: the zoo figure is drawn from the table, like every course figure."""
    spec = importlib.util.spec_from_file_location("figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_outputs(run, doc, notes):
    write_atomically(doc, zoo_markdown(run, notes))
    print(f"wrote {doc}")
    figures = docs_figures()
    image = Path(doc).parent / "img" / "zoo.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    figures.zoo_png(Path(doc), image)


def import_doc(markdown):
    """The saved results (``main``'s schema) that ``zoo_markdown`` writes ``markdown`` from: the inverse of the table.

    The header gives the date and machine, the provenance lines each row's run, the recipe line the epochs and the
    split, the table the numbers (as rounded there), and what follows the models below the naive one, the notes.
    """
    written = re.search(r"^Written by `benchmarks/zoo.py` on (.+?)\. Machine: (.+)\.$", markdown, re.M)
    recipe = re.search(r"\((\d+) training and (\d+) validation images .*?\), (\d+) epoch\(s\)", markdown)
    if not written or not recipe:
        raise ValueError("import_doc: the markdown must be a table benchmarks/zoo.py wrote, got no header or recipe")
    run = {"epochs": int(recipe[3]), "smoke": False, "results": {}, "date": written[1], "machine": written[2],
           "commit": None, "command": None, "train_images": int(recipe[1]), "valid_images": int(recipe[2])}
    described = r"`(?P<command>.+)`, (?P<date>\d{4}-\d\d-\d\d \d\d:\d\d UTC)(?: at commit (?P<commit>\S+))?" \
                r"(?: on (?P<machine>.+?))?"
    runs = [(match, None) for match in re.finditer(rf"^Command: {described}\.$", markdown, re.M)]
    runs += [(match, match["keys"].split(", ")) for match in re.finditer(rf"^- {described}: (?P<keys>[\w, ]+)\.$",
                                                                         markdown, re.M)]
    for match, keys in runs:
        source = {"date": match["date"], "commit": match["commit"], "command": match["command"]}
        if match["machine"]:
            source["machine"] = match["machine"]
        for key in keys or ZOO:
            run["results"].setdefault(key, {})["run"] = source
        if source["date"] == run["date"]:  # the run that wrote the table
            run.update(commit=source["commit"], command=source["command"])
    for cells in re.findall(r"^\| (\w+) \| .+? \| .+? \| ([\d,]+) \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+)"
                            r"(?: \(below naive\))? \| ([\d.]+) \|$", markdown, re.M):
        key, parameters, step, inference, accuracy, iou, seconds = cells
        run["results"].setdefault(key, {"run": {}}).update(
            parameters=int(parameters.replace(",", "")), epochs=run["epochs"], final_train_loss=None,
            pixel_accuracy=float(accuracy), mean_iou=float(iou), training_seconds=float(seconds),
            step_ms=float(step), step_batch=RECIPE["batch_size"], inference_ms=float(inference))
    run["results"] = {key: result for key, result in run["results"].items() if "mean_iou" in result}
    notes = markdown.split("## Below the naive model\n\n", 1)[-1].split("\n\n", 1)[-1].strip()
    run["notes"] = None if notes.startswith("(No notes were written") else notes
    return run


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="CamVid tiny folder (fastai layout)")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs for every model (default {DEFAULT_EPOCHS})")
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated subset of: " + ", ".join(ZOO))
    parser.add_argument("--runs", type=int, default=5, help="timed calls for the step and inference medians")
    parser.add_argument("--out", type=Path, default=None, help="folder for zoo_results.json (default runs/zoo)")
    parser.add_argument("--doc", type=Path, default=None, help="the table to write (default docs/zoo.md)")
    parser.add_argument("--notes", type=Path, default=None, help="markdown put under the table (why, where, ...)")
    parser.add_argument("--smoke", action="store_true",
                        help="prove the script: 1 epoch on 16+8 images, 1 timed call, into a temporary folder")
    parser.add_argument("--redo", action="store_true",
                        help="train the --models again even when saved results hold them (the other rows stay)")
    parser.add_argument("--fresh", action="store_true", help="ignore results saved by an earlier run")
    parser.add_argument("--doc-only", action="store_true", help="only rewrite the table from the saved results")
    parser.add_argument("--import-doc", action="store_true",
                        help="only add --doc's rows, runs and notes to the saved results (saved rows win)")
    args = parser.parse_args(argv)
    unknown = [key for key in args.models.split(",") if key not in ZOO]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(ZOO)}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.notes is not None and not args.notes.is_file():
        parser.error(f"--notes {args.notes}: no such file")
    if args.smoke:
        if args.doc is None or args.out is None:
            temporary = Path(tempfile.mkdtemp(prefix="minseg-zoo-smoke-"))
            args.out = args.out or temporary
            args.doc = args.doc or temporary / "zoo.md"
        args.epochs, args.runs = SMOKE["epochs"], SMOKE["runs"]
    if not (args.doc_only or args.import_doc) and not (args.data / "codes.txt").is_file():
        parser.error(f"--data {args.data}: no CamVid tiny there (codes.txt, images/, labels/)")
    args.epochs = args.epochs or DEFAULT_EPOCHS
    args.out = args.out or ROOT / "runs" / "zoo"
    args.doc = args.doc or ROOT / "docs" / "zoo.md"
    return args


def main(argv=None):
    args = parse_args(argv)
    results_path = args.out / "zoo_results.json"
    run = json.loads(results_path.read_text()) if results_path.is_file() and not args.fresh else None
    if args.import_doc:
        imported = import_doc(args.doc.read_text(encoding="utf-8"))
        if run is not None and run["epochs"] != imported["epochs"]:
            sys.exit(f"error: --import-doc: {results_path} holds {run['epochs']} epochs, {args.doc} "
                     f"{imported['epochs']}; pass --fresh to replace the saved results")
        run = run or dict(imported, results={})
        for key, result in imported["results"].items():
            if key not in run["results"]:  # a saved row is newer than the committed table
                run["results"][key] = dict(result, run={"machine": imported["machine"], **result["run"]})
        run["notes"] = run.get("notes") or imported["notes"]
        write_atomically(results_path, json.dumps(run, indent=1) + "\n")
        print(f"wrote {results_path}: {len(run['results'])} rows")
        return 0
    notes = args.notes.read_text(encoding="utf-8") if args.notes else (run or {}).get("notes")
    if args.doc_only:
        if run is None:
            sys.exit(f"error: --doc-only: no results at {results_path}; run the zoo first")
        if args.notes:  # kept for the next rewrite
            write_atomically(results_path, json.dumps(dict(run, notes=notes), indent=1) + "\n")
        write_outputs(run, args.doc, notes)
        return 0
    if run is not None and (run["epochs"] != args.epochs or run["smoke"] != args.smoke):
        sys.exit(f"error: {results_path} holds a run with {run['epochs']} epochs (smoke: {run['smoke']}); "
                 "pass the same --epochs, or --fresh to start over")
    sizes = (SMOKE["train_images"], SMOKE["valid_images"]) if args.smoke else (None, None)
    dataset, train, valid = open_data(args.data, *sizes)
    command = "python benchmarks/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    run = run or {"epochs": args.epochs, "smoke": args.smoke, "results": {}}
    run["notes"] = notes
    for result in run["results"].values():  # rows of an earlier run keep that run's date, commit, command, machine
        result.setdefault("run", {key: run.get(key) for key in ("date", "commit", "command")})
        result["run"].setdefault("machine", run.get("machine"))
    run.update(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine=machine(),
               commit=git_commit(), command=command.strip(), train_images=len(train), valid_images=len(valid))
    for key in args.models.split(","):
        if key in run["results"] and not args.redo:
            print(f"{key}: already in {results_path}, skipped (--redo trains it again)")
            continue
        result = train_and_measure(key, dataset, train, valid, args.epochs, args.runs)
        result["run"] = {key: run[key] for key in ("date", "commit", "command", "machine")}
        run["results"][key] = result
        write_atomically(results_path, json.dumps(run, indent=1) + "\n")
        print(f"{key:<24}{result['parameters']:>12,} params  step {result['step_ms']:6.0f} ms  inference "
              f"{result['inference_ms']:5.0f} ms  pixel acc {result['pixel_accuracy']:.3f}  mIoU "
              f"{result['mean_iou']:.3f}  trained {result['training_seconds']:6.0f} s", flush=True)
    write_outputs(run, args.doc, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
