from setuptools import setup

# One import name for everything: the top-level folders kernels/, ops/, models/ and bench/
# are installed as tritonprop.kernels, tritonprop.ops, ... so that generic names such as
# "ops" never land in site-packages (see docs/ and ../shared/DESIGN.md).
setup(
    name="tritonprop",
    version="0.1.0",
    description="Hand-written Triton kernels, with their backward passes, for the classic deep-learning layers",
    python_requires=">=3.10",
    packages=[
        "tritonprop",
        "tritonprop.integrations",
        "tritonprop.kernels",
        "tritonprop.ops",
        "tritonprop.ops.reference",
        "tritonprop.models",
        "tritonprop.bench",
    ],
    package_dir={
        "tritonprop": "tritonprop",
        "tritonprop.kernels": "kernels",
        "tritonprop.ops": "ops",
        "tritonprop.ops.reference": "ops/reference",
        "tritonprop.models": "models",
        "tritonprop.bench": "bench",
    },
    package_data={"tritonprop.bench": ["device_check.sh"]},
    install_requires=["torch>=2.5", "triton>=3.3", "numpy"],
    # The demo models' data (8x8 digits, 5,000 MNIST digits, surnames) and tools (progress bar,
    # pictures); `tritonprop train` names the missing package when one is absent.
    extras_require={"demo": ["scikit-learn>=1.0", "mlxtend", "faker", "tqdm", "matplotlib"]},
    entry_points={"console_scripts": ["tritonprop = tritonprop.cli:main"]},
)
