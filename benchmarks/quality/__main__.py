"""Command line of the quality bench.

    python -m benchmarks.quality train unet|dit [--steps N] [--threads T]
    python -m benchmarks.quality distill unet-1step|unet-4step|dit-1step|dit-4step [--steps N] [--threads T]
    python -m benchmarks.quality run [--fast | --students] [--models unet,dit] [--cached dit] [--no-report]
"""
import argparse
import sys

import torch

from . import comfy_setup


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train one model and write its weights")
    train_parser.add_argument("model", choices=["unet", "dit"])
    train_parser.add_argument("--steps", type=int, default=0, help="default: the committed weights' steps")
    train_parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    train_parser.add_argument("--checkpoint-every", type=int, default=250)
    distill_parser = commands.add_parser("distill", help="distil a few-step student from its teacher")
    distill_parser.add_argument("model", choices=["unet-1step", "unet-4step", "dit-1step", "dit-4step"])
    distill_parser.add_argument("--steps", type=int, default=0, help="default: the committed weights' steps")
    distill_parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    run_parser = commands.add_parser("run", help="measure every method on the trained models")
    which = run_parser.add_mutually_exclusive_group()
    which.add_argument("--fast", action="store_true", help="the CI version: fewer prompts, steps, settings")
    which.add_argument("--students", action="store_true",
                       help="the distilled students at CFG 1 beside their teachers, on the binding prompts")
    run_parser.add_argument("--models", default="", help="default: the config's (unet,dit; with --students "
                            "the teachers and their 4- and 1-step students)")
    run_parser.add_argument("--cached", default="", help="models whose runs an earlier `run` saved: reuse them")
    run_parser.add_argument("--no-report", action="store_true", help="only sample and save the runs")
    run_parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    run_parser.add_argument("--output", default=None, help="folder for the results (default benchmarks/results)")
    args = parser.parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    comfy_setup.import_comfy()
    if args.command == "train":
        from . import models, train

        steps = args.steps or models.TRAIN_STEPS[args.model]
        train.train(args.model, models.TrainConfig(steps=steps), checkpoint_every=args.checkpoint_every,
                    log=lambda line: print(line, flush=True))
    elif args.command == "distill":
        from . import distill

        config = distill.DistillConfig(**({"steps": args.steps} if args.steps else {}))
        distill.distil(args.model, config, log=lambda line: print(line, flush=True))
    else:
        import dataclasses

        from . import bench, report

        config = bench.FAST if args.fast else bench.STUDENTS_BENCH if args.students else bench.BenchConfig()
        if args.models:
            config = dataclasses.replace(config, models=tuple(args.models.split(",")))
        results = bench.run(config, comfy_setup.pack_nodes(), log=lambda line: print(line, flush=True),
                            cached=tuple(filter(None, args.cached.split(","))))
        if args.no_report:
            return 0
        prompts, _, _ = bench.evaluation_set(config)
        name = "quality_fast" if args.fast else "quality_students" if args.students else "quality"
        report.write(results, config, prompts, name=name, **({"directory": args.output} if args.output else {}))
        print(f"wrote {name}.md, .json, _samples.png, _tradeoff.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
