"""
Average the weights of several checkpoints of one model (a "model soup", Wortsman et al., 2022).

Runs fine-tuned from the same weights, with other seeds, augmentations or loss weights, end in
one basin of the loss, and the mean of their weights often denoises better than any one of
them, at no cost at inference. The checkpoints must share the architecture and audio settings;
the result names every checkpoint it averages (ckpt["averaged_from"]: path, epoch, validation
score, code version, training flags, the runs it started from) and keeps what they learned from (ckpt["data"]).

    python average.py runs/a/unet.pt runs/b/unet.pt runs/c/unet.pt --out models/soup/unet.pt

Checkpoints taken along one run (stochastic weight averaging, Izmailov et al., 2018) average too. The
mean of BatchNorm's running statistics is not the statistics of the mean weights; --bn-data re-estimates
them from a prepared set's training mixtures:

    python average.py runs/main/snap/*.pt --bn-data data/all --out runs/main/swa.pt
"""
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Subset

from audio import UserError, arg_parser, run_main
from checkpoint import lineage, load_checkpoint, model_from_checkpoint, save_checkpoint
from dataset import MixtureDataset
from unet import ModelConfig


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("models", type=Path, nargs="+", help="checkpoints to average (at least two)")
    p.add_argument("--out", type=Path, required=True, help="where to write the averaged checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file at --out")
    p.add_argument("--bn-data", type=Path, help="a prepared set (prepare_data.py) whose training mixtures "
                   "re-estimate the BatchNorm statistics of the averaged weights")
    p.add_argument("--bn-batches", type=int, default=32, help="batches of --bn-data mixtures to re-estimate them on")
    p.add_argument("--batch-size", type=int, default=16, help="mixtures a batch for --bn-data")
    p.add_argument("--seed", type=int, default=0, help="which --bn-data mixtures (a random draw)")
    args = p.parse_args(argv)
    if len(args.models) < 2:
        p.error("give at least two checkpoints to average")
    if args.bn_batches < 1 or args.batch_size < 1:
        p.error("--bn-batches and --batch-size must be at least 1")
    return args


def average_state(states):
    """The mean of each floating-point tensor (accumulated in float64); counters are taken from the first."""
    return {k: torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}


def average_checkpoints(paths):
    """Read the checkpoints at paths -> (the averaged model, the extra entries its checkpoint keeps)."""
    ckpts = [load_checkpoint(p) for p in paths]
    first = ckpts[0]
    for path, c in zip(paths[1:], ckpts[1:]):
        # compared as ModelConfig: a checkpoint saved before a field existed has that field's default
        if ModelConfig.from_dict(c["model_args"]) != ModelConfig.from_dict(first["model_args"]) or c["audio"] != first["audio"]:
            raise UserError(f"{path} is another model than {paths[0]} (architecture or audio settings differ)")
    model = model_from_checkpoint(first, paths[0])
    model.load_state_dict(average_state([c["model"] for c in ckpts]))
    averaged_from = []
    for path, c in zip(paths, ckpts):
        *earlier, run = lineage(c, path)
        run["config"] = c.get("config", {})
        run["started_from"] = [r["path"] for r in earlier]  # the runs this one was fine-tuned from, oldest first
        averaged_from.append(run)
    data = dict(first.get("data") or {})
    if len({(c.get("data") or {}).get("manifest_md5") for c in ckpts}) > 1:
        data["note"] = "the averaged checkpoints learned from different prepared sets; this is the first one's"
    return model, dict(data=data, averaged_from=averaged_from)


@torch.no_grad()  # running statistics need no autograd graph
def reestimate_batchnorm(model, data_dir, batches, batch_size, seed):
    """Set every BatchNorm layer's running mean and variance to their averages over batches of the training
    mixtures of data_dir (torch.optim.swa_utils.update_bn). -> how many mixtures it used."""
    data = MixtureDataset(data_dir, "train")
    picks = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[: batches * batch_size].tolist()
    update_bn(DataLoader(Subset(data, picks), batch_size=batch_size), model)  # each batch's noisy mixtures
    return len(picks)


def main(argv=None):
    args = parse_args(argv)
    if args.out.exists() and not args.overwrite:
        raise UserError(f"{args.out} exists (pass --overwrite to replace it)")
    model, extra = average_checkpoints(args.models)
    if args.bn_data:
        n = reestimate_batchnorm(model, args.bn_data, args.bn_batches, args.batch_size, args.seed)
        extra["batchnorm_from"] = dict(data_dir=str(args.bn_data), mixtures=n, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, model, **extra)
    print(f"wrote {args.out}: the average of {len(args.models)} checkpoints")


if __name__ == "__main__":
    run_main(main)
