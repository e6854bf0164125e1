"""Drift: Evidently reports of outputs and inputs (`analysis`, `evidently_report`), embeddings and their
cache (`embeddings`), stored results (`entities`). Imports Evidently only inside the functions that run it."""
