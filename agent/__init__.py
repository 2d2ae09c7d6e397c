"""The application shell: settings, CLI, model factory, logging, checkpointers.

It wires the tool layer (`tools/`) and the graphs (`graphs/`) together for one process.
"""
