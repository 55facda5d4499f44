"""``odkit train``: train a detector (single process, or DDP under ``torchrun``)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Train a detector from scratch on a dataset.

DATA takes the forms of `odkit data check`: a COCO json (used for both train and val), a VOC
root (splits from ImageSets/Main/<split>.txt), a YOLO data.yaml (its train/val keys) or an odkit
dataset YAML {format, train, val, names}. The data check runs first; training refuses to start
on errors it cannot repair and prints the report.

Outputs go to <project>/<name>/ (default runs/train): an existing directory is never
overwritten: the run goes to runs/train2, runs/train3, ... instead, unless --exist-ok reuses the
directory as is. Files: args.yaml, metrics.csv, checkpoint.pt (every epoch, atomic),
weights/{best,last}.safetensors + .json sidecars (EMA weights; best by mAP50-95 on val),
predictions.json (COCO results of the best weights on val), plots/*.png.

Distributed: `torchrun --nproc_per_node=N -m odkit train ...` uses DistributedDataParallel
(gloo on CPU, nccl on CUDA); --batch is per process. Each rank predicts its share of the val
images, predictions are all-gathered and rank 0 evaluates the full set.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a detector", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    p.set_defaults(func=handler)


def add_train_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--data", help="dataset: COCO json, VOC root, YOLO data.yaml or odkit dataset YAML (not needed with --resume)")
    a("--model", default="yolox-nano", help="model name from the zoo (default yolox-nano; see `odkit info`)")
    a("--img", type=int, default=416, help="square network input size in pixels, multiple of 32 (default 416)")
    a("--epochs", type=int, default=100,
      help="number of epochs (default 100); with --time, the upper bound of the fitted plan")
    a("--batch", type=int, default=16, help="images per batch per process (default 16)")
    a("--time", type=float, default=None, metavar="MIN",
      help="wall-clock budget in minutes: after the first epoch the number of epochs is fitted to the "
           "measured epoch time (capped by --epochs) and the cosine schedule, EMA and the no-aug tail are "
           "re-planned; training also stops early if the next epoch would overrun")
    a("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA if available)")
    a("--workers", type=int, default=None,
      help="data loader worker processes (default: half the cores on CPU, cores-1 up to 8 on CUDA; 0 = main process)")
    a("--project", default="runs", help="parent directory of run directories (default runs)")
    a("--name", default="train", help="run name: outputs go to <project>/<name>, auto-incremented if it exists")
    a("--exist-ok", action="store_true", help="reuse <project>/<name> if it exists instead of incrementing")
    a("--resume", nargs="?", const="last", default=None, metavar="RUN",
      help="continue a run exactly from its checkpoint.pt: a run directory, a checkpoint path, or nothing "
           "for the most recent run under --project; the run's saved settings are used (--device/--workers "
           "may change)")
    a("--amp", action="store_true",
      help="mixed precision: fp16 autocast + grad scaler on CUDA, bf16 autocast on CPU (slow on CPUs without "
           "AVX512-BF16/AMX, such as AVX2-only ones; a warning says so)")
    a("--optimizer", choices=["sgd", "adamw"], default="sgd",
      help="sgd (momentum 0.9, Nesterov, default) or adamw; weight decay skips norms and biases")
    a("--lr", type=float, default=None,
      help="peak learning rate (default 0.01*batch/64 for SGD, 0.002*batch/64 for AdamW)")
    a("--weight-decay", type=float, default=None, help="weight decay (default 5e-4 SGD, 0.05 AdamW)")
    a("--schedule", choices=["cos", "linear"], default="cos", help="decay after warm-up (default cos)")
    a("--warmup-epochs", type=float, default=3.0,
      help="linear warm-up length in epochs (default 3; at most 20%% of the run, 1 epoch with --time)")
    a("--seed", type=int, default=0, help="random seed (sample order, augmentation, init)")
    a("--val-interval", type=int, default=1, help="validate every N epochs (and always after the last)")
    a("--no-aug-epochs", type=int, default=15,
      help="last N epochs without mosaic/affine/mixup and with the L1 box loss (default 15; with --time at "
           "most a third of the fitted epochs)")
    a("--mosaic", type=float, default=1.0, help="mosaic probability (default 1.0)")
    a("--mixup", type=float, default=0.0, help="mixup probability (default 0; YOLOX-nano recipe)")
    a("--multiscale", action="store_true", help="multi-scale training: input size +/- 3 x 32 px every 10 batches")
    a("--cache", type=float, default=0.0, metavar="GB", help="keep resized training images in RAM, up to GB")
    a("--no-ema", action="store_true", help="disable the EMA of weights (evaluate the raw weights)")
    a("--clip-grad", type=float, default=10.0, help="gradient-norm clip (0 = off; default 10)")
    a("--train-split", default=None,
      help="train split: VOC ImageSets/Main name, YOLO / odkit YAML key (default train)")
    a("--val-split", default=None, help="val split, as --train-split (default val)")
    a("--format", default=None, help="dataset format (default: detected; see `odkit data check --help`)")
    a("--strict", action="store_true",
      help="refuse to train on any data warning or undecodable image (default: undecodable images are left out, named)")
    a("--deterministic", action="store_true",
      help="torch.use_deterministic_algorithms + fixed seeds + workers 0: a resumed run then ends with "
           "exactly the weights of an uninterrupted one (CPU)")
    a("--threads", type=int, default=None, help="torch threads (default: cores / processes on this machine)")
    a("--no-plots", action="store_true", help="skip the PNG plots")


def config_from_args(args: argparse.Namespace) -> object:
    from odkit.engine.config import TrainConfig

    return TrainConfig(
        data=args.data or "", model=args.model, img=args.img, epochs=args.epochs, batch=args.batch,
        time=args.time, device=args.device, workers=args.workers, project=args.project, name=args.name,
        exist_ok=args.exist_ok, resume=args.resume, amp=args.amp, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        seed=args.seed, val_interval=args.val_interval, no_aug_epochs=args.no_aug_epochs, mosaic=args.mosaic,
        mixup=args.mixup, multiscale=args.multiscale, cache=args.cache, ema=not args.no_ema,
        clip_grad=args.clip_grad, train_split=args.train_split, val_split=args.val_split, format=args.format,
        deterministic=args.deterministic, threads=args.threads, plots=not args.no_plots,
        strict_data=args.strict,
    )


def handler(args: argparse.Namespace) -> int:
    from odkit.engine.api import train
    from odkit.engine.distributed import env_info
    from odkit.errors import ConfigError

    if not args.data and not args.resume:
        raise ConfigError("odkit train: --data is required (or --resume)")
    result = train(config_from_args(args))
    if env_info().is_main:
        print(result)
        print(f"best weights: {result.best}\nlast weights: {result.last}")
    return 0
