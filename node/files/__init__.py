"""Attachments (pure): chunking, per-chunk encryption, the file reference, safe names."""
