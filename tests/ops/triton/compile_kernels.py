"""Compiles every Triton kernel of mft_engine.ops.triton for real NVIDIA targets (through PTX to a cubin
with the ptxas triton ships), without a GPU, and prints one JSON line per compiled variant:
{"kernel", "constexprs", "target", "fusion", "fma", "ftz", "cubin"}: fma counts float32 fused
multiply-adds in the PTX, ftz flush-to-zero instructions, cubin the size of the binary.

Run as a script in a process WITHOUT TRITON_INTERPRET (test_compile.py does): under the interpreter the
kernels are not compiled at all. Argument types are the ones the launch sites pass.
"""
from __future__ import annotations

import json
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mft_engine.ops.triton import accumulate, detrimental_count, detrimental_score, select_topk, zero_masked

TABLE = {"table": "*i64", "tiles": "*i64", "lr": "fp32"}
C = "constexpr"
VARIANTS = [
    # (kernel, signature, constexprs)
    (accumulate.accumulate_kernel,
     {"g_sum": "*fp32", "sq_sum": "*fp32", "pos_count": "*i32", "neg_count": "*i32", "grad": "*bf16", "n": "i32", "BLOCK": C},
     {"BLOCK": 1024}),
    (detrimental_score.score_kernel,
     {"theta": "*fp32", "grad": "*fp16", "out": "*fp64", "bad": "*i32", "n": "i32", "lr": "fp32", "SHRINK": C, "LITERAL": C, "BLOCK": C},
     {"SHRINK": True, "LITERAL": True, "BLOCK": 1024}),
    (detrimental_score.score_kernel,
     {"theta": "*bf16", "grad": "*fp32", "out": "*fp64", "bad": "*i32", "n": "i32", "lr": "fp32", "SHRINK": C, "LITERAL": C, "BLOCK": C},
     {"SHRINK": False, "LITERAL": False, "BLOCK": 1024}),
    (detrimental_count.count_kernel,
     dict(**TABLE, counts="*i32", bad="*i32", LITERAL=C, BLOCK=C, STEPS=C),
     {"LITERAL": True, "BLOCK": 1024, "STEPS": 8}),
    (select_topk.hist_kernel,
     dict(**TABLE, state="*i64", shift="i32", hist="*i32", bad="*i32", SHRINK=C, LITERAL=C, BLOCK=C, STEPS=C,
          RADIX=C),
     {"SHRINK": True, "LITERAL": False, "BLOCK": 1024, "STEPS": 8, "RADIX": 256}),
    (select_topk.choose_kernel, {"hist_sum": "*i64", "state": "*i64", "shift": "i32", "RADIX": C}, {"RADIX": 256}),
    (select_topk.count_kernel,
     dict(**TABLE, state="*i64", n_gt="*i64", n_eq="*i64", SHRINK=C, LITERAL=C, BLOCK=C, STEPS=C),
     {"SHRINK": False, "LITERAL": True, "BLOCK": 1024, "STEPS": 8}),
    (select_topk.write_kernel,
     dict(**TABLE, state="*i64", gt_before="*i64", eq_before="*i64", indices="*i64", values="*i16", SHRINK=C,
          LITERAL=C, ZERO=C, THETA_BYTES=C, BLOCK=C, STEPS=C),
     {"SHRINK": True, "LITERAL": True, "ZERO": True, "THETA_BYTES": 2, "BLOCK": 1024, "STEPS": 8}),
    (select_topk.write_kernel,
     dict(**TABLE, state="*i64", gt_before="*i64", eq_before="*i64", indices="*i64", values="*i32", SHRINK=C,
          LITERAL=C, ZERO=C, THETA_BYTES=C, BLOCK=C, STEPS=C),
     {"SHRINK": False, "LITERAL": False, "ZERO": True, "THETA_BYTES": 4, "BLOCK": 1024, "STEPS": 8}),
    (zero_masked.scatter_kernel,
     {"addrs": "*i64", "offsets": "*i64", "n_params": "i32", "indices": "*i64", "values": "*i32", "n": "i32", "RESTORE": C,
          "ELEM_BYTES": C, "SEARCH_STEPS": C, "BLOCK": C},
     {"RESTORE": False, "ELEM_BYTES": 4, "SEARCH_STEPS": 8, "BLOCK": 1024}),
    (zero_masked.scatter_kernel,
     {"addrs": "*i64", "offsets": "*i64", "n_params": "i32", "indices": "*i64", "values": "*i16", "n": "i32", "RESTORE": C,
          "ELEM_BYTES": C, "SEARCH_STEPS": C, "BLOCK": C},
     {"RESTORE": True, "ELEM_BYTES": 2, "SEARCH_STEPS": 3, "BLOCK": 1024}),
]


def main() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("run without TRITON_INTERPRET: the interpreter compiles nothing")
    capabilities = [int(x) for x in sys.argv[1:]] or [90]
    for cap in capabilities:
        for fusion in (False, True):
            for fn, signature, constexprs in VARIANTS:
                compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                          target=GPUTarget("cuda", cap, 32), options={"enable_fp_fusion": fusion})
                ptx = compiled.asm["ptx"]
                print(json.dumps({"kernel": fn.__name__, "constexprs": constexprs, "target": cap, "fusion": fusion,
                                  "fma": ptx.count("fma.rn.f32"), "ftz": ptx.count(".ftz"), "cubin": len(compiled.asm["cubin"])}), flush=True)


if __name__ == "__main__":
    main()
