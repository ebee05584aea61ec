"""Argument types shared by the CLI's commands: a bad value is a usage error (exit 2)."""

import argparse


def int_range(lo: int, hi: int):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer from {lo} to {hi}") from None
        if not lo <= number <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer from {lo} to {hi}")
        return number

    return parse
