"""Generative recommendation on (H)RQ-VAE multitokens (HRQ paper §4.2, Tables 2-4)."""

from hrq.recsys.protocol import TRUNCATIONS, Examples, LeaveOneOut, filter_and_truncate, leave_one_out

__all__ = ["TRUNCATIONS", "Examples", "LeaveOneOut", "filter_and_truncate", "leave_one_out"]
