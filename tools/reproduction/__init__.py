"""The code behind tools/reproduce.py: the paper's comparisons on Fashion-MNIST, and
the mobile study.

protocol  the runs, their flags, the convergence check, the claims, the tables' layout, labels
          and plots (data)
runner    trains the missing runs, each one the training command, side by side
runs      the runs' model directories and the timing file, as read from disk
verdicts  final errors, gains paired by seed, verdicts
report    docs/RESULTS.md (markdown)
plots     the report's PNG plots
mobile    the mobile study's runs, flags and comparisons (data)
mobile_report  its section of docs/RESULTS.md
"""
