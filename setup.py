"""Packaging for keras_ffl: Feature Fusion Learning in Keras 3 on TensorFlow."""

from setuptools import find_packages, setup

# tools/export.py --litert runs LiteRT models with Google's interpreter; 2.3 runs what
# TensorFlow 2.21's converter writes.
LITERT = ["ai-edge-litert>=2.3,<3"]

setup(
    name="keras_ffl",
    version="0.1.0",
    description=(
        "Feature Fusion Learning (online mutual knowledge distillation) "
        "for Keras 3 on TensorFlow"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["keras_ffl", "keras_ffl.*"]),
    install_requires=[
        "tensorflow>=2.18,<2.22",
        "keras>=3.8,<3.16",
        "tensorflow-datasets>=4.9,<4.10",
        # TFDS 4.9 imports importlib_resources without declaring it.
        "importlib_resources>=6,<8",
        "numpy>=1.26,<2.5",
        "absl-py>=2.1,<3",
        # The training command writes TensorBoard logs.
        "tensorboard>=2.18,<2.22",
    ],
    extras_require={
        # tools/reproduce.py, tools/gradcam.py and tools/report.py draw with matplotlib.
        "plot": ["matplotlib>=3.8,<4"],
        "litert": LITERT,
        # pytest-xdist: the suite runs on two processes (pytest.ini), one per core.
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "matplotlib>=3.8,<4",
            *LITERT,
        ],
    },
    license="Apache-2.0",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
