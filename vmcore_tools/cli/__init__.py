"""Layer 9, the commands: the ``vmcore-tools`` command line and the drgn plugin."""
