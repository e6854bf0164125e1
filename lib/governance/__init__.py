"""Deciding: locked policies (`policy`), the gate and its verdict (`gate`), signing keys and owners
(`signing`), evidence digests (`evidence`), signed decisions (`decisions`), verification (`verify`), change
records (`export`) and their entities (`entities`)."""
