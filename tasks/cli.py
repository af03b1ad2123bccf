"""``stylepath`` command line: one subcommand per stage, each taking CONFIG + ``--set``.

Exit status: 0 success; 3 some slides (or inverted tiles) failed and the rest completed;
2 fatal error before any work (bad config, unreadable cohort, busy workdir); 1 crash.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.cohort import CohortError
from pipeline.config import Config, ConfigError, load_config
from pipeline.io.files import WorkdirBusyError

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_FATAL = 2
EXIT_PARTIAL = 3

log = logging.getLogger("stylepath")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="YAML config file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set tiling.mpp=0.5 (repeatable)",
    )


def _print_tiling(summary, cfg: Config) -> int:
    print(
        f"tiled {summary.n_slides} slides: {summary.n_ok} ok, {summary.n_failed} failed, "
        f"{summary.n_skipped} unchanged; {summary.n_tiles} tiles "
        f"({summary.n_tiles_read} read now) in {summary.seconds:.1f} s -> {cfg.workdir / 'tiles'}"
    )
    for sid, err in summary.failed.items():
        print(f"  failed {sid}: {err}", file=sys.stderr)
    return EXIT_PARTIAL if summary.n_failed else EXIT_OK


def cmd_tile(args: argparse.Namespace) -> int:
    from tasks.tile import run_tiling

    cfg = load_config(args.config, args.overrides)
    return _print_tiling(run_tiling(cfg), cfg)


def cmd_make_cohort(args: argparse.Namespace) -> int:
    from tasks.make_cohort import make_cohort, make_ct_cohort

    if args.modality == "radiology":
        table = make_ct_cohort(args.out, n_images=args.slides or 240, seed=args.seed)
        print(f"synthetic CT cohort: {table}")
        return EXIT_OK
    table = make_cohort(
        args.out,
        n_slides=args.slides or 16,
        seed=args.seed,
        size_um=args.size_um,
        mpp=args.mpp,
        tumor_fraction=args.tumor_fraction,
        confound=args.confound,
        renderer=args.renderer,
        ink_share=args.ink_share,
    )
    print(f"demo cohort: {table}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from tasks.make_cohort import make_cohort, make_ct_cohort

    overrides = list(args.overrides)
    if args.train_gan:
        overrides.append("inversion.generator=null")  # train workdir/gan from scratch
    cfg = load_config(args.config, overrides)
    if cfg.modality == "radiology":
        table = make_ct_cohort(cfg.cohort.parent, n_images=args.slides or 240, seed=args.seed)
    else:
        table = make_cohort(cfg.cohort.parent, n_slides=args.slides or 16, seed=args.seed)
    print(f"demo cohort: {table}")
    return _run_job(cfg, until=args.until)


def cmd_train_gan(args: argparse.Namespace) -> int:
    from tasks.train_gan import run_train_gan

    cfg = load_config(args.config, args.overrides)
    meta = run_train_gan(cfg, local=args.local)
    out = cfg.workdir / "gan"
    print(f"generator: {out / 'generator.safetensors'} ({meta['preset']}, {meta['kimg']:.1f} kimg)")
    print(f"metrics: {out / 'metrics.parquet'}; samples: {out / 'samples'}")
    return EXIT_OK


def cmd_export_gan(args: argparse.Namespace) -> int:
    from tasks.train_gan import export_best, export_generator, latest_checkpoint

    cfg = load_config(args.config, args.overrides)
    ckpt = args.checkpoint or latest_checkpoint(cfg)
    if args.best:
        meta = export_best(cfg, args.out, half=args.half, metrics_from=ckpt)
        net = meta.get("net", "G_ema")  # best/ folders from before "net" was recorded
        print(f"exported the best snapshot ({net}, {meta['kimg']:.1f} kimg) -> {args.out}")
        return EXIT_OK
    meta = export_generator(
        ckpt, args.out, cfg, half=args.half, with_discriminator=True, net=args.net
    )
    print(f"exported {args.net} of {ckpt.name} ({meta['kimg']:.1f} kimg) -> {args.out}")
    return EXIT_OK


def _lowest(values: dict[str, float], fmt: str, n: int = 3) -> str:
    """The ``n`` lowest per-feature figures of a check, NaN (unmeasurable) first."""
    ranked = sorted(values.items(), key=lambda kv: -math.inf if kv[1] != kv[1] else kv[1])
    return ", ".join(fmt.format(k=k, v=v) for k, v in ranked[:n])


def cmd_gan_quality(args: argparse.Namespace) -> int:
    from tasks.gan_quality import run_gan_quality

    cfg = load_config(args.config, args.overrides)
    report = run_gan_quality(cfg, n=args.n, generator=args.generator)
    for name, c in report["checks"].items():
        if name == "w_linearity":  # features vs w: R² per feature, the bar takes the median
            low = _lowest(c["r2"], "{k} {v:.2f}")
            print(
                f"{name:26s} median R² {c['median_r2']:.2f} (bar >= {c['min_median_r2']}; "
                f"lowest: {low})   {'ok' if c['passed'] else 'FAIL'}"
            )
            continue
        if name == "w_spread":  # constant noise: each feature's SD over the reals'
            low = _lowest(c["sd_ratio"], "{k} x{v:.2f}")
            print(
                f"{name:26s} SD at constant noise / reals' median x{c['median_sd_ratio']:.2f}"
                f" (bar >= x{c['min_median_sd_ratio']}; lowest: {low})   "
                f"{'ok' if c['passed'] else 'FAIL'}"
            )
            continue
        if "real_mean" not in c:  # layout correlation: one value per set
            print(
                f"{name:26s} real {c['real']:9.3f}              samples {c['fake']:9.3f}"
                f"              {'ok' if c['passed'] else 'FAIL'}"
            )
            continue
        print(
            f"{name:26s} real {c['real_mean']:9.4g} ± {c['real_sd']:8.3g}   "
            f"samples {c['fake_mean']:9.4g} ± {c['fake_sd']:8.3g}   "
            f"z {c['z']:+5.2f}  sd x{c['sd_ratio']:4.2f}   "
            f"{'ok' if c['passed'] else 'FAIL'}"
        )
    print(f"SWD x1e3 (mean over levels): {report['swd']['mean']:.1f}")
    print(
        f"quality bar {'passed' if report['passed'] else 'NOT passed'} at {report['kimg']} kimg"
        f" -> {(args.generator or cfg.workdir / 'gan') / 'quality.json'}"
    )
    return EXIT_OK


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from tasks.train_classifier import run_train_classifier

    cfg = load_config(args.config, args.overrides)
    res = run_train_classifier(cfg)
    last = res["metrics"].iloc[-1]
    out = cfg.workdir / "classifier"
    print(
        f"classifier: {out / 'model.pt'} (TorchScript) + model.json; classes "
        f"{res['card']['class_names']}, explains {res['card']['explain']!r}"
    )
    print(
        f"epoch {int(last['epoch'])}: validation AUC {last['val_auc_tile']:.4f} per tile, "
        f"{last['val_auc_slide']:.4f} per slide; accuracy {last['val_acc_tile']:.4f} per tile, "
        f"{last['val_acc_slide']:.4f} per slide; fit {res['fit_seconds']:.0f} s"
    )
    print(f"metrics: {out / 'metrics.parquet'}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from tasks.predict import run_predict

    cfg = load_config(args.config, args.overrides)
    s = run_predict(cfg)
    if s.skipped:
        print(f"predictions unchanged ({s.n_tiles} tiles): {cfg.workdir / 'predictions.parquet'}")
        return EXIT_OK
    print(
        f"scored {s.n_tiles} tiles with {s.model} (explained class {s.explained_class!r}) in "
        f"{s.seconds:.1f} s ({s.tiles_per_s:.0f} tiles/s); "
        f"heatmaps: {', '.join(s.methods) or 'none'}"
    )
    print(f"-> {cfg.workdir / 'predictions.parquet'}, {cfg.workdir / 'heatmaps'}")
    return EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    from tasks.analyze import run_analyze

    cfg = load_config(args.config, args.overrides)
    s = run_analyze(cfg)
    if s.skipped:
        print(f"analysis unchanged -> {s.out}")
        return EXIT_OK
    print(
        f"analysed {s.n_tiles} tiles x {len(s.directions)} directions ({s.n_frames} frames) "
        f"in {s.seconds:.0f} s -> {s.out}"
    )
    if s.n_parts_reused:
        print(
            f"parts kept from earlier runs: {s.n_parts_reused} "
            f"({s.n_parts_rescored} scored by the new classifier)"
        )
    print(f"directions: {', '.join(s.directions)}")
    print(
        f"faithful tiles: {s.n_faithful} of {s.n_tiles}; verdicts: "
        + ", ".join(f"{k} {v}" for k, v in s.verdicts.items())
    )
    for item in s.not_estimable:
        print(f"  not estimable {item['name']}: {item['reason']}", file=sys.stderr)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from tasks.report import run_report

    cfg = load_config(args.config, args.overrides)
    print(f"report: {run_report(cfg)}")
    return EXIT_OK


def _run_job(cfg: Config, force: str | None = None, until: str | None = None) -> int:
    import json

    from tasks.run import run_all

    path = run_all(cfg, force=force, until=until)
    manifest = json.loads(path.read_text())
    code = EXIT_OK
    for st in manifest["stages"]:
        print(f"  {st['name']:17s} {st['status']:8s} {st['seconds']:7.1f} s  {st['reason']}")
        if st["name"] == "tile" and st["summary"].get("failed"):
            code = EXIT_PARTIAL
            for sid, err in st["summary"]["failures"].items():
                print(f"  failed {sid}: {err}", file=sys.stderr)
    print(f"run manifest: {path}")
    report = cfg.workdir / "report" / "index.html"
    if report.is_file():
        print(f"report: {report}")
    return code


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    return _run_job(cfg, force=args.force, until=args.until)


def cmd_train_encoder(args: argparse.Namespace) -> int:
    from tasks.invert import run_train_encoder

    cfg = load_config(args.config, args.overrides)
    meta, trained = run_train_encoder(cfg)
    final = meta.get("final", {})
    how = f"trained in {meta['seconds']:.0f} s" if trained else "cached, unchanged"
    print(
        f"encoder for {meta['generator']}: {how}; {meta['steps']} steps, final "
        + ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k != "seconds")
    )
    print(f"-> {cfg.workdir / 'inversion' / 'encoder.safetensors'}")
    return EXIT_OK


def cmd_invert(args: argparse.Namespace) -> int:
    from tasks.invert import InversionStuckError, run_invert

    cfg = load_config(args.config, args.overrides)
    try:
        s = run_invert(cfg)
    except InversionStuckError as exc:
        print(f"stylepath: error: {exc}", file=sys.stderr)
        return EXIT_CRASH
    enc = f"encoder trained in {s.encoder_seconds:.0f} s; " if s.encoder_trained else ""
    rate = f"{s.tiles_per_s:.1f} tiles/s in the actor pool" if s.n_inverted else "nothing new"
    print(
        f"inverted {s.n_inverted} tiles ({s.n_skipped} already done"
        + (f", {s.n_rescored} scored by the new classifier" if s.n_rescored else "")
        + f") of {s.n_selected} in "
        f"{s.seconds:.1f} s ({enc}{rate}); "
        f"median SSIM {s.median_ssim:.3f}, median |prob_real - prob_recon| "
        f"{s.median_prob_diff:.3f}; {s.n_failed} failed"
    )
    out = cfg.workdir / "inversion"
    print(f"-> {out / 'inversion.parquet'}, {out / 'latents.zarr'}, {out / 'examples.png'}")
    return EXIT_PARTIAL if s.n_failed else EXIT_OK


# Commands that take only the config (and --set): name, help, handler.
ConfigCommand = tuple[str, str, Callable[[argparse.Namespace], int]]
CONFIG_COMMANDS: list[ConfigCommand] = [
    ("tile", "tile the cohort's slides into zarr + tiles.parquet", cmd_tile),
    ("train-classifier", "train the built-in tile classifier (Ray Train)", cmd_train_classifier),
    ("predict", "score every tile with the classifier, with heatmaps", cmd_predict),
    ("analyze", "directions, latent shifts, feature effects, bias", cmd_analyze),
    ("report", "the HTML report of an analysed workdir", cmd_report),
    ("train-encoder", "train (or find cached) the inversion encoder", cmd_train_encoder),
    ("invert", "invert tiles into the generator's latent space", cmd_invert),
]


def _add_gan_commands(sub: argparse._SubParsersAction) -> None:
    """train-gan, export-gan and gan-quality."""
    p = sub.add_parser("train-gan", help="train (or resume) the StyleGAN2 on the tiles")
    _add_config_args(p)
    p.add_argument(
        "--local",
        action="store_true",
        help="train in this process without Ray (one GPU with gan.use_gpu, or CPU)",
    )
    p.set_defaults(func=cmd_train_gan)

    p = sub.add_parser("export-gan", help="export G_ema or G (+ D) from a checkpoint")
    _add_config_args(p)
    p.add_argument("out", type=Path, help="output folder, e.g. models/demo_tiny64")
    p.add_argument("--half", action="store_true", help="float16 weights (half the bytes)")
    p.add_argument(
        "--best",
        action="store_true",
        help="the best snapshot (workdir/gan/best: nuclear bar, then SWD)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="checkpoint folder (default: the run's latest)",
    )
    p.add_argument(
        "--net",
        choices=["G_ema", "G"],
        default="G_ema",
        help="G_ema (default) or the raw generator G",
    )
    p.set_defaults(func=cmd_export_gan)

    p = sub.add_parser("gan-quality", help="measure the trained generator against the tiles")
    _add_config_args(p)
    p.add_argument("--n", type=int, default=512, help="tiles and samples compared")
    p.add_argument("--generator", type=Path, default=None, help="folder (default workdir/gan)")
    p.set_defaults(func=cmd_gan_quality)


def _add_slides_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--slides",
        type=int,
        default=None,
        help="slides (default 16) or, for radiology, images (default 240)",
    )


def _add_make_cohort(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-cohort", help="write a synthetic cohort (H&E slides or CT images)")
    p.add_argument("out", type=Path, help="output folder (slides or images + cohort.csv)")
    p.add_argument(
        "--modality",
        choices=["histology", "radiology"],
        default="histology",
        help="histology: H&E whole slides; radiology: abdominal CT slices",
    )
    _add_slides_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size-um", type=float, default=2048.0, help="slide side in µm")
    p.add_argument("--mpp", type=float, default=0.5, help="level-0 µm/px of the slides")
    p.add_argument("--tumor-fraction", type=float, default=0.5)
    p.add_argument("--confound", type=float, default=0.75, help="share of tumor slides at A")
    p.add_argument(
        "--renderer",
        choices=["he", "cells"],
        default="he",
        help="he: the demo's planted nuclei; cells: epithelium with planted eosin",
    )
    p.add_argument(
        "--ink-share",
        type=float,
        default=0.0,
        help="share of slides with green pen marks (a shortcut no generator saw)",
    )
    p.set_defaults(func=cmd_make_cohort)


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    """run (the whole job) and demo (the demo cohort, then run)."""
    from tasks.run import STAGES

    p = sub.add_parser("run", help="the whole job; unchanged stages are skipped")
    _add_config_args(p)
    p.add_argument("--force", choices=STAGES, help="re-run this stage and all after it")
    p.add_argument("--until", choices=STAGES, help="stop after this stage")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="make the demo cohort and run the pipeline on it")
    p.add_argument("config", type=Path, nargs="?", default=Path("configs/demo.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    _add_slides_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-gan",
        action="store_true",
        help="train the generator from scratch instead of the shipped one",
    )
    p.add_argument("--until", choices=STAGES, help="stop after this stage")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylepath", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text, handler in CONFIG_COMMANDS:
        p = sub.add_parser(name, help=text)
        _add_config_args(p)
        p.set_defaults(func=handler)
    _add_gan_commands(sub)
    _add_run_commands(sub)
    _add_make_cohort(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (ConfigError, CohortError, ValueError, WorkdirBusyError, FileNotFoundError) as exc:
        # ValueError covers every input error of a stage (no tiles, bad checkpoint, …).
        print(f"stylepath: error: {exc}", file=sys.stderr)
        return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
