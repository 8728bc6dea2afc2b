"""projctl: manage projects from the terminal and CI, with a live feed of every change."""

__version__ = "0.1.0"
