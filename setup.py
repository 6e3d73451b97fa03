"""The one thing pyproject.toml cannot declare: the runtime's C kernels (``runtime/_kernels_c.c``).

Optional: where no C compiler is found the install goes on without them and the runtime takes its numpy path
(the same bits, slower; ``runtime/kernels.py``). ``-ffp-contract=off`` keeps every float32 operation rounded
on its own, as numpy rounds it (a fused multiply-add would change the bits)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "runtime._kernels_c",
            sources=["runtime/_kernels_c.c"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math", "-std=c11"],
            optional=True,
        )
    ]
)
