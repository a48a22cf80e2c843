"""`splip-engine bench`: the benchmark tables (encoders, search, embedding job, end to end)."""
from __future__ import annotations

import click


@click.command("bench")
@click.option("--quick", is_flag=True, help="The < 5 minute subset (sketch tower, batch 1/16, galleries to 100k).")
@click.option("--gpu", is_flag=True,
              help="The CUDA table: eager torch fp32 and the torch engine's CUDA variants (fp16/bf16, CUDA graphs, "
                   "torch.compile, Triton attention; ONNX Runtime CUDA when installed). Needs a CUDA GPU.")
@click.option("--cpu", "cpu_engines", is_flag=True,
              help="The CPU engine table at batch 1/16/64: torch, ONNX Runtime fp32 / int8 dynamic / int8 static, "
                   "OpenVINO f32 / bf16 / int8, what `auto` picks here, and the peers (our ONNX in OpenVINO with no "
                   "settings, NNCF int8 as OpenVINO's docs show); the embedding job with ORT fp32 and with auto.")
@click.option("--engines", default=None, metavar="NAMES",
              help="Comma-separated subset of the table's encoder rows (e.g. --cpu --engines "
                   "torch_fp32,ort_fp32,auto); fewer engines in one process: less memory and machine noise.")
@click.option("--rounds", default=None, type=click.IntRange(min=1),
              help="Timed rounds per engine at batch > 1 (batch 1: 4x as many); default: the table's.")
@click.option("--out", default="bench_results", show_default=True, type=click.Path(),
              help="Directory for results.json and results.md.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="Threads for every engine.")
@click.option("--clip-model", default="ViT-B-32", show_default=True, help="Encoder to measure (random weights).")
def command(quick, gpu, cpu_engines, engines, rounds, out, threads, clip_model):
    """Measure encoder throughput / latency per backend and batch (ratios vs PyTorch eager fp32 from
    the same run), search latency and recall vs gallery size, the embedding job with decoding and
    end-to-end query latency; print the tables and write them as JSON and Markdown.

    \b
    Example:
      splip-engine bench --quick
      splip-engine bench --out benchmarks/results --threads 2
      splip-engine bench --cpu --out cpu_results       # every CPU engine side by side (up to 22 GiB of memory)
      splip-engine bench --cpu --engines openvino_user_default,auto --rounds 12   # ours vs OpenVINO as-is
      splip-engine bench --gpu --out gpu_results     # on a CUDA machine (device-resident: benchmarks/gpu_suite.py)
    """
    import dataclasses

    from splip_engine.bench import BenchConfig, render_markdown, run_bench
    from splip_engine.errors import SpLIPError

    if quick + gpu + cpu_engines > 1:
        raise SpLIPError("--quick, --gpu and --cpu are different tables: pass one")
    if gpu:
        import torch

        if not torch.cuda.is_available():
            raise SpLIPError("--gpu needs a CUDA GPU and none is visible; run `splip-engine bench --quick` on CPU")
    presets = {"gpu": gpu, "quick": quick, "cpu": cpu_engines}
    cfg = next((getattr(BenchConfig, name)() for name, chosen in presets.items() if chosen), BenchConfig())
    cfg = dataclasses.replace(cfg, threads=threads, clip_model=clip_model)
    if engines:
        unknown = sorted(set(engines.split(",")) - set(cfg.engines))
        if unknown:
            raise SpLIPError(f"--engines {','.join(unknown)}: not rows of this table; "
                             f"choose from {','.join(cfg.engines)}")
        cfg = dataclasses.replace(cfg, engines=tuple(e for e in cfg.engines if e in engines.split(",")))
    if rounds:
        cfg = dataclasses.replace(cfg, rounds=rounds, latency_rounds=4 * rounds)
    results = run_bench(cfg, out)
    click.echo(render_markdown(results))
    click.echo(f"wrote {out}/results.json and {out}/results.md")
