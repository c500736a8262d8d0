"""Builds the one C++ extension, mft_engine._C, from csrc/ (torch-free kernels) and bindings/.

No -march=native: the wheel must run on every x86-64 this project meets (AVX2-only AMD, AVX-512 Intel).
Wider paths are compiled per function with target attributes and chosen at run time (csrc/cpu_path.cpp).
-ffp-contract=off keeps the fp32 `--literal` arithmetic identical to PyTorch's eager two-op formulation.
"""
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

debug = os.environ.get("MFT_DEBUG", "0") == "1"
opt = ["-O0", "-g"] if debug else ["-O3"]

sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("bindings/*.cpp"))

setup(
    ext_modules=[
        CppExtension(
            name="mft_engine._C",
            sources=sources,
            include_dirs=[os.path.abspath("csrc/include"), os.path.abspath("csrc")],
            extra_compile_args=opt + ["-std=c++17", "-fopenmp", "-ffp-contract=off", "-Wall"],
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
