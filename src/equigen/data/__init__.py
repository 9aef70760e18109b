"""Captioned image datasets: one format (images + metadata.jsonl), one loader, one validator."""

from equigen.data.captioned import (
    METADATA_NAME,
    CaptionRecord,
    load_records,
    resolve_in_root,
    write_records,
)

__all__ = ["METADATA_NAME", "CaptionRecord", "load_records", "resolve_in_root", "write_records"]
