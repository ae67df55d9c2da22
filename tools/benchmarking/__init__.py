"""The code behind tools/benchmark.py and tools/reference_benchmark.py, split by job.

timing      clocks, step intervals and their statistics (no framework imported)
memory      process RSS and TensorFlow's allocator statistics
models      the benchmarked Keras models, their synthetic batches and step timers
sections    the benchmark's sections: training (fit and a bare loop), pipeline, serving, profile
op_profile  TensorFlow's op profile of training steps, by category
report      machine information, the ratios and the printed tables
reference   the paired comparison with the official PyTorch code (parent side)
reference_workers  the worker processes of that comparison
"""
